"""A page's view state in the Streamlit session and the URL: set-up, widgets bound to state fields, nav.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from effdepth import app

STATE = "_effdepth_state"


URL = "_effdepth_url"


PAGES = {"home": ("app.py", "Home", ":material/home:"),
         "explore": ("pages/1_Explore.py", "Explore", ":material/grid_on:"),
         "compare": ("pages/2_Compare.py", "Compare", ":material/compare_arrows:"),
         "difficulty": ("pages/4_Difficulty.py", "Difficulty", ":material/signal_cellular_alt:"),
         "runs": ("pages/3_Runs.py", "Runs", ":material/table_rows:"),
         "present": ("pages/5_Present.py", "Present", ":material/slideshow:")}


OTHER = "__other__"


def page_setup(title: str) -> None:
    st.set_page_config(page_title=f"effdepth · {title}", page_icon=":material/stacked_line_chart:",
                       layout="wide", initial_sidebar_state="expanded")


def _current_query() -> dict[str, str]:
    return {key: st.query_params.get(key) for key in st.query_params.keys()}


def _wait_for_a_stopped_run() -> None:
    """A click during a run starts a new script run at once while the stopped one ends at its next
    progress step (Streamlit's fast reruns): let it keep what it finished before this run reads the cache."""
    pending = st.session_state.get(RUN_IN_FLIGHT)
    if pending is not None and not pending.is_set():
        with st.spinner("Stopping the previous run…"):
            pending.wait(120)


RUN_IN_FLIGHT = "_effdepth_run_in_flight"


def state() -> app.ViewState:
    """The view state of this session; (re)read from the URL when the URL is not the one we wrote."""
    _wait_for_a_stopped_run()
    query = _current_query()
    current = st.session_state.get(STATE)
    if current is None or (query and query != st.session_state.get(URL)):
        current = app.state_from_query(query)
        st.session_state[STATE] = current
        # widget values follow the state on this run
        for key in [k for k in st.session_state.keys() if str(k).startswith("w_")]:
            del st.session_state[key]
    if app.demo_locked():  # the server's lock: no widget or callback of this session lifts it
        current.demo = True
    return current


def compare_defaults(view: app.ViewState) -> None:
    """On the session's first Compare view, open on two different models (``app.compare_models``)."""
    if st.session_state.get("_effdepth_compare_opened"):
        return
    st.session_state["_effdepth_compare_opened"] = True
    app.compare_models(view, _current_query())


def sync_url(view: app.ViewState) -> None:
    """Write the view into the URL (so a copied link reopens this exact view)."""
    query = app.state_to_query(view)
    if query != _current_query():
        st.query_params.from_dict(query)
    st.session_state[URL] = query


_MISSING = object()


def _set(field: str, widget_key: str, transform: Callable | None = None, clears_run: bool = False,
         clears_run_b: bool = False) -> Callable[[], None]:
    def callback() -> None:
        # A live fragment's rerun (a sweep landing items) may have dropped the widget's state, or the whole
        # session's, between the click and this callback: nothing to take then, and nothing to crash on.
        view, value = st.session_state.get(STATE), st.session_state.get(widget_key, _MISSING)
        if view is None or value is _MISSING:
            return
        setattr(view, field, transform(value) if transform else value)
        if clears_run:
            view.run = None
            view.pos = None
        if clears_run_b:
            view.run_b = None
    return callback


def set_view(field: str, value) -> None:
    """A button's callback: set one input of the view (the run it names is cleared: the input changed)."""
    view = st.session_state[STATE]
    setattr(view, field, value)
    view.run = None


def bind(widget: Callable, field: str, label: str, *, container=None, key: str | None = None,
         transform: Callable | None = None, to_widget: Callable | None = None, clears_run: bool = False,
         clears_run_b: bool = False, **kwargs):
    """Render ``widget`` bound to ``state().<field>``: its value comes from the state, and a change by
    the user is written back (and clears the run id when it changes what is analysed)."""
    view = st.session_state[STATE]
    widget_key = key or f"w_{field}"
    value = getattr(view, field)
    st.session_state[widget_key] = to_widget(value) if to_widget else value
    target = container or st
    return getattr(target, widget.__name__)(
        label, key=widget_key, on_change=_set(field, widget_key, transform, clears_run, clears_run_b), **kwargs)


def nav(view: app.ViewState, current: str) -> None:
    """Sidebar navigation that carries the shared state (model, prompt, dtype, ...) in the URL."""
    query = app.state_to_query(view)
    with st.sidebar:
        st.markdown("### effdepth")
        for name, (path, title, icon) in PAGES.items():
            st.page_link(path, label=title, icon=icon, query_params=query, disabled=(name == current))
        if view.demo:
            st.info("**Demo mode**: read-only, cached runs only — no model is loaded.", icon=":material/slideshow:")
