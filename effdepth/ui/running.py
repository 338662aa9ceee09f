"""Running the probes from a page: the app's one held model, progress in a status box with a Stop
button, closed tabs noticed, and the note of a stopped run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import streamlit as st

from effdepth import app
from effdepth.errors import EffdepthError, RunStopped
from effdepth.ui.state import RUN_IN_FLIGHT


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
            config=None, preview: Callable | None = None, reuse=None, extra_meta: dict | None = None):
    """Compute (or fetch) a run with a status box, a progress bar that moves within each stage, and a
    stop button. Runs of other sessions on the shared model go first (the box says which place this one
    has); a closed tab or the stop button ends the run at the next progress step, keeping the probes that
    had finished (app.compute_run) and noting what was stopped (app.record_stopped).

    ``preview(run)`` draws the run so far below the status box after each probe (read-only: no widgets);
    the box's slot is cleared when the run is done, for the page to draw the whole run. ``extra_meta``: what
    the run carries besides its own meta (a continuation it reads)."""
    def work(tracker, on_result, slot):
        return app.compute_run(run_store, name, text, dtype, chat, model_holder(), tracker, config=config,
                               on_result=on_result if preview else None, reuse=reuse, extra_meta=extra_meta)

    return _in_status_box(f"{label} on {name} ({dtype})…", (name, text, dtype, chat), work, preview)


#: the shortest gap between two redraws of a continuation as it is written
STREAM_EVERY_S = 0.3


def continue_and_compute(run_store, name: str, text: str, dtype: str, chat: bool, n_new: int,
                         preview: Callable | None = None, positions: str = "all", seed: int | None = None,
                         temperature: float = 1.0):
    """Like :func:`compute`, after the model has continued ``text`` by ``n_new`` tokens (shown as they come);
    returns the run of text + continuation."""
    def work(tracker, on_result, slot):
        shown = {"at": 0.0}

        def heard(so_far: str) -> None:  # at most every STREAM_EVERY_S: a 2,048-token text is resent whole
            now = time.monotonic()
            if now - shown["at"] >= STREAM_EVERY_S:
                shown["at"] = now
                slot.code(text + so_far, language=None, wrap_lines=True)  # the model's own text, shown as text

        return app.continue_and_compute(run_store, name, text, dtype, chat, n_new, model_holder(), tracker,
                                        on_text=heard, on_result=on_result if preview else None,
                                        positions=positions, seed=seed, temperature=temperature)[1]

    return _in_status_box(f"{name} continues the text by {n_new} tokens, then the probes run ({dtype})…",
                          (name, text, dtype, chat), work, preview)


def _in_status_box(label: str, what: tuple, work: Callable, preview: Callable | None):
    """Run ``work(tracker, on_result, slot)`` inside a status box with a progress bar and a Stop button;
    ``slot`` (below the box) is the work's own (the streamed continuation), and ``preview`` draws below it
    what the run has so far. A stop is noted for ``what`` = (name, text, dtype, chat)."""
    top = st.container()
    slot, finished, running = st.empty(), st.empty(), st.empty()

    def on_result(run) -> None:
        """A finished probe redraws the finished ones; a running probe's tables so far (``meta["running"]``)
        redraw only its own section below them."""
        target = running if run.meta.get("running") else finished
        if target is finished:
            running.empty()
        with target.container():
            preview(run)

    with top, st.status(app.md(label), expanded=True) as box:
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
            result = work(tracker, on_result, slot)
        except RunStopped as err:
            app.record_stopped(*what, tracker.label, time.perf_counter() - started, "the browser session ended",
                               getattr(err, "kept", None))
            raise
        except EffdepthError:
            box.update(label="Failed", state="error", expanded=False)
            raise
        except BaseException as err:  # Streamlit's stop/rerun (the stop button, another click) ends the run
            app.record_stopped(*what, tracker.label, time.perf_counter() - started, "it was stopped",
                               getattr(err, "kept", None))
            raise
        finally:
            done.set()
        bar.progress(1.0, text=f"done in {time.perf_counter() - started:.1f} s")
        box.update(label=f"Done in {time.perf_counter() - started:.1f} s", state="complete", expanded=False)
    for placeholder in (slot, finished, running):
        placeholder.empty()
    return result
