"""Streamlit glue shared by the pages: state <-> widgets <-> URL, the error boundary, the model
holder, the compute-with-progress call, summary strip and chart downloads.

Pages call these and ``effdepth.app`` / ``effdepth.charts``; nothing here touches a tensor.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import streamlit as st

try:  # Streamlit's own Altair → Vega-Lite conversion (Arrow datasets); private, so optional
    from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec as _to_vega_lite
except ImportError:  # pragma: no cover - another Streamlit: st.altair_chart converts on every rerun
    _to_vega_lite = None

from effdepth import app, charts
from effdepth.errors import CacheError, EffdepthError, RunStopped
from effdepth.memo import Memo

STATE = "_effdepth_state"
URL = "_effdepth_url"
PAGES = {"home": ("app.py", "Home", ":material/home:"),
         "explore": ("pages/1_Explore.py", "Explore", ":material/grid_on:"),
         "compare": ("pages/2_Compare.py", "Compare", ":material/compare_arrows:"),
         "difficulty": ("pages/4_Difficulty.py", "Difficulty", ":material/signal_cellular_alt:"),
         "runs": ("pages/3_Runs.py", "Runs", ":material/table_rows:")}
OTHER = "__other__"


# --------------------------------------------------------------------------------------------------
# Page, state and URL
# --------------------------------------------------------------------------------------------------


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
    return current


def sync_url(view: app.ViewState) -> None:
    """Write the view into the URL (so a copied link reopens this exact view)."""
    query = app.state_to_query(view)
    if query != _current_query():
        st.query_params.from_dict(query)
    st.session_state[URL] = query


def _set(field: str, widget_key: str, transform: Callable | None = None, clears_run: bool = False,
         clears_run_b: bool = False) -> Callable[[], None]:
    def callback() -> None:
        view = st.session_state[STATE]
        value = st.session_state[widget_key]
        setattr(view, field, transform(value) if transform else value)
        if clears_run:
            view.run = None
            view.pos = None
        if clears_run_b:
            view.run_b = None
    return callback


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


# --------------------------------------------------------------------------------------------------
# Inputs shared by the pages
# --------------------------------------------------------------------------------------------------


def model_input(view: app.ViewState, container=None, which: str = "a", label: str = "Model") -> None:
    """Embedded model picker, or a path / HF id / GGUF file for "Other"."""
    target = container or st
    field, dtype_field = ("model", "dtype") if which == "a" else ("model_b", "dtype_b")
    options = [name for name, _ in app.model_options()]
    labels = dict(app.model_options())
    labels[OTHER] = "Other: a local directory, an HF cache id, or a .gguf file…"
    current = getattr(view, field)
    choice_key, path_key = f"w_{field}_choice", f"w_{field}_path"

    def on_choice() -> None:
        picked = st.session_state[choice_key]
        if picked != OTHER:
            setattr(view, field, picked)
        else:
            setattr(view, field, st.session_state.get(path_key) or "")
        _clear(view, which)

    def on_path() -> None:
        setattr(view, field, (st.session_state[path_key] or "").strip())
        _clear(view, which)

    st.session_state[choice_key] = current if current in options else OTHER
    target.selectbox(label, options + [OTHER], format_func=lambda n: labels.get(n, n), key=choice_key,
                     on_change=on_choice)
    if st.session_state[choice_key] == OTHER:
        st.session_state[path_key] = "" if current in options else current
        target.text_input("Model path, HF id or GGUF file", key=path_key, on_change=on_path,
                          placeholder="/path/to/model-dir · Qwen/Qwen2.5-1.5B · ~/models/x.gguf")
    bind(st.radio, dtype_field, "dtype", container=target, options=list(app.DTYPES),
         horizontal=True, clears_run=(which == "a"), clears_run_b=(which == "b"),
         help="bfloat16 is 2–3× faster on this CPU; float32 matches the papers' reductions best.")


def _clear(view: app.ViewState, which: str) -> None:
    if which == "a":
        view.run = None
        view.pos = None
    else:
        view.run_b = None


def prompt_input(view: app.ViewState, container=None, height: int = 110) -> None:
    target = container or st
    examples = list(app.EXAMPLES)
    example_key = "w_example"

    def on_example() -> None:
        picked = st.session_state[example_key]
        if picked in app.EXAMPLES:
            view.prompt = app.EXAMPLES[picked]
            view.run = None
            view.run_b = None
            view.pos = None

    current = next((k for k, v in app.EXAMPLES.items() if v == view.prompt), None)
    st.session_state[example_key] = current
    target.selectbox("Examples", examples, key=example_key, on_change=on_example,
                     placeholder="Pick a ready example…")
    item_picker(view, target)
    bind(st.text_area, "prompt", "Prompt (teacher-forced: question and answer together)", container=target,
         height=height, clears_run=True, clears_run_b=True,
         help="The text is fed to the model as is (no chat template unless switched on); nothing is generated.")
    bind(st.toggle, "chat", "Apply the chat template", container=target, clears_run=True, clears_run_b=True,
         help="Off in both papers. With a template, ED values are not comparable to the papers' tables.")


def item_picker(view: app.ViewState, container=None) -> None:
    """Benchmark item → prompt: dataset + index; the prompt becomes the teacher-forced item (docs/SPEC.md §2)."""
    target = container or st
    item = app.current_item(view)
    names = list(app.ITEM_DATASETS)
    ds_key, idx_key = "w_item_dataset", "w_item_index"
    st.session_state[ds_key] = item.dataset if item is not None and item.dataset in names else None
    if item is not None:
        st.session_state[idx_key] = int(item.index)
    elif idx_key not in st.session_state:
        st.session_state[idx_key] = 0

    def on_pick() -> None:
        dataset = st.session_state.get(ds_key)
        if not dataset:
            return
        index = min(int(st.session_state.get(idx_key) or 0), app.item_size(dataset) - 1)
        picked = app.load_item(app.item_spec(dataset, index))
        view.prompt, view.item, view.answer = picked.text, app.item_spec(dataset, index), None
        view.run = view.run_b = view.pos = None

    left, right = target.columns([3, 2])
    left.selectbox("Benchmark item", names, format_func=app.ITEM_DATASETS.get, key=ds_key, on_change=on_pick,
                   placeholder="Dataset…", help="Question + gold answer, teacher-forced, in P1's format.")
    right.number_input("Index", min_value=0, step=1, key=idx_key, on_change=on_pick)


def demo_toggle(view: app.ViewState, container=None) -> None:
    bind(st.toggle, "demo", "Demo mode (read-only, cache only)", container=container or st.sidebar,
         help="For talks: every view reads the cache only; no model loads and no compute buttons.")


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def show_error(err: BaseException) -> None:
    """The one place where user-facing errors are shown (never a traceback; the message may quote the
    user's input, so it is shown as text, not markdown)."""
    st.error(app.md(str(err)), icon=":material/error:")
    view = st.session_state.get(STATE)
    if isinstance(err, CacheError) and app.error_kind(err) == "corrupt" and not (view and view.demo):
        if st.button("Move the broken cache aside", key=f"move_aside_{abs(hash(str(err))) % 10**8}",
                     type="primary"):
            try:
                moved = _move_aside()
                st.success(app.md(f"Moved the broken cache to {moved}. A fresh, empty cache is used from now on.")
                           if moved else "Moved the broken cache aside; a fresh, empty cache is used from now on.")
            except EffdepthError as again:
                st.error(app.md(str(again)))


def _move_aside():
    return app.open_store().move_aside()


@contextmanager
def guard() -> Iterator[None]:
    """Show an EffdepthError raised inside the block with st.error and carry on with the page."""
    try:
        yield
    except EffdepthError as err:
        show_error(err)


def store():
    """The result store, or None after showing why it cannot be opened."""
    try:
        return app.open_store()
    except EffdepthError as err:
        show_error(err)
        return None


# --------------------------------------------------------------------------------------------------
# Model holder and compute
# --------------------------------------------------------------------------------------------------


@st.cache_resource(max_entries=1, show_spinner=False)
def model_holder() -> app.ModelHolder:
    """The process-wide holder of the one loaded model: runs of all sessions take turns on it, and a
    model switch waits until no run uses the held model (see effdepth.holder.ModelHolder)."""
    return app.ModelHolder()


def _session_gone() -> bool:
    """Whether this script run's browser session has ended (tab closed, connection lost)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx is not None and Runtime.exists() and not Runtime.instance().is_active_session(ctx.session_id)
    except Exception:  # noqa: BLE001 - no runtime (AppTest, bare mode): the session is alive
        return False


def stopped_notice(name: str, text: str, dtype: str, chat: bool) -> None:
    """Say so when this input's last run was stopped (stop control, closed tab) before it finished."""
    note = app.stopped_run(name, text, dtype, chat)
    if note is not None:
        st.warning(app.md(note), icon=":material/stop_circle:")


def compute(run_store, name: str, text: str, dtype: str, chat: bool, label: str = "Running the probes",
            config=None):
    """Compute (or fetch) a run with a status box, a progress bar that moves within each stage, and a
    stop button. Runs of other sessions on the shared model go first (the box says which place this one
    has); a closed tab or the stop button ends the run at the next progress step, keeping the probes that
    had finished (app.compute_run) and noting what was stopped (app.record_stopped)."""
    with st.status(app.md(f"{label} on {name} ({dtype})…"), expanded=True) as box:
        st.button("Stop", key="stop_run", icon=":material/stop:",
                  help="End this run; the probes that have finished are kept.")
        bar = st.progress(0.0, text="Starting")
        started = time.perf_counter()

        def sink(stage: str, fraction: float) -> None:
            if _session_gone():
                raise RunStopped("The browser session ended, so the run was stopped.")
            bar.progress(min(1.0, fraction), text=app.md(f"{stage} · {time.perf_counter() - started:.0f} s"))

        tracker = app.ProgressTracker(sink=sink)
        done = st.session_state[RUN_IN_FLIGHT] = threading.Event()
        try:
            result = app.compute_run(run_store, name, text, dtype, chat, model_holder(), tracker, config=config)
        except RunStopped as err:
            app.record_stopped(name, text, dtype, chat, tracker.label, time.perf_counter() - started,
                                 "the browser session ended", getattr(err, "kept", None))
            raise
        except EffdepthError:
            box.update(label="Failed", state="error", expanded=False)
            raise
        except BaseException as err:  # Streamlit's stop/rerun (the stop button, another click) ends the run
            app.record_stopped(name, text, dtype, chat, tracker.label, time.perf_counter() - started,
                                 "it was stopped", getattr(err, "kept", None))
            raise
        finally:
            done.set()
        bar.progress(1.0, text=f"done in {time.perf_counter() - started:.1f} s")
        box.update(label=f"Done in {time.perf_counter() - started:.1f} s", state="complete", expanded=False)
    return result


# --------------------------------------------------------------------------------------------------
# Display helpers
# --------------------------------------------------------------------------------------------------


def summary_strip(items: Sequence[tuple[str, str, str | None, str]], per_row: int = 6) -> None:
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (label, value, delta, help_text) in zip(cols, items[start:start + per_row]):
            col.metric(label, value, delta=delta, delta_color="off", delta_arrow="off",
                       help=app.md(help_text) if help_text else None)  # help quotes model-supplied tokens


def downloads(chart, name: str, key: str) -> None:
    """PNG and SVG download buttons under a chart (rendered lazily by vl-convert on click)."""
    base = app.safe_name(name)
    row = st.container(horizontal=True, gap="small")
    row.download_button("PNG", data=lambda: charts.chart_png(chart), file_name=f"{base}.png", mime="image/png",
                         key=f"png_{key}", on_click="ignore", icon=":material/download:", type="tertiary")
    row.download_button("SVG", data=lambda: charts.chart_svg(chart), file_name=f"{base}.svg",
                          mime="image/svg+xml", key=f"svg_{key}", on_click="ignore", icon=":material/download:",
                          type="tertiary")


_SPECS = Memo(size=128)  # id(chart) -> (chart, spec): holding the chart keeps its id unique


def _vega_lite_spec(chart_obj) -> dict | None:
    """The chart's Vega-Lite spec, converted once per chart object.

    Converting (Altair's schema validation) is over half of a cached view's script time, and the
    pages reuse memoised chart objects (app.memo_chart), so a rerun sends the stored spec.
    """
    if _to_vega_lite is None:
        return None
    _, spec = _SPECS.get(id(chart_obj), lambda: (chart_obj, _to_vega_lite(chart_obj)))
    return copy.deepcopy(spec)  # Streamlit moves the datasets out of the spec it is given


def chart(chart_obj, name: str, key: str, on_select: str | Callable | None = None, download: bool = True):
    """The chart at container width + its downloads; returns the selection state if selectable."""
    spec = _vega_lite_spec(chart_obj)
    select = dict(on_select=on_select, selection_mode=["cell"]) if on_select else {}
    if spec is None:
        event = st.altair_chart(chart_obj, width="stretch", key=key, **select)
    else:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key, **select)
    if download:
        downloads(chart_obj, name, key)
    return event
