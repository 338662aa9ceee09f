"""Compare: two models on the same prompt — shared colour scales, curves on relative depth, Δ, EDR table —
or, in the "benchmark items" mode, over the items both were swept on (aggregate curves with bootstrap bands)."""

import streamlit as st

from effdepth import app, charts, ui
from effdepth.ui import sweep as ui_sweep


def _url_runs(view, run_store) -> dict:
    """Reads the runs named by the URL (they win: the inputs then describe those runs); draws only its errors."""
    results = {"a": None, "b": None}
    if run_store is not None and view.cmp_mode == "prompt":
        with ui.guard():
            for which, run_id in (("a", view.run), ("b", view.run_b)):
                results[which] = app.get_run(run_store, run_id)
                if results[which] is not None:
                    app.adopt_meta(view, results[which].meta, which)
    return results


def _sidebar(view) -> None:
    """Draws the navigation, the shared prompt (in the prompt mode) and the demo toggle."""
    ui.nav(view, "compare")
    with st.sidebar:
        if view.cmp_mode == "prompt":
            st.markdown("#### Prompt (shared)")
            ui.prompt_input(view, st.sidebar)
            ui.bind(st.select_slider, "generate", "Model A continues the prompt first (new tokens)",
                    options=list(app.GENERATE_CHOICES), clears_run=True, clears_run_b=True,
                    format_func=lambda n: "no" if n == 0 else str(n),
                    help="A thinks, both read: model A writes this many tokens after the prompt (greedy), then "
                         "both models are probed on the prompt followed by A's continuation.")
            ui.positions_input(st.sidebar, both=True)
            st.divider()
        ui.demo_toggle(view)


def _mode_picker(view) -> None:
    """Draws the choice between one prompt and benchmark items."""
    ui.bind(st.radio, "cmp_mode", "Compare on", options=["prompt", "items"], horizontal=True,
            format_func={"prompt": "one prompt", "items": "benchmark items (aggregate over a sweep)"}.get)


def _model_inputs(view) -> tuple:
    """Draws the inputs of model A and model B side by side; returns their two columns."""
    col_a, col_b = st.columns(2, gap="large")
    with col_a:
        ui.model_input(view, col_a, "a", "Model A")
    with col_b:
        ui.model_input(view, col_b, "b", "Model B")
    return col_a, col_b


def _model_run(view, run_store, which: str, name: str, dtype: str, results: dict, computed: dict,
               generation) -> None:
    """Looks one model's run up (into ``results``) and draws its caption, or the offer to compute it.
    With a continuation asked for, both read the prompt + model A's continuation (``generation``)."""
    text, chat = (generation.full_text, False) if generation is not None else (view.prompt, view.chat)
    if results[which] is None and not (view.generate and generation is None):
        app.check_prompt(text)
        _, results[which] = app.find_cached(run_store, name, text, dtype, chat, positions=view.positions)
    if results[which] is not None:
        meta = results[which].meta
        st.caption(f"run `{meta['run_id']}` · L = {meta['n_layers']} · T = {meta['n_tokens']} · "
                   f"{meta['dtype']}" + (" · computed now" if meta["run_id"] in computed else " · cached"))
    elif view.demo:
        st.warning(f"**Not cached**: {app.md(name)} ({dtype}) on this prompt. Demo mode loads no model.",
                   icon=":material/block:")
    elif view.generate and generation is None and which == "b":
        st.info("Model B reads model A's continuation: continue with model A first.", icon=":material/hourglass_top:")
    else:
        _offer_compute(view, run_store, which, name, dtype, results, computed, generation)


def _offer_compute(view, run_store, which: str, name: str, dtype: str, results: dict, computed: dict,
                   generation) -> None:
    """Draws the not-cached notice and the button that computes this model's run (model A writing first)."""
    app.preflight(name)
    ui.stopped_notice(name, view.prompt, dtype, view.chat)
    writes = view.generate and generation is None  # only model A gets here without the continuation
    notice, button = st.empty(), st.empty()
    notice.info(f"{app.md(name)} ({dtype}) on this " + ("prompt + continuation" if view.generate else "prompt")
                + " is not in the cache yet.", icon=":material/hourglass_top:")
    label = f"Continue with {which.upper()}, then compute it" if writes else f"Compute {which.upper()}"
    config = app.config_for(positions=view.positions)
    if not button.button(label, key=f"compute_{which}", type="primary", icon=":material/play_arrow:"):
        return
    notice.empty()
    button.empty()
    if writes:
        results[which] = ui.continue_and_compute(run_store, name, view.prompt, dtype, view.chat, view.generate,
                                                 seed=view.sample_seed or None, temperature=view.temperature,
                                                 positions=view.positions)
        computed[results[which].run_id] = True
        st.rerun()  # model B's offer now reads the continuation
    elif generation is not None:
        extra = generation.run_meta() if which == "a" else app.reader_meta(generation, view.model, name)
        results[which] = ui.compute(run_store, name, generation.full_text, dtype, False,
                                    label=f"Model {which.upper()}", extra_meta=extra, config=config)
    else:
        results[which] = ui.compute(run_store, name, view.prompt, dtype, view.chat, label=f"Model {which.upper()}",
                                    config=config)
    computed[results[which].run_id] = True


def _find_or_compute(view, run_store, results: dict, columns: tuple) -> tuple:
    """Draws each model's run status under its input; returns the two runs (None where there is none yet)."""
    computed = st.session_state.setdefault("_computed", {})
    col_a, col_b = columns
    specs = {"a": (view.model, view.dtype, col_a), "b": (view.model_b, view.dtype_b, col_b)}
    generation = _continuation(view, run_store)
    for which, (name, dtype, column) in specs.items():
        with column, ui.guard():
            _model_run(view, run_store, which, name, dtype, results, computed, generation)
    a, b = results["a"], results["b"]
    if a is not None:
        view.run = a.run_id
    if b is not None:
        view.run_b = b.run_id
    return a, b


def _continuation(view, run_store):
    """Model A's stored continuation of the prompt, when one is asked for (drawn as text above the runs)."""
    if not view.generate or run_store is None:
        return None
    with ui.guard():
        generation = app.cached_generation(run_store, view.model, view.prompt, view.dtype, view.chat, view.generate,
                                           seed=view.sample_seed or None, temperature=view.temperature)
        if generation is not None:
            how = f"sampled, seed {view.sample_seed}" if view.sample_seed else "greedy"
            st.caption(f"Both models read the prompt followed by what **{app.md(view.model)}** wrote "
                       f"({generation.n_new_tokens} tokens, {how}):")
            st.code(generation.text, language=None, wrap_lines=True)  # the model's own text, shown as text
        return generation
    return None


def _pair_labels(a, b) -> tuple[str, str]:
    """Warns when the two runs are on different prompts; returns the two models' labels."""
    label_a, label_b = app.pair_labels(a.meta, b.meta)
    if a.meta.get("prompt_text") != b.meta.get("prompt_text"):
        st.warning("The two runs are on **different prompts**; the comparison shows them side by side anyway.",
                   icon=":material/warning:")
    return label_a, label_b


def _ed_table(a, b, label_a: str, label_b: str) -> None:
    """Draws the ED (EDR) table of both runs."""
    st.subheader("Effective depth")
    st.dataframe(app.compare_ed_table([(label_a, a.tables["ed"]), (label_b, b.tables["ed"])]),
                 hide_index=True, width="stretch")
    st.caption(f"Each cell: ED (EDR), EDR = (ED + 1) / L with L = {a.meta['n_layers']} for {app.md(label_a)} and "
               f"{b.meta['n_layers']} for {app.md(label_b)}. P1 = the paper's rule; "
               "guarded = effdepth's guarded variant; "
               "skip uses effdepth's proposed rule; “none” = no transition.")


def _curves(a, b, label_a: str, label_b: str) -> None:
    """Draws both runs' per-layer curves on relative depth, two probes to a row."""
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


def _heatmaps(view, a, b, label_a: str, label_b: str) -> str:
    """Draws the quantity picker and both layer × token heatmaps on one colour scale; returns the quantity."""
    st.subheader("Layer × token, same colour scale")
    options = app.compare_metrics(a, b)
    if view.cmp_metric not in options:
        view.cmp_metric = options[0]
    ui.bind(st.selectbox, "cmp_metric", "Quantity", options=options, format_func=lambda m: charts.METRICS[m][0])
    metric = view.cmp_metric
    domain = charts.shared_domain(metric, a.tables["layer_token"], b.tables["layer_token"])
    heat_a, heat_b = st.columns(2, gap="medium")
    shown = {}
    for column, run, label, key in ((heat_a, a, label_a, "cmp_heat_a"), (heat_b, b, label_b, "cmp_heat_b")):
        window = app.heatmap_window(run.meta, run.tables, view.win)  # a long trace: the last window
        shown[key] = window
        cut = app.window_tables(run.tables, window)
        with column:
            ui.chart(charts.layer_token_heatmap(cut["layer_token"], cut["tokens"], metric, run.tables["ed"],
                                                domain=domain, title=f"{label}: {charts.METRICS[metric][0]}",
                                                select=False, max_labels=24,
                                                boundary=app.continuation_start(run.meta)),
                     f"{label}_{metric}", key)
    st.caption(f"Both heatmaps use one colour domain: {app.domain_text(metric, domain)}."
               + ("" if not any(shown.values()) else " A long trace: each heatmap draws its last "
                  f"{app.window_width(int(a.meta['n_layers']))} measured positions (Explore moves the window)."))
    return metric


def _delta(view, a, b, label_a: str, label_b: str, metric: str) -> None:
    """Draws the Δ heatmap B − A, or says why the two grids do not correspond."""
    mismatch = app.grid_mismatch(a, b)
    if mismatch is None:
        st.subheader(f"Δ = {app.md(label_b)} − {app.md(label_a)}")
        window = app.heatmap_window(a.meta, a.tables, view.win)
        cut_a, cut_b = app.window_tables(a.tables, window), app.window_tables(b.tables, window)
        ui.chart(charts.delta_heatmap(cut_a["layer_token"], cut_b["layer_token"], cut_a["tokens"], metric,
                                      (label_a, label_b)), f"delta_{metric}", "cmp_delta")
        st.caption("Diverging scale centred at 0, symmetric around it (clipped at the 98th percentile of |Δ| for "
                   "unbounded quantities).")
    else:
        st.info(f"No Δ heatmap: {mismatch}, so their cells do not correspond one to one.", icon=":material/info:")


def _linear_maps(view, run_store) -> None:
    """Draws the stored linear maps between the two models (P2 §10), or the command that fits them."""
    st.subheader("Linear maps from one model's residuals to the other's")
    with ui.guard():
        found = app.maps_of_pair(run_store, view.model, view.model_b) if view.model != view.model_b else []
        if not found:
            st.caption("For every depth s of the source, a ridge map from h_s to every residual h_j of the target, "
                       "fitted on the shipped text and scored on its held-out part (P2 §10; both models need the "
                       "same tokenizer). None is stored for this pair; fit one with:")
            st.code(app.linmap_command(view.model, view.model_b, view.dtype_b), language="bash")
            return
        linear_map = found[0]
        meta = linear_map.meta
        ui.chart(app.memo_chart((linear_map.map_id, "linmap"), lambda: charts.linear_map_heatmap(linear_map)),
                 f"linmap_{meta['source_name']}_{meta['target_name']}", "linmap")
        st.caption(f"Held-out relative error mean_i ‖ŷ_j − h_j‖ / ‖h_j‖ of the map from source depth s to target "
                   f"depth j, fitted on {meta['n_fit_tokens']} tokens of the shipped text ({app.md(meta['corpus'])}, "
                   f"ridge α = {meta['alpha']:g}) and scored on {meta['n_held_tokens']} held-out tokens. P2 trains the "
                   "same map by AdamW on C4; this is its closed form on far less text.")
        with st.expander("Best target depth per source depth"):
            st.dataframe(app.map_summary(linear_map), hide_index=True, width="stretch")


def main() -> None:
    """Draws the Compare page top to bottom (the items mode is effdepth.ui.sweep.compare_items)."""
    ui.page_setup("Compare")
    view = ui.state()
    run_store = ui.store()
    results = _url_runs(view, run_store)
    _sidebar(view)

    st.title("Compare two models")
    _mode_picker(view)
    if view.cmp_mode == "items":
        ui_sweep.compare_items(view, run_store)
        st.stop()
    ui.compare_defaults(view)
    columns = _model_inputs(view)
    ui.sync_url(view)
    if run_store is None:
        st.stop()
    a, b = _find_or_compute(view, run_store, results, columns)
    ui.sync_url(view)
    if a is not None and b is not None:
        label_a, label_b = _pair_labels(a, b)
        _ed_table(a, b, label_a, label_b)
        _curves(a, b, label_a, label_b)
        metric = _heatmaps(view, a, b, label_a, label_b)
        _delta(view, a, b, label_a, label_b, metric)
    _linear_maps(view, run_store)
    ui.sync_url(view)


main()
