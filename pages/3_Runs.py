"""Runs: the cache as a table — filter, reopen in Explore / Compare, delete, export (CSV, Parquet, PNG, SVG)."""

import streamlit as st

from effdepth import app, ui

ui.page_setup("Runs")
view = ui.state()
ui.nav(view, "runs")
ui.demo_toggle(view)
ui.sync_url(view)

st.title("Cached runs")
run_store = ui.store()
if run_store is None:
    st.stop()

runs = None
with ui.guard():
    runs = run_store.runs()
if runs is None:
    st.stop()
if not len(runs):
    st.info("The cache is empty. Analyse a prompt in Explore (or run `effdepth probe …`) to fill it.",
            icon=":material/inbox:")
    st.stop()

st.caption(f"{len(runs)} run(s) in {app.md(run_store.path)}. EDR columns use P1's rules "
           "(skip: effdepth's proposed rule).")
needle = st.text_input("Filter", key="w_runs_filter", placeholder="model, prompt text, run id or dtype…")
table = app.runs_table(runs, text_filter=needle)
table_key = f"runs_table_{st.session_state.get('_runs_version', 0)}"  # a new key clears the selection
event = st.dataframe(table, hide_index=True, width="stretch", key=table_key, on_select="rerun",
                     selection_mode="multi-row",
                     column_config={"prompt": st.column_config.TextColumn(width="medium"),
                                    "tokens": st.column_config.NumberColumn("T", width="small"),
                                    "run_id": st.column_config.TextColumn("run id", width="small")})
rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
selected = [table["run_id"].iloc[i] for i in rows if i < len(table)]
metas = {run_id: run_store.meta(run_id) for run_id in selected}

if not selected:
    st.info("Select one run to reopen, export or delete it; select two to compare them.",
            icon=":material/touch_app:")
    st.stop()

st.markdown(f"**Selected:** {app.md(', '.join(selected))}")
actions = st.container(horizontal=True, gap="small")
if len(selected) == 1:
    actions.page_link(ui.PAGES["explore"][0], label="Open in Explore", icon=":material/grid_on:",
                      query_params=app.query_for_run(metas[selected[0]], demo=view.demo))
if len(selected) == 2:
    actions.page_link(ui.PAGES["compare"][0], label="Open both in Compare", icon=":material/compare_arrows:",
                      query_params=app.query_for_pair(metas[selected[0]], metas[selected[1]], demo=view.demo))
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

if view.demo:
    st.caption("Demo mode: deleting is disabled.")
else:
    confirm_key = "_confirm_delete"
    if st.session_state.get(confirm_key) != ids:
        if st.button(f"Delete {len(ids)} run(s)…", key="delete", icon=":material/delete:"):
            st.session_state[confirm_key] = ids
            st.rerun()
    else:
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
