"""Sweeps started from the browser (issue 12 §4): a background thread per sweep in a process-wide registry.

A sweep outlives the page that started it (a reload finds it in the registry), stops between items when
asked and resumes by starting it again (the items already stored are skipped: ``sweeps.sweep`` checks the
cache by run key), and shares the app's one held model with every page: each item takes its turn on the
``ModelHolder``, so a page that asks for a run waits at most one item, with the holder's waiting message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from effdepth import engine, positions
from effdepth.contract import PROBES
from effdepth.errors import EffdepthError, PromptError

#: a bound on the items one request starts (a page can start it: the work is bounded)
MAX_ITEMS = 200


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
    status: str = "starting"  # starting | waiting | running | stopped | done | failed
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
        return self.status in ("starting", "waiting", "running")

    def stop(self) -> None:
        """Ask the sweep to stop after the item it is on (what is stored stays)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() and self.active

    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def rate(self) -> float | None:
        """Computed items per second (None before the first one lands)."""
        return self.n_computed / self.seconds() if self.n_computed else None


class SweepJobs:
    """The process's sweeps by key: at most one job per key runs at a time."""

    def __init__(self) -> None:
        self._jobs: dict[str, SweepJob] = {}
        self._lock = threading.Lock()

    def start(self, spec: SweepSpec, store, holder) -> SweepJob:
        """Start (or resume) a sweep; the running job of the same settings if there is one."""
        store.check_writable()
        with self._lock:
            job = self._jobs.get(spec.key)
            if job is not None and job.active:
                return job
            job = SweepJob(spec=spec)
            self._jobs[spec.key] = job
        threading.Thread(target=run_job, args=(job, store, holder), daemon=True,
                         name=f"effdepth-sweep-{spec.dataset}").start()
        return job

    def get(self, key: str) -> SweepJob | None:
        return self._jobs.get(key)

    def all(self) -> list[SweepJob]:
        """Every job of this process, newest first."""
        return sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)


def _items(job: SweepJob, holder):
    from effdepth import datasets

    spec = job.spec
    items = datasets.items(spec.dataset, n=spec.n)
    limit = datasets.token_limit(spec.dataset)
    if limit:  # P1's filter needs the model's tokenizer
        with holder.lease(spec.model, spec.dtype, _notify(job)) as loaded:
            items, dropped = datasets.filter_by_tokens(items, loaded.tokenizer, limit)
        if dropped:
            job.failed.append(f"{dropped} item(s) over {limit} tokens left out (P1's AIME filter)")
    return items


def _notify(job: SweepJob):
    def notify(stage: str, fraction=None) -> None:
        if job._stop.is_set():
            raise _Stopped()
        job.stage = stage
        job.status = "waiting" if stage.startswith("waiting") else "running"
    return notify


def run_job(job: SweepJob, store, holder) -> None:
    """The job's thread: every item not yet stored, one turn on the held model each."""
    from effdepth import models, sweeps

    spec = job.spec
    try:
        items = _items(job, holder)
        config = spec.config()
        keys = sweeps.item_keys(models.resolve_model(spec.model).fingerprint, items, spec.dtype, config)
        job.n_items = len(items)
        job.n_before = job.n_stored = sum(store.has(k) for k in keys)
        job.landed.append((0.0, job.n_stored))
        for item, key in zip(items, keys):
            if job._stop.is_set():
                raise _Stopped()
            if store.has(key):
                continue
            failed: list = []
            with holder.lease(spec.model, spec.dtype, _notify(job)) as loaded:
                job.status, job.stage = "running", f"{item.dataset}[{item.index}]"
                sweeps.sweep(spec.model, [item], store, config, spec.dtype, progress=lambda *a: None,
                             load=lambda *a, **k: loaded, skip_errors=(EffdepthError,), failed=failed)
            job.failed += [f"{it.dataset}[{it.index}]: {err}" for it, err in failed]
            if not failed:
                job.n_stored += 1
                job.n_computed += 1
            job.landed.append((job.seconds(), job.n_stored))
        job.status = "done"
    except _Stopped:
        job.status = "stopped"
    except Exception as err:  # noqa: BLE001 - a page shows it; the server goes on
        job.status, job.error = "failed", str(err) or type(err).__name__
    finally:
        job.ended = time.time()
        job.stage = ""
