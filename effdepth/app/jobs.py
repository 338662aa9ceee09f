"""Sweeps started from the browser (issue 12 §4): background sweeps in a process-wide registry.

A sweep outlives the page that started it (a reload finds it in the registry), stops between items when
asked and resumes by starting it again (the items already stored are skipped: ``sweeps.sweep`` checks the
cache by run key), and shares the app's one held model with every page: each item takes its turn on the
``ModelHolder``, so a page that asks for a run waits at most one item, with the holder's waiting message.

The work a server does is bounded: one sweep runs at a time (``MAX_RUNNING``) and the others queue in the
order they were asked for, so the held model is not swapped between two sweeps' models item by item, and
the list keeps the ``MAX_FINISHED`` newest finished sweeps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from effdepth import engine, positions
from effdepth.contract import PROBES
from effdepth.errors import EffdepthError, PromptError

#: a bound on the items one request starts (a page can start it: the work is bounded)
MAX_ITEMS = 200
#: sweeps running at once on one server (the others queue), and finished ones kept in the list
MAX_RUNNING = 1
MAX_FINISHED = 8


class _Stopped(Exception):
    """Raised from a job's progress callback when it was asked to stop."""


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: one model (and dtype) over the first ``n`` items of a dataset, with these probes."""

    model: str
    dtype: str
    dataset: str
    n: int
    probes: tuple[str, ...]
    positions: str = "all"

    def __post_init__(self) -> None:
        if not 1 <= int(self.n) <= MAX_ITEMS:
            raise PromptError(f"A sweep from the page runs 1 to {MAX_ITEMS} items, not {self.n}; use "
                              "`effdepth sweep` for more.")
        unknown = set(self.probes) - set(PROBES)
        if unknown or not self.probes:
            raise PromptError(f"Unknown probe(s) {sorted(unknown) or '(none given)'}; choose from {', '.join(PROBES)}.")
        positions.check(self.positions)

    @property
    def key(self) -> str:
        return "|".join((self.model, self.dtype, self.dataset, str(self.n), ",".join(self.probes), self.positions))

    def config(self) -> engine.ProbeConfig:
        return engine.ProbeConfig(probes=self.probes, positions=self.positions)

    def command(self) -> str:
        """The same sweep from a shell."""
        import shlex

        extra = f" --positions {self.positions}" if self.positions != "all" else ""
        return (f"effdepth sweep --model {shlex.quote(self.model)} --dtype {self.dtype} --dataset {self.dataset} "
                f"--n {self.n} --probes {','.join(self.probes)}{extra}")


@dataclass
class SweepJob:
    """One sweep's state, read by the pages while its thread runs it."""

    spec: SweepSpec
    status: str = "starting"  # queued | starting | waiting | running | stopped | done | failed
    stage: str = ""
    n_items: int = 0
    n_stored: int = 0  # items with a stored run, those from before included
    n_before: int = 0
    n_computed: int = 0
    started: float = field(default_factory=time.time)
    ended: float | None = None
    error: str | None = None
    failed: list[str] = field(default_factory=list)
    landed: list[tuple[float, int]] = field(default_factory=list)  # (seconds since the start, items stored)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "starting", "waiting", "running")

    def stop(self) -> None:
        """Ask the sweep to stop after the item it is on (what is stored stays); a queued one never starts."""
        self._stop.set()
        if self.status == "queued":
            self.status, self.ended = "stopped", time.time()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() and self.active

    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def rate(self) -> float | None:
        """Computed items per second (None before the first one lands)."""
        return self.n_computed / self.seconds() if self.n_computed else None


class SweepJobs:
    """The process's sweeps by key: at most one job per key, ``MAX_RUNNING`` running, the rest queued."""

    def __init__(self) -> None:
        self._jobs: dict[str, SweepJob] = {}
        self._queue: list[tuple[SweepJob, object, object]] = []
        self._lock = threading.Lock()

    def start(self, spec: SweepSpec, store, holder) -> SweepJob:
        """Start (or resume, or queue behind the running ones) a sweep; the active job of the same settings
        if there is one."""
        store.check_writable()
        with self._lock:
            job = self._jobs.get(spec.key)
            if job is not None and job.active:
                return job
            job = SweepJob(spec=spec)
            self._jobs[spec.key] = job
            self._prune()
            if sum(j.active and j.status != "queued" for j in self._jobs.values() if j is not job) >= MAX_RUNNING:
                job.status = "queued"
                self._queue.append((job, store, holder))
                return job
        self._launch(job, store, holder)
        return job

    def _launch(self, job: SweepJob, store, holder) -> None:
        threading.Thread(target=self._run, args=(job, store, holder), daemon=True,
                         name=f"effdepth-sweep-{job.spec.dataset}").start()

    def _run(self, job: SweepJob, store, holder) -> None:
        """One job's thread; when it ends, the first queued job that was not stopped meanwhile starts."""
        try:
            run_job(job, store, holder)
        finally:
            with self._lock:
                following = None
                while self._queue and following is None:
                    candidate = self._queue.pop(0)
                    if candidate[0].status == "queued":
                        following = candidate
            if following is not None:
                following[0].status = "starting"
                self._launch(*following)

    def _prune(self) -> None:
        """Keep the ``MAX_FINISHED`` newest finished jobs (the active ones all stay)."""
        finished = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.started, reverse=True)
        for old in finished[MAX_FINISHED:]:
            self._jobs.pop(old.spec.key, None)

    def get(self, key: str) -> SweepJob | None:
        return self._jobs.get(key)

    def all(self) -> list[SweepJob]:
        """Every job of this process, newest first."""
        return sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)


def _items(job: SweepJob, holder):
    from effdepth import datasets, models

    spec = job.spec
    items = datasets.items(spec.dataset, n=spec.n)
    resolved = models.resolve_model(spec.model)
    tokenizer, context = models.load_tokenizer(resolved), models.context_of(resolved)  # no weights needed
    if tokenizer is None and datasets.token_limit(spec.dataset):  # a GGUF's tokenizer comes with its model
        with holder.lease(spec.model, spec.dtype, _notify(job)) as loaded:
            tokenizer, context = loaded.tokenizer, loaded.max_context
    if tokenizer is None:
        return items
    items, dropped, limit = datasets.sweep_filter(items, tokenizer, spec.dataset, context=context)
    if dropped:
        job.failed.append(f"{dropped} item(s) over {limit} tokens left out (P1's AIME filter, or the context)")
    return items


def _notify(job: SweepJob):
    def notify(stage: str, fraction=None) -> None:
        if job._stop.is_set():
            raise _Stopped()
        job.stage = stage
        job.status = "waiting" if stage.startswith("waiting") else "running"
    return notify


def run_job(job: SweepJob, store, holder) -> None:
    """The job's thread: ``sweeps.sweep`` over the items, one turn on the held model per item (a stop
    lands between items); the counters count what this job computed, apart from what it found stored."""
    from effdepth import sweeps

    spec = job.spec

    def started(n_items: int, n_stored: int) -> None:
        job.n_items, job.n_before, job.n_stored = n_items, n_stored, n_stored
        job.landed.append((0.0, job.n_stored))

    def landed(item, outcome: str) -> None:
        if outcome != "failed":
            job.n_stored += 1
            job.n_computed += outcome == "computed"
        job.landed.append((job.seconds(), job.n_stored))

    @contextlib.contextmanager
    def hold(item):
        if job._stop.is_set():
            raise _Stopped()
        with holder.lease(spec.model, spec.dtype, _notify(job)) as loaded:
            job.status, job.stage = "running", f"{item.dataset}[{item.index}]"
            yield loaded

    try:
        failed: list = []
        try:
            sweeps.sweep(spec.model, _items(job, holder), store, spec.config(), spec.dtype, progress=_notify(job),
                         skip_errors=(EffdepthError,), failed=failed, hold=hold, on_start=started, on_item=landed)
        finally:
            job.failed += [f"{it.dataset}[{it.index}]: {err}" for it, err in failed]
        job.status = "done"
    except _Stopped:
        job.status = "stopped"
    except Exception as err:  # noqa: BLE001 - a page shows it; the server goes on
        job.status, job.error = "failed", str(err) or type(err).__name__
    finally:
        job.ended = time.time()
        job.stage = ""


#: a sweep estimated to take longer than this asks for a second click before it starts
CONFIRM_FROM_S = 600


def sweep_estimate(spec: SweepSpec) -> float | None:
    """The estimated seconds of a sweep (every item's forward pass and probes, from its characters, at the
    rate measured here for its dtype); None where the model's shape is not known without loading it."""
    from effdepth import datasets, estimate
    from effdepth.app.window import model_shape

    shape = model_shape(spec.model)
    if shape is None:
        return None
    total = 0.0
    for item in datasets.items(spec.dataset, n=spec.n):
        n_tokens = max(2, round(len(item.text) / estimate.CHARS_PER_TOKEN))
        try:
            selected = positions.select(spec.positions, n_tokens, 1)
        except PromptError:
            selected = list(range(n_tokens))
        windowed = len(selected) < n_tokens
        sizes = estimate.Shape(*shape, n_tokens, measured=len(selected) if windowed else None,
                               first_measured=selected[0] if windowed else 0,
                               last_measured=selected[-1] if windowed else None)
        total += sum(estimate.flops(sizes, p) for p in ("forward", *spec.probes))
    return estimate.seconds(total, estimate.rate(spec.dtype))
