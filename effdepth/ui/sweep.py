"""Streamlit glue for the views over benchmark items: the Difficulty page and Compare's items mode.

Widgets read and write the shared ``ViewState`` (so the URL reopens the view); the numbers come from
``effdepth.difficulty`` and the charts from ``effdepth.charts_sweep``. No model is ever loaded here.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from effdepth import app, charts, sweeps
from effdepth.errors import EffdepthError
from effdepth.ui import render
from effdepth.ui.errors import guard, show_error
from effdepth.ui.state import bind, sync_url


def load_sets(run_store) -> pd.DataFrame | None:
    """The sweep sets in the cache, or None after showing why the cache cannot be read."""
    try:
        return sweeps.sweep_sets(sweeps.item_runs(run_store))
    except EffdepthError as err:
        show_error(err)
        return None


def no_sweeps(view: app.ViewState, run_store, what: str = "This view") -> None:
    model = view.model or app.default_model()
    st.info(f"**No benchmark sweeps in the cache yet.** {what} aggregates runs of benchmark items "
            f"(`{run_store.path}` has none). Fill it from a shell, e.g.\n\n"
            f"```\n{app.sweep_command(model, run_store)}\n"
            f"{app.sweep_command(model, run_store, dataset='aime2025', n=30)}\n```\n\n"
            "(add `--probes skip --skip-variants future` runs for the depth score). The sweeps are resumable; "
            "this page updates when you reload it.", icon=":material/inbox:")


def _set_options(sets: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    return list(sets["key"]), dict(zip(sets["key"], sets["label"]))


def set_picker(view: app.ViewState, sets: pd.DataFrame, which: str = "a", label: str = "Model (sweep)",
               container=None, avoid: str | None = None) -> str:
    """A selectbox of the sweep sets bound to the view's model / dtype / chat template (``which`` = "a")
    or model_b / dtype_b ("b"); returns the chosen set's key. ``avoid``: a key not to default to."""
    target = container or st
    field, dtype_field = ("model", "dtype") if which == "a" else ("model_b", "dtype_b")
    options, labels = _set_options(sets)
    current = sweeps.pick_set(sets, getattr(view, field), getattr(view, dtype_field), view.chat)
    if avoid is not None and current == avoid and len(options) > 1:  # B defaults to another sweep than A
        current = next(k for k in options if k != avoid)
    _adopt(view, sets, current, which)
    widget_key = f"w_set_{which}"

    def on_change() -> None:
        picked = st.session_state.get(widget_key)
        if picked is None:  # dropped by a live fragment's rerun meanwhile
            return
        _adopt(view, sets, picked, which)
        if which == "a":
            view.run, view.pos, view.item = None, None, None
        else:
            view.run_b = None

    st.session_state[widget_key] = current
    target.selectbox(label, options, format_func=lambda k: labels.get(k, k), key=widget_key, on_change=on_change)
    return current


def _adopt(view: app.ViewState, sets: pd.DataFrame, key: str, which: str) -> None:
    rows = sets[sets["key"] == key]
    if not len(rows):  # a set that changed while the page was open (items landed): keep the view as it is
        return
    row = rows.iloc[0]
    if which == "a":
        if view.model_b == view.model and view.dtype_b == view.dtype:  # B follows A unless set apart
            view.model_b, view.dtype_b = str(row["model_name"]), str(row["dtype"])
        view.model, view.dtype, view.chat = str(row["model_name"]), str(row["dtype"]), bool(row["chat_template"])
    else:
        view.model_b, view.dtype_b = str(row["model_name"]), str(row["dtype"])


def agg_picker(view: app.ViewState, container=None) -> None:
    bind(st.radio, "agg", "Aggregation over items", container=container, options=list(sweeps.HOWS),
            format_func=sweeps.HOWS.get, horizontal=True,
            help="Token-weighted (P1): Σ over all tokens of all items / total tokens. Per-prompt mean (P2): "
                 "the plain mean of each item's token mean.")


def boot_caption(agg: sweeps.Aggregate) -> str:
    return (f"Aggregation: {sweeps.HOWS[agg.how]}; 95% percentile bootstrap over items ({agg.n_boot} resamples, "
            f"seed {sweeps.BOOT_SEED}); the ED of each resample comes from the same rules as a single run.")


def ed_curves(agg: sweeps.Aggregate, order, relative: bool, group_title: str, key: str,
              colours=None, per_row: int = 3) -> None:
    """The three probes' aggregate curves side by side, with downloads."""
    probes = [p for p in sweeps.ED_PROBES if len(sweeps.probe_curves(agg, p))]
    for start in range(0, len(probes), per_row):
        row = st.columns(per_row, gap="medium")
        for column, probe in zip(row, probes[start:start + per_row]):
            with column:
                chart = charts.group_curves(sweeps.probe_curves(agg, probe), sweeps.probe_eds(agg, probe), probe,
                                                  order=order, relative=relative, colours=colours,
                                                  group_title=group_title)
                render.chart(chart, f"{key}_{probe}", f"{key}_{probe}")


def edr_section(agg: sweeps.Aggregate, order, group_title: str, key: str) -> None:
    left, right = st.columns(2, gap="medium")
    for column, rule in ((left, "p1"), (right, "guarded")):
        with column:
            chart = charts.edr_ci_chart(agg.ed, rule, order=order, group_title=group_title)
            render.chart(chart, f"{key}_edr_{rule}", f"{key}_edr_{rule}")
    st.dataframe(app.edr_display(agg.ed, group_title), hide_index=True, width="stretch", height="content",
                 placeholder="none")


def _sweep_sets(view: app.ViewState, run_store) -> pd.DataFrame | None:
    """The cache's sweep sets, or None after showing why there are none (the URL then synced)."""
    if run_store is None:
        sync_url(view)
        return None
    sets = load_sets(run_store)
    if sets is None:
        sync_url(view)
        return None
    if not len(sets):
        no_sweeps(view, run_store, "Compare's items mode")
        sync_url(view)
        return None
    return sets


def _pick_pair(view: app.ViewState, run_store):
    """Draws the sweep pickers of models A and B; returns their (key_a, key_b, set_a, set_b), or None (URL synced)."""
    sets = _sweep_sets(view, run_store)
    if sets is None:
        return None
    col_a, col_b = st.columns(2, gap="large")
    key_a = set_picker(view, sets, "a", "Model A (sweep)", col_a)
    key_b = set_picker(view, sets, "b", "Model B (sweep)", col_b, avoid=key_a)
    set_a = set_b = None
    with guard():
        set_a, set_b = sweeps.load_items(run_store, key_a), sweeps.load_items(run_store, key_b)
    if set_a is None or set_b is None:
        sync_url(view)
        return None
    return key_a, key_b, set_a, set_b


def _one_model_only(run_store, set_a: sweeps.ItemSet) -> None:
    """Draws how to sweep a second model when the cache holds sweeps of one model only."""
    other = next((name for name, _ in app.model_options() if name != set_a.model_name), "MODEL")
    st.info("The cache holds benchmark sweeps of one model only; sweep a second model on the same items to "
            f"compare, e.g.\n\n```\n{app.sweep_command(other, run_store, dataset=set_a.items['dataset'].iloc[0])}"
            "\n```", icon=":material/info:")


def _pick_dataset(view: app.ViewState, run_store, set_a: sweeps.ItemSet, set_b: sweeps.ItemSet) -> bool:
    """Draws the dataset and aggregation pickers (URL synced); False after showing that no dataset is shared."""
    datasets = sweeps.shared_datasets(set_a, set_b)
    if not datasets:
        sync_url(view)
        missing = set_a.items["dataset"].iloc[0] if len(set_a.items) else "gsm8k"
        st.info(f"**{app.md(view.model_b)}** and **{app.md(view.model)}** share no dataset with cosine / "
                "logit-lens curves. "
                f"Sweep the other model on the same items, e.g.\n\n"
                f"```\n{app.sweep_command(view.model_b, run_store, dataset=missing)}\n```",
                icon=":material/info:")
        return False
    if view.dataset not in datasets:
        view.dataset = datasets[0]
    c1, c2 = st.columns([1, 2], gap="large")
    bind(st.selectbox, "dataset", "Dataset", container=c1, options=datasets)
    agg_picker(view, c2)
    sync_url(view)
    return True


def _shared_items(view: app.ViewState, set_a: sweeps.ItemSet, set_b: sweeps.ItemSet):
    """Draws how many items both models share; returns (ids, (label_a, label_b)), or None when there are none."""
    ids = sweeps.shared_items(set_a, set_b, view.dataset)
    label_a, label_b = app.pair_labels(set_a.meta(), set_b.meta())
    st.caption(f"**{len(ids)} items** of {app.md(view.dataset)} with curves for both models (same text): "
               f"{label_a} L = {set_a.n_layers}, {label_b} L = {set_b.n_layers}.")
    if not ids:
        st.warning("No shared item with the same text in this dataset. Sweep the same items for both models.",
                   icon=":material/warning:")
        return None
    if len(ids) < 5:
        st.warning(f"Only {len(ids)} shared item(s): the bootstrap intervals say little. Sweep more items of this "
                   "dataset for both models.", icon=":material/warning:")
    return ids, (label_a, label_b)


def _compare_sections(agg: sweeps.Aggregate, order: list[str]) -> None:
    """Draws the two models' aggregate curves on relative depth and their EDR with CIs."""
    st.subheader("Aggregate curves on relative depth")
    ed_curves(agg, order, relative=True, group_title="model", key="cmpi", colours=charts.MODEL_COLOURS)
    st.caption("x = layer / L, so models of different depth line up; band: 95% bootstrap CI of the aggregate "
               "curve; rules: each model's ED of the aggregate curve at ED / L (solid P1, dashed guarded). "
               + boot_caption(agg))
    st.subheader("Effective depth over the shared items")
    edr_section(agg, order, "model", "cmpi")
    st.caption("EDR of the aggregate curve; the bar is its 95% bootstrap CI over items (resampled per model). "
               "“no transition”: share of resamples whose aggregate curve has no transition.")


def compare_items(view: app.ViewState, run_store) -> None:
    """Two models over the benchmark items they share: curves on layer / L with bands, EDR with CIs."""
    pair = _pick_pair(view, run_store)
    if pair is None:
        return
    key_a, key_b, set_a, set_b = pair
    if key_a == key_b:
        _one_model_only(run_store, set_a)
        sync_url(view)
        return
    if not _pick_dataset(view, run_store, set_a, set_b):
        return
    shared = _shared_items(view, set_a, set_b)
    if shared is None:
        return
    ids, labels = shared
    agg = None
    with st.spinner(f"Bootstrapping the aggregate over {len(ids)} items…"), guard():
        agg = sweeps.compare_aggregate(set_a, set_b, labels, ids, view.agg)
    if agg is None:
        return
    _compare_sections(agg, list(labels))
