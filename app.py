"""effdepth — home: what effective depth is, the model and prompt to analyse, and the way to each view."""

import streamlit as st

from effdepth import app, ui

# The views the home page leads to: (page, button label, what it shows, button type).
_VIEWS = [
    ("explore", "Explore one model × one prompt", "Heatmaps layer × token, per-layer curves with the ED, the skip "
     "matrix, the logit lens at a token.", "primary"),
    ("compare", "Compare two models", "Same prompt, shared colour scales, curves on relative depth layer / L, "
     "Δ heatmap, EDR table; or two models over benchmark items.", "secondary"),
    ("difficulty", "Difficulty across benchmark items", "EDR per bin with bootstrap CIs, aggregate curves, depth "
     "score, the ED of every item (reads sweeps from the cache).", "secondary"),
    ("runs", "Browse cached runs", "Filter, reopen, compare, delete and export runs (CSV, Parquet, PNG, SVG).",
     "secondary"),
    ("present", "Present a talk", "One chart per screen in large type, ← / → through the slides (a talk is a "
     "link; `effdepth demo` fills the cache for one).", "secondary"),
]


def _intro() -> None:
    """Draws the title and what effective depth is."""
    st.title("effdepth: how much of its depth does a language model use?")
    st.markdown(
        "A transformer has **L** layers, but not all of them compose new features: past a transition "
        "layer the residual stream is only refined toward an output that is already decided. "
        "effdepth runs three probes on one prompt — residual cosines and relative contributions, the "
        "logit lens, and layer skipping — and turns each per-layer curve into the **effective depth ED**, "
        "the layer of that transition. The **effective depth ratio** is **EDR = (ED + 1) / L**, the share "
        "of layers up to and including the transition (the rules are P1's, next to guarded variants)."
    )


def _inputs(view) -> None:
    """Draws the model input (with the embedded models) and the prompt input side by side."""
    left, right = st.columns([1, 1.35], gap="large")
    with left:
        st.subheader("Model")
        ui.model_input(view, left)
        with st.expander("Embedded models (install offline from PyPI on first use)"):
            st.dataframe(app.embedded_models_table(), hide_index=True, width="stretch")
    with right:
        st.subheader("Prompt")
        ui.prompt_input(view, right, height=130)


def _cache_status(view) -> None:
    """Draws whether the prompt on the model is in the cache (Explore opens instantly) or will be computed."""
    with ui.guard():
        run_store = app.open_store()
        app.check_prompt(view.prompt)
        _, cached = app.find_cached(run_store, view.model, view.prompt, view.dtype, view.chat)
        if cached is not None:
            st.success(f"This prompt on **{app.md(view.model)}** ({view.dtype}) is in the cache: "
                       "Explore opens instantly.",
                       icon=":material/bolt:")
        elif view.demo:
            st.warning("This prompt on this model is not in the cache, and demo mode computes nothing. "
                       "Pick a cached run on the Runs page.", icon=":material/block:")
        else:
            st.info("Not in the cache yet: Explore computes it (a short prompt on the default model takes "
                    "well under a minute on a CPU).", icon=":material/hourglass_top:")


def _views(query: dict) -> None:
    """Draws a button per view that opens it with the shared state in its URL."""
    st.subheader("Views")
    per_row = 3  # the labels stay whole at the page's width
    for start in range(0, len(_VIEWS), per_row):
        cols = st.columns(per_row, gap="medium")
        for col, (page, label, text, kind) in zip(cols, _VIEWS[start:start + per_row]):
            path, _, icon = ui.PAGES[page]
            if col.button(label, key=f"go_{page}", type=kind, icon=icon, width="stretch"):
                st.switch_page(path, query_params=query)
            col.caption(text)


def main() -> None:
    """Draws the home page top to bottom."""
    ui.page_setup("Home")
    view = ui.state()
    ui.nav(view, "home")
    ui.demo_toggle(view)
    _intro()
    _inputs(view)
    ui.sync_url(view)
    query = app.state_to_query(view)
    _cache_status(view)
    _views(query)


main()
