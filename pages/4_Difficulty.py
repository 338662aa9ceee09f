"""Difficulty: one model over benchmark items — EDR per bin with bootstrap CIs, aggregate curves,
depth score, and the ED of every item (a click opens the item in Explore)."""

import streamlit as st

from effdepth import app, charts, sweeps, ui
from effdepth.ui import jobs as ui_jobs
from effdepth.ui import sweep as ui_sweep


def _intro() -> None:
    """Draws the title and what the page shows."""
    st.title("Difficulty and effective depth")
    st.caption("Does a model use more of its depth on harder inputs? Each bin (a dataset, or a difficulty level "
               "within one) aggregates the per-layer curves of its items; the ED rules then run on the aggregate "
               "curve, and a bootstrap over items gives its 95% CI. The charts read the cache; a sweep started below "
               "fills it.")


def _sets(view, run_store):
    """Reads the cache's sweep sets; stops the page after showing why it cannot, or how to fill it."""
    sets = ui_sweep.load_sets(run_store) if run_store is not None else None
    if sets is not None and not len(sets):
        ui_sweep.no_sweeps(view, run_store)
    if sets is None or not len(sets):
        ui.sync_url(view)
        st.stop()
    return sets


def _pickers(view, sets) -> str:
    """Draws the sweep picker and the aggregation picker side by side; returns the chosen sweep's key."""
    top_left, top_right = st.columns([3, 2], gap="large")
    key = ui_sweep.set_picker(view, sets, "a", container=top_left)
    ui_sweep.agg_picker(view, top_right)
    return key


def _aggregate(view, run_store, key: str):
    """Loads the sweep's items and bootstraps the aggregate per bin under a spinner; stops the page if it cannot."""
    item_set = agg = None
    with ui.guard(), st.spinner("Bootstrapping the aggregate curves per bin…"):
        item_set = sweeps.load_items(run_store, key)
        if item_set is not None:
            agg = sweeps.aggregate_by_bin(item_set, view.agg)
    if item_set is None or agg is None:
        st.stop()
    return item_set, agg


def _set_caption(item_set, agg) -> list:
    """Draws the model and the item count per bin; returns the bins that have curves, in order."""
    order = [b for b in item_set.bins if b in set(agg.ed["group"])]
    counts = item_set.items[item_set.items["has_curves"]]["bin"].value_counts()
    st.caption(f"**{app.md(app.short_model_name(item_set.model_name))}** ({item_set.dtype}, L = {item_set.n_layers}) · "
               + " · ".join(f"{app.md(b)}: {int(counts.get(b, 0))} items" for b in order))
    return order


def _ed_section(item_set, agg, order: list, run_store) -> None:
    """Draws the EDR per bin with its CIs and the aggregate curves per bin, or how to get curves."""
    st.subheader("Effective depth per bin")
    if not order:
        st.info("No item of this model has cosine or logit-lens curves, only skip runs. Run "
                f"{app.md(app.sweep_command(item_set.model_name, run_store))} for them.", icon=":material/info:")
        return
    ui_sweep.edr_section(agg, order, "bin", "diff")
    st.caption(ui_sweep.boot_caption(agg) + " “no transition”: share of resamples whose aggregate has none.")
    _absent(item_set, order, "curves")

    st.subheader("Aggregate per-layer curves per bin")
    ui_sweep.ed_curves(agg, order, relative=False, group_title="bin", key="diff_curve")
    st.caption("Line: the aggregate curve of each bin; band: its 95% bootstrap CI; rules: the ED of the aggregate "
               "curve in the bin's colour (solid P1, dashed guarded). Cosine: μ = mean of the attention, MLP and "
               "layer cosines; KL and overlap are indexed by the residual entering each layer.")


def _absent(item_set, shown, section: str) -> None:
    """Says which bins of the sweep this section leaves out, and why."""
    notes = app.absent_bins(item_set, shown, section)
    if notes:
        st.caption("Not in this section: " + " ".join(app.md(note) for note in notes))


def _depth_score_charts(item_set, scores) -> None:
    """Draws the depth score bars (max, mean) and the layer / logit effect profiles per bin."""
    skip_order = [b for b in item_set.bins if b in set(scores.scores["bin"])]
    left, right = st.columns(2, gap="medium")
    for column, reduce in ((left, "max"), (right, "mean")):
        with column:
            ui.chart(charts.depth_score_bars(scores.scores, reduce, skip_order, item_set.n_layers),
                     f"depth_score_{reduce}", f"diff_ds_{reduce}")
    left, right = st.columns(2, gap="medium")
    for column, effect in ((left, "layer"), (right, "logit")):
        with column:
            ui.chart(charts.effect_profiles(scores.profiles, scores.scores, "max", effect, skip_order),
                     f"effect_profile_{effect}", f"diff_prof_{effect}")


def _depth_score(item_set, run_store) -> None:
    """Draws the depth score section (layer skipping, P2), or how to add the skip runs it needs."""
    st.subheader("Depth score (layer skipping, P2)")
    scores = sweeps.depth_scores(item_set)
    if scores is None:
        st.info("No item of this model has a reduced future-effect skip matrix, which the depth score needs. Add "
                f"them with\n\n```\n{app.skip_command(item_set.model_name, run_store)}\n```\n\n(the cosine / "
                "logit-lens runs of the same items are kept: each item merges the tables of all its runs).",
                icon=":material/info:")
        return
    _depth_score_charts(item_set, scores)
    _absent(item_set, set(scores.scores["bin"]), "skip")
    notes = app.depth_score_notes(item_set, scores)
    if notes:
        st.info("Left out of the depth score (the future-effect skip needs a split point 8 ≤ t < T−4, so a "
                "prompt under 13 tokens gets only the current-effect variants):\n\n"
                + "\n\n".join(f"- {app.md(note)}" for note in notes), icon=":material/info:")
    st.caption(f"{len(sweeps.skip_items(item_set))} items with a future-effect skip matrix. Per bin the item matrices "
               "M[s, j] and output changes O(s) are reduced by max or mean over items; layer effect e(s) = "
               "Σ_j M[s, j] / max(L − 1 − s, 1), logit effect O(s); depth score = Σ s·e(s) / Σ e(s), the centre "
               "of mass over the skipped layer. A harder bin using more depth would score higher.")


def _token_depth(item_set, run_store) -> None:
    """Draws the mean commitment depth per bin and token class (not in the papers)."""
    table = app.token_depth_table(run_store, item_set)
    if not len(table):
        return
    st.subheader("Per-token depth by token class")
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("Commitment depth c(i): the first layer from which on the logit lens's top-1 at a token is the "
               "model's own prediction of the next token (L: only the output). Mean over the tokens of each class; "
               "answer = the positions that predict the gold answer's tokens (runs that recorded them), question "
               "= the others, digits / words / other by the token's own text; the interval resamples items. Not "
               "in the papers, which average over tokens.")


def _item_strip(view, item_set, agg, order: list, eds, selected) -> None:
    """Draws the strip of every item's ED per bin (a click picks the item) with its downloads and caption."""
    def _on_pick() -> None:
        picked = charts.selected_item(st.session_state.get("diff_items"))
        if picked is not None:
            st.session_state[ui.STATE].item = picked

    strip = charts.item_ed_strip(eds, view.ed_probe, view.ed_rule, order, item_set.n_layers,
                                 sweeps.probe_eds(agg, view.ed_probe), selected=selected)
    st.altair_chart(strip, width="stretch", key="diff_items", on_select=_on_pick, selection_mode=["item"])
    ui.downloads(strip, f"item_ed_{view.ed_probe}_{view.ed_rule}", "diff_items")
    sel = eds[(eds["probe"] == view.ed_probe) & (eds["rule"] == view.ed_rule)]
    n_none = int(sel["ed"].isna().sum())
    st.caption("Each point is one item's ED (from its own curve, same rule); box: the bin's quartiles and median, "
               "whiskers: min–max; red tick: the ED of the bin's aggregate curve."
               + (f" {n_none} item(s) have no transition and are not drawn." if n_none else ""))


def _item_picker(view, item_set, options: list, selected, eds) -> None:
    """Draws the item selectbox and, for a picked item, the link that opens it in Explore."""
    pick, link = st.columns([3, 1], gap="medium", vertical_alignment="bottom")

    def _on_item() -> None:
        picked = st.session_state.get("w_diff_item")
        if picked is not None:  # dropped by a live sweep's rerun meanwhile: keep the item shown
            st.session_state[ui.STATE].item = picked

    st.session_state["w_diff_item"] = selected
    pick.selectbox("Item", options, key="w_diff_item", on_change=_on_item,
                   placeholder="Pick an item (or click a point)…",
                   format_func=lambda i: app.item_label(item_set, i, eds, view.ed_probe, view.ed_rule))
    if selected:
        link.page_link(ui.PAGES["explore"][0], label="Open this item in Explore", icon=":material/grid_on:",
                       query_params=app.explore_query(item_set, selected, view.ed_probe, view.demo))


def _items(view, item_set, agg, order: list) -> None:
    """Draws the ED of each item: probe and rule pickers, the strip and the item picker."""
    st.subheader("ED of each item")
    c1, c2 = st.columns(2)
    eds = sweeps.item_eds(item_set)
    probes = [p for p in sweeps.ED_PROBES if p in set(eds["probe"])] or ["cosine"]  # (the shortcut lens: opt-in)
    if view.ed_probe not in probes:
        view.ed_probe = probes[0]
    ui.bind(st.radio, "ed_probe", "Probe", container=c1, options=probes,
            format_func=lambda p: charts.PROBE_TITLES.get(p, p), horizontal=True)
    ui.bind(st.radio, "ed_rule", "Rule", container=c2, options=list(sweeps.RULES),
            format_func=charts.RULE_NAMES.get, horizontal=True)
    options = app.item_options(item_set.subset(item_set.items[item_set.items["has_curves"]]["item_id"]))
    selected = view.item if view.item in options else None  # the shared item may be another page's
    _item_strip(view, item_set, agg, order, eds, selected)
    _item_picker(view, item_set, options, selected, eds)


def main() -> None:
    """Draws the Difficulty page top to bottom."""
    ui.page_setup("Difficulty")
    view = ui.state()
    ui.nav(view, "difficulty")
    ui.demo_toggle(view)
    _intro()
    run_store = ui.store()
    if run_store is not None:
        ui_jobs.sweep_panel(view, run_store)
    sets = _sets(view, run_store)
    key = _pickers(view, sets)
    ui.sync_url(view)

    item_set, agg = _aggregate(view, run_store, key)
    order = _set_caption(item_set, agg)
    _ed_section(item_set, agg, order, run_store)
    _depth_score(item_set, run_store)
    with ui.guard():
        _token_depth(item_set, run_store)
    if order:
        _items(view, item_set, agg, order)
    ui.sync_url(view)


main()
