"""Runs: the cache as a table — filter, reopen in Explore / Compare, delete, export (CSV, Parquet, PNG, SVG)."""

import streamlit as st

from effdepth import app, ui


def _runs(run_store):
    """Reads the cache's runs; stops the page after showing why it cannot, or that the cache is empty."""
    runs = None
    with ui.guard():
        runs = run_store.runs()
    if runs is None:
        st.stop()
    if not len(runs):
        st.info("The cache is empty. Analyse a prompt in Explore (or run `effdepth probe …`) to fill it.",
                icon=":material/inbox:")
        st.stop()
    return runs


def _table(runs, run_store) -> tuple[list, dict]:
    """Draws the filter and the selectable runs table; returns the selected run ids and their metadata."""
    st.caption(f"{len(runs)} run(s) in {app.md(run_store.path)}. EDR columns use P1's rules "
               "(skip: effdepth's proposed rule).")
    needle = st.text_input("Filter", key="w_runs_filter",
                           placeholder="model, benchmark item, prompt text, run id or dtype…")
    table = app.runs_table(runs, text_filter=needle)
    table_key = f"runs_table_{st.session_state.get('_runs_version', 0)}"  # a new key clears the selection
    event = st.dataframe(table, hide_index=True, width="stretch", key=table_key, on_select="rerun",
                         selection_mode="multi-row",
                         column_config={"item": st.column_config.TextColumn("benchmark item", width="small"),
                                        "prompt": st.column_config.TextColumn(width="medium"),
                                        "tokens": st.column_config.NumberColumn("T", width="small"),
                                        "run_id": st.column_config.TextColumn("run id", width="small")})
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    selected = [table["run_id"].iloc[i] for i in rows if i < len(table)]
    metas = {run_id: run_store.meta(run_id) for run_id in selected}
    return selected, metas


def _links(actions, view, selected: list, metas: dict) -> None:
    """Draws the link that reopens one run in Explore, or two runs in Compare."""
    if len(selected) == 1:
        actions.page_link(ui.PAGES["explore"][0], label="Open in Explore", icon=":material/grid_on:",
                          query_params=app.query_for_run(metas[selected[0]], demo=view.demo))
    if len(selected) == 2:
        actions.page_link(ui.PAGES["compare"][0], label="Open both in Compare", icon=":material/compare_arrows:",
                          query_params=app.query_for_pair(metas[selected[0]], metas[selected[1]], demo=view.demo))


def _downloads(actions, run_store, selected: list) -> None:
    """Draws the export buttons: tables as CSV / Parquet, and for one run its charts as PNG / SVG."""
    ids = tuple(selected)
    stem = selected[0] if len(selected) == 1 else f"{len(selected)}-runs"
    actions.download_button("Tables as CSV (zip)", data=lambda: app.export_zip(run_store, ids, "csv"),
                            file_name=f"effdepth-{stem}-csv.zip", mime="application/zip", key="export_csv",
                            on_click="ignore", icon=":material/download:")
    actions.download_button("Tables as Parquet (zip)", data=lambda: app.export_zip(run_store, ids, "parquet"),
                            file_name=f"effdepth-{stem}-parquet.zip", mime="application/zip", key="export_parquet",
                            on_click="ignore", icon=":material/download:")
    if len(selected) == 1:
        only = selected[0]
        actions.download_button("Charts as PNG (zip)", data=lambda: app.charts_zip(run_store.get(only), "png"),
                                file_name=f"effdepth-{only}-charts-png.zip", mime="application/zip",
                                key="export_png", on_click="ignore", icon=":material/image:")
        actions.download_button("Charts as SVG (zip)", data=lambda: app.charts_zip(run_store.get(only), "svg"),
                                file_name=f"effdepth-{only}-charts-svg.zip", mime="application/zip",
                                key="export_svg", on_click="ignore", icon=":material/image:")


def _confirm_delete(run_store, ids: tuple, confirm_key: str) -> None:
    """Draws the "cannot be undone" warning with Yes / Cancel, and deletes on Yes."""
    st.warning(f"Delete {len(ids)} run(s) from the cache? This cannot be undone.", icon=":material/warning:")
    yes, no = st.columns([1, 6])
    if yes.button("Yes, delete", key="delete_yes", type="primary"):
        with ui.guard():
            for run_id in ids:
                run_store.delete(run_id)
            st.session_state.pop(confirm_key, None)
            st.session_state["_runs_version"] = st.session_state.get("_runs_version", 0) + 1
            st.toast(f"Deleted {len(ids)} run(s).")
            st.rerun()
    if no.button("Cancel", key="delete_no"):
        st.session_state.pop(confirm_key, None)
        st.rerun()


def _delete(view, run_store, ids: tuple) -> None:
    """Draws the Delete button (asking first), or in demo mode that deleting is disabled."""
    if view.demo:
        st.caption("Demo mode: deleting is disabled.")
        return
    confirm_key = "_confirm_delete"
    if st.session_state.get(confirm_key) != ids:
        if st.button(f"Delete {len(ids)} run(s)…", key="delete", icon=":material/delete:"):
            st.session_state[confirm_key] = ids
            st.rerun()
    else:
        _confirm_delete(run_store, ids, confirm_key)


def _maps(view, run_store) -> None:
    """Draws the stored linear maps (``effdepth linmap``), each with its link to the Compare page."""
    listing = None
    with ui.guard():
        listing = app.maps_listing(run_store)
    if listing is None or not len(listing):
        return
    st.subheader("Linear maps")
    st.caption(f"{len(listing)} fitted pair(s): source depth s → every target depth j, held-out relative error "
               "(the heatmap is on the Compare page of the pair).")
    st.dataframe(listing, hide_index=True, width="stretch",
                 column_config={"map_id": st.column_config.TextColumn("map id", width="small")})
    links = st.container(horizontal=True, gap="small")
    for row in listing.head(8).itertuples():
        query = {"model": row.source, "model_b": row.target, "dtype": row.source_dtype, "dtype_b": row.target_dtype}
        if view.demo:
            query["demo"] = "1"
        links.page_link(ui.PAGES["compare"][0], label=app.md(f"{row.source} → {row.target} in Compare"),
                        icon=":material/compare_arrows:", query_params=query)


def main() -> None:
    """Draws the Runs page top to bottom."""
    ui.page_setup("Runs")
    view = ui.state()
    ui.nav(view, "runs")
    ui.demo_toggle(view)
    ui.sync_url(view)

    st.title("Cached runs")
    run_store = ui.store()
    if run_store is None:
        st.stop()
    runs = _runs(run_store)
    selected, metas = _table(runs, run_store)
    if not selected:
        st.info("Select one run to reopen, export or delete it; select two to compare them.",
                icon=":material/touch_app:")
    else:
        st.markdown(f"**Selected:** {app.md(', '.join(selected))}")
        actions = st.container(horizontal=True, gap="small")
        _links(actions, view, selected, metas)
        _downloads(actions, run_store, selected)
        _delete(view, run_store, tuple(selected))
    _maps(view, run_store)


main()
