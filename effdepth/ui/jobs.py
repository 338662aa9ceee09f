"""The Difficulty page's sweep panel: start a sweep in the background (``app.jobs``), watch it land item by
item, stop it, resume it. The panel polls its jobs every ``POLL_S`` seconds while one runs and reruns the
page when an item landed, so the charts take it in."""

from __future__ import annotations

import time

import streamlit as st

from effdepth import app
from effdepth.app import jobs
from effdepth.contract import DEFAULT_SWEEP_N, DEFAULT_SWEEP_PROBES, PROBES
from effdepth.ui.errors import guard
from effdepth.ui.running import model_holder

POLL_S = 2.0
#: the page's charts are redrawn at most this often while a sweep lands items (each redraw bootstraps the
#: aggregates again, on the cores the sweep runs on), and once when it ends
REFRESH_S = 15.0
_SEEN = "_sweep_jobs_seen"  # session key: {job key: items stored when the page's charts were last drawn}
_REFRESHED = "_sweep_jobs_refreshed"  # session key: when the page was last rerun for landed items


@st.cache_resource(max_entries=1, show_spinner=False)
def sweep_jobs() -> jobs.SweepJobs:
    """The process's background sweeps (every session sees them; a reload finds them)."""
    return jobs.SweepJobs()


def _form(view, run_store) -> None:
    """Draws the settings of a new sweep and its Start button."""
    with st.form("sweep_form", border=False):
        left, middle, right = st.columns([3, 2, 1])
        model = left.text_input("Model", value=view.model, key="w_sweep_model",
                                help="An embedded name, a model directory, a hub id in the HF cache or a .gguf file.")
        dataset = middle.selectbox("Dataset", options=list(app.ITEM_DATASETS), format_func=app.ITEM_DATASETS.get,
                                   key="w_sweep_dataset")
        n = right.number_input("Items", min_value=1, max_value=jobs.MAX_ITEMS, value=DEFAULT_SWEEP_N, step=1,
                               key="w_sweep_n")
        left, middle, right = st.columns([3, 2, 1])
        probes = left.multiselect("Probes", options=list(PROBES), default=list(DEFAULT_SWEEP_PROBES),
                                  format_func=lambda p: app.PROBE_LABELS.get(p, p), key="w_sweep_probes")
        positions = middle.text_input("Measured positions", value="all", key="w_sweep_positions",
                                      help="all, last:N, A:B, from:A, stride:K or answer")
        dtypes = list(app.DTYPES)
        dtype = right.selectbox("dtype", options=dtypes, key="w_sweep_dtype",
                                index=dtypes.index(view.dtype) if view.dtype in dtypes else 0)
        started = st.form_submit_button("Start the sweep", icon=":material/play_arrow:")
    if started:
        with guard():
            spec = jobs.SweepSpec(model=model.strip(), dtype=dtype, dataset=dataset, n=int(n),
                                  probes=tuple(p for p in PROBES if p in probes), positions=positions.strip() or "all")
            app.resolve(spec.model)  # a model that cannot be found is said here, not in the thread
            seconds = jobs.sweep_estimate(spec)
            if seconds is not None and seconds > jobs.CONFIRM_FROM_S:
                st.session_state[_PENDING] = (spec, seconds)  # said below; a second click starts it
            else:
                sweep_jobs().start(spec, run_store, model_holder())
    _pending(run_store)


#: session key: a long sweep waiting for its second click (spec, estimated seconds)
_PENDING = "_effdepth_sweep_pending"


def _pending(run_store) -> None:
    """Draws a long sweep's estimate and the buttons that start it anyway or drop it."""
    pending = st.session_state.get(_PENDING)
    if pending is None:
        return
    spec, seconds = pending
    st.warning(f"This sweep ({spec.n} items of {app.md(spec.dataset)}, {app.md(', '.join(spec.probes))}) is estimated "
               f"at ~{seconds / 60:.0f} min of compute here (a lower bound), on the one model the app holds.",
               icon=":material/schedule:")
    go, drop = st.columns(2)

    def start() -> None:
        st.session_state.pop(_PENDING, None)
        sweep_jobs().start(spec, run_store, model_holder())

    go.button(f"Start it anyway (~{seconds / 60:.0f} min)", key="sweep_confirm", icon=":material/play_arrow:",
              on_click=start)
    drop.button("Cancel", key="sweep_cancel", on_click=lambda: st.session_state.pop(_PENDING, None))


def _job_line(job: jobs.SweepJob, demo: bool = False) -> str:
    spec = job.spec
    rate = job.rate()
    per_item = f" · {1 / rate:.1f} s/item computed" if rate else ""
    model = app.public_model_name(spec.model) if demo else spec.model  # another user's paths stay theirs
    return (f"**{app.md(model)}** ({spec.dtype}) on {app.md(spec.dataset)}, {spec.n} items, "
            f"{app.md(', '.join(spec.probes))}: {job.status}{' (stopping after this item)' if job.stopping else ''} · "
            f"{job.n_stored}/{job.n_items or spec.n} stored ({job.n_computed} computed here) · "
            f"{job.seconds():.0f} s{per_item}")


def _draw_job(index: int, job: jobs.SweepJob, run_store, demo: bool) -> None:
    """Draws one job: its line, its progress bar, what failed, and its Stop / Resume button."""
    st.markdown(_job_line(job, demo))
    st.progress(job.n_stored / max(job.n_items or job.spec.n, 1), text=app.md(job.stage) if job.stage else None)
    for line in job.failed[-3:]:
        st.caption(app.md(line))
    if not demo:  # the command names the model's path
        st.code(job.spec.command(), language="bash")  # the same sweep from a shell
    if job.error:
        st.error(f"The sweep failed: {app.md(job.error)}", icon=":material/error:")
    if demo:
        return
    if job.active and not job.stopping:
        st.button("Stop after this item", key=f"sweep_stop_{index}", icon=":material/stop:", on_click=job.stop)
    elif not job.active and job.status != "done":
        st.button("Resume", key=f"sweep_resume_{index}", icon=":material/play_arrow:",
                  on_click=lambda spec=job.spec: sweep_jobs().start(spec, run_store, model_holder()))


def _refresh_when_items_landed(all_jobs: list) -> None:
    """Reruns the page (its charts) when items landed since it was drawn: at most every REFRESH_S, and at once
    when a sweep ended."""
    seen = st.session_state.setdefault(_SEEN, {})
    landed = [job for job in all_jobs if seen.setdefault(job.spec.key, job.n_stored) != job.n_stored]
    if not landed:
        return
    now = time.monotonic()
    if any(not job.active for job in landed) or now - st.session_state.get(_REFRESHED, 0.0) >= REFRESH_S:
        st.session_state[_REFRESHED] = now
        seen.update({job.spec.key: job.n_stored for job in all_jobs})
        st.rerun(scope="app")


def _draw_jobs(run_store, demo: bool) -> None:
    """Draws every job of this process, newest first."""
    all_jobs = sweep_jobs().all()
    for index, job in enumerate(all_jobs):
        _draw_job(index, job, run_store, demo)
    _refresh_when_items_landed(all_jobs)


@st.fragment(run_every=POLL_S)
def _live_jobs(run_store, demo: bool) -> None:
    _draw_jobs(run_store, demo)


def sweep_panel(view, run_store) -> None:
    """Draws the panel: running and finished sweeps, and (outside demo mode) the form that starts one."""
    expanded = bool(sweep_jobs().all())  # open while this server has sweeps to show
    with st.expander("Run a sweep from here", expanded=expanded, icon=":material/playlist_play:"):
        st.caption("The sweep runs on the server in the background: it goes on when you reload or leave the page, "
                   "stops after the item it is on when asked, and resumes from the first item not in the cache. "
                   "Every item takes its turn on the one model the app holds, so other pages' runs wait at most "
                   "one item.")
        if view.demo:
            st.info("Demo mode loads no model: sweeps cannot be started.", icon=":material/block:")
        else:
            _form(view, run_store)
        if any(job.active for job in sweep_jobs().all()):  # (after the form: a sweep it started just now too)
            _live_jobs(run_store, view.demo)
        else:
            _draw_jobs(run_store, view.demo)
