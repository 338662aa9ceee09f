"""Compare: two models on the same prompt — shared colour scales, curves on relative depth, Δ, EDR table —
or, in the "benchmark items" mode, over the items both were swept on (aggregate curves with bootstrap bands)."""

import streamlit as st

from effdepth import app, charts, ui
from effdepth.ui import sweep as ui_sweep

ui.page_setup("Compare")
view = ui.state()
run_store = ui.store()

# Run ids in the URL win: the inputs then describe those runs.
results = {"a": None, "b": None}
if run_store is not None and view.cmp_mode == "prompt":
    with ui.guard():
        for which, run_id in (("a", view.run), ("b", view.run_b)):
            results[which] = app.get_run(run_store, run_id)
            if results[which] is not None:
                app.adopt_meta(view, results[which].meta, which)

ui.nav(view, "compare")
with st.sidebar:
    if view.cmp_mode == "prompt":
        st.markdown("#### Prompt (shared)")
        ui.prompt_input(view, st.sidebar)
        st.divider()
    ui.demo_toggle(view)

st.title("Compare two models")
ui.bind(st.radio, "cmp_mode", "Compare on", options=["prompt", "items"], horizontal=True,
        format_func={"prompt": "one prompt", "items": "benchmark items (aggregate over a sweep)"}.get)
if view.cmp_mode == "items":
    ui_sweep.compare_items(view, run_store)
    st.stop()
col_a, col_b = st.columns(2, gap="large")
with col_a:
    ui.model_input(view, col_a, "a", "Model A")
with col_b:
    ui.model_input(view, col_b, "b", "Model B")
ui.sync_url(view)
if run_store is None:
    st.stop()

computed = st.session_state.setdefault("_computed", {})
specs = {"a": (view.model, view.dtype, col_a), "b": (view.model_b, view.dtype_b, col_b)}
for which, (name, dtype, column) in specs.items():
    with column, ui.guard():
        if results[which] is None:
            app.check_prompt(view.prompt)
            _, results[which] = app.find_cached(run_store, name, view.prompt, dtype, view.chat)
        if results[which] is not None:
            meta = results[which].meta
            st.caption(f"run `{meta['run_id']}` · L = {meta['n_layers']} · T = {meta['n_tokens']} · "
                       f"{meta['dtype']}" + (" · computed now" if meta["run_id"] in computed else " · cached"))
        elif view.demo:
            st.warning(f"**Not cached**: {app.md(name)} ({dtype}) on this prompt. Demo mode loads no model.",
                       icon=":material/block:")
        else:
            app.preflight(name)
            ui.stopped_notice(name, view.prompt, dtype, view.chat)
            st.info(f"{app.md(name)} ({dtype}) on this prompt is not in the cache yet.",
                    icon=":material/hourglass_top:")
            if st.button(f"Compute {which.upper()}", key=f"compute_{which}", type="primary",
                         icon=":material/play_arrow:"):
                results[which] = ui.compute(run_store, name, view.prompt, dtype, view.chat,
                                            label=f"Model {which.upper()}")
                computed[results[which].run_id] = True

a, b = results["a"], results["b"]
if a is not None:
    view.run = a.run_id
if b is not None:
    view.run_b = b.run_id
ui.sync_url(view)
if a is None or b is None:
    st.stop()

label_a, label_b = app.pair_labels(a.meta, b.meta)
if a.meta.get("prompt_text") != b.meta.get("prompt_text"):
    st.warning("The two runs are on **different prompts**; the comparison shows them side by side anyway.",
               icon=":material/warning:")

# ------------------------------------------------------------------------------------------- EDR
st.subheader("Effective depth")
st.dataframe(app.compare_ed_table([(label_a, a.tables["ed"]), (label_b, b.tables["ed"])]),
             hide_index=True, width="stretch")
st.caption(f"Each cell: ED (EDR), EDR = (ED + 1) / L with L = {a.meta['n_layers']} for {app.md(label_a)} and "
           f"{b.meta['n_layers']} for {app.md(label_b)}. P1 = the paper's rule; "
           "guarded = effdepth's guarded variant; "
           "skip uses effdepth's proposed rule; “none” = no transition.")

# ------------------------------------------------------------------------------------------ curves
st.subheader("Per-layer curves on relative depth")
probes = [p for p in app.CURVE_METRICS
          if len(charts.probe_curve_frame(a.tables["layer"], p))
          and len(charts.probe_curve_frame(b.tables["layer"], p))]
for start in range(0, len(probes), 2):
    row = st.columns(2, gap="medium")
    for column, probe in zip(row, probes[start:start + 2]):
        with column:
            chart = charts.compare_curves([(label_a, a.tables["layer"], a.tables["ed"]),
                                           (label_b, b.tables["layer"], b.tables["ed"])], probe)
            ui.chart(chart, f"compare_{probe}", f"cmp_curve_{probe}")
st.caption("x = layer / L so that models of different depth line up; each model's ED (P1 rule; skip: proposed) "
           "is the rule in its colour, at ED / L.")

# ---------------------------------------------------------------------------------------- heatmaps
st.subheader("Layer × token, same colour scale")
options = app.compare_metrics(a, b)
if view.cmp_metric not in options:
    view.cmp_metric = options[0]
ui.bind(st.selectbox, "cmp_metric", "Quantity", options=options, format_func=lambda m: charts.METRICS[m][0])
metric = view.cmp_metric
domain = charts.shared_domain(metric, a.tables["layer_token"], b.tables["layer_token"])
heat_a, heat_b = st.columns(2, gap="medium")
with heat_a:
    ui.chart(charts.layer_token_heatmap(a.tables["layer_token"], a.tables["tokens"], metric, a.tables["ed"],
                                        domain=domain, title=f"{label_a}: {charts.METRICS[metric][0]}",
                                        select=False, max_labels=24), f"{label_a}_{metric}", "cmp_heat_a")
with heat_b:
    ui.chart(charts.layer_token_heatmap(b.tables["layer_token"], b.tables["tokens"], metric, b.tables["ed"],
                                        domain=domain, title=f"{label_b}: {charts.METRICS[metric][0]}",
                                        select=False, max_labels=24), f"{label_b}_{metric}", "cmp_heat_b")
st.caption(f"Both heatmaps use one colour domain: {app.domain_text(metric, domain)}.")

mismatch = app.grid_mismatch(a, b)
if mismatch is None:
    st.subheader(f"Δ = {app.md(label_b)} − {app.md(label_a)}")
    ui.chart(charts.delta_heatmap(a.tables["layer_token"], b.tables["layer_token"], a.tables["tokens"], metric,
                                  (label_a, label_b)), f"delta_{metric}", "cmp_delta")
    st.caption("Diverging scale centred at 0, symmetric around it (clipped at the 98th percentile of |Δ| for "
               "unbounded quantities).")
else:
    st.info(f"No Δ heatmap: {mismatch}, so their cells do not correspond one to one.", icon=":material/info:")
ui.sync_url(view)
