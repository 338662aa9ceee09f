"""Sweeps started from the browser (effdepth.app.jobs): they run in the background on the app's one held model,
stop between items, resume from the first item not stored, and refuse unbounded or unknown work."""

from __future__ import annotations

import time
import types

import pytest

from effdepth import datasets, models, sweeps
from effdepth.app import jobs
from effdepth.errors import PromptError
from effdepth.models.holder import ModelHolder
from effdepth.store import Store


def _wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture
def tiny_dir(tmp_path_factory):
    from tests import app_support

    return str(app_support.build_tiny_dir(tmp_path_factory.mktemp("jobs") / "tiny", seed=3))


def test_a_sweep_runs_in_the_background_stops_and_resumes(tiny_dir, tmp_path):
    store, holder, registry = Store(tmp_path / "c.duckdb"), ModelHolder(), jobs.SweepJobs()
    spec = jobs.SweepSpec(model=tiny_dir, dtype="float32", dataset="hops", n=4, probes=("cosine", "logit_lens"))
    job = registry.start(spec, store, holder)
    assert registry.start(spec, store, holder) is job  # the same settings: the running job, not a second one
    _wait(lambda: job.n_computed >= 1 or not job.active)
    job.stop()
    _wait(lambda: not job.active)
    assert job.status == "stopped", job.error
    assert 1 <= job.n_stored < 4 and job.n_items == 4
    stored = job.n_stored
    assert len(store) == stored
    resumed = registry.start(spec, store, holder)  # a stopped job starts again from the first missing item
    assert resumed is not job
    _wait(lambda: not resumed.active)
    assert resumed.status == "done", resumed.error
    assert resumed.n_before == stored and resumed.n_computed == 4 - stored and resumed.n_stored == 4
    assert [t for t, _ in resumed.landed] == sorted(t for t, _ in resumed.landed)
    assert resumed.rate() > 0
    assert registry.all()[0] is resumed
    # every item's run is the one the CLI's sweep stores (same keys), on the app's one held model
    keys = sweeps.item_keys(holder.loaded.spec.fingerprint, sweeps_items(), "float32", spec.config())
    assert all(store.has(k) for k in keys)
    assert holder.loads == 1 and holder.key == (tiny_dir, "float32")


def sweeps_items():
    return datasets.items("hops", n=4)


def test_a_failing_sweep_says_why_and_the_server_goes_on(tmp_path):
    store, registry = Store(tmp_path / "c.duckdb"), jobs.SweepJobs()
    spec = jobs.SweepSpec(model=str(tmp_path / "no-such-model"), dtype="float32", dataset="hops", n=2,
                          probes=("cosine",))
    job = registry.start(spec, store, ModelHolder())
    _wait(lambda: not job.active)
    assert job.status == "failed" and job.error


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "1 to 200 items"), ({"n": 10_000}, "1 to 200 items"),
    ({"probes": ("nope",)}, "Unknown probe"), ({"probes": ()}, "Unknown probe"),
    ({"positions": "last:abc"}, "position"),
])
def test_a_sweep_request_is_bounded_and_checked(kwargs, message):
    base = {"model": "m", "dtype": "float32", "dataset": "hops", "n": 3, "probes": ("cosine",)}
    with pytest.raises(PromptError, match=message):
        jobs.SweepSpec(**(base | kwargs))


def test_the_page_sweep_has_its_shell_command():
    spec = jobs.SweepSpec(model="smollm2-135m", dtype="bfloat16", dataset="gsm8k", n=5, probes=("cosine", "skip"),
                          positions="last:64")
    assert spec.command() == ("effdepth sweep --model smollm2-135m --dtype bfloat16 --dataset gsm8k --n 5 "
                              "--probes cosine,skip --positions last:64")


def test_a_page_run_during_a_sweep_waits_its_turn_with_a_message(tmp_path, monkeypatch):
    """One model across pages: while a sweep's item holds the model, another session's run waits (and hears
    the holder's waiting message), then gets the same held model; nothing else is loaded."""
    import threading

    from effdepth.models.holder import WAITING_STAGE

    release, holding = threading.Event(), threading.Event()
    loads = []

    def slow_item(model, items, *args, hold, **kwargs):  # the sweep's item: holds its turn until let go
        with hold(items[0]):
            holding.set()
            release.wait(30)
        return []

    monkeypatch.setattr(sweeps, "sweep", slow_item)
    holder = ModelHolder(loader=lambda name, dtype, progress=None: loads.append(name) or object())
    store = Store(tmp_path / "c.duckdb")
    monkeypatch.setattr(jobs, "_items", lambda job, holder: datasets.items("hops", n=1))
    monkeypatch.setattr(models, "resolve_model", lambda name: types.SimpleNamespace(fingerprint="fp"))
    job = jobs.SweepJobs().start(jobs.SweepSpec(model="m", dtype="float32", dataset="hops", n=1, probes=("cosine",)),
                                 store, holder)
    assert holding.wait(30)
    heard = []
    threading.Timer(0.5, release.set).start()
    with holder.lease("m", "float32", lambda stage, frac=None: heard.append(stage)) as model:
        assert model is not None
    assert any(stage.startswith(WAITING_STAGE) for stage in heard), heard
    _wait(lambda: not job.active)
    assert loads == ["m"]  # the page's run took the model the sweep had loaded


def test_sweeps_queue_one_at_a_time_and_count_only_what_they_computed(tiny_dir, tmp_path):
    """Issue 19 §7: a second and a third sweep queue behind the running one (one model held, no swapping);
    overlapping sweeps count as computed only the items they computed; a stopped queued sweep never runs; the
    list keeps the newest finished ones."""
    store, holder, registry = Store(tmp_path / "c.duckdb"), ModelHolder(), jobs.SweepJobs()
    base = dict(model=tiny_dir, dtype="float32", dataset="hops", probes=("cosine", "logit_lens"))
    first = registry.start(jobs.SweepSpec(**base, n=3), store, holder)
    second = registry.start(jobs.SweepSpec(**base, n=4), store, holder)
    third = registry.start(jobs.SweepSpec(**base, n=5), store, holder)
    assert second.status == "queued" and third.status == "queued"
    third.stop()
    assert third.status == "stopped" and not third.active
    _wait(lambda: not first.active and not second.active)
    assert first.status == second.status == "done", (first.error, second.error)
    assert first.n_computed == 3 and second.n_computed == 1 and second.n_stored == 4
    assert third.n_computed == 0 and len(store) == 4 and holder.loads == 1
    assert second.started >= first.started
    for n in range(6, 6 + jobs.MAX_FINISHED + 2):  # finished jobs beyond MAX_FINISHED leave the list
        job = registry.start(jobs.SweepSpec(**base, n=1, positions=f"last:{n}"), store, holder)
        _wait(lambda job=job: not job.active)
    assert len(registry.all()) <= jobs.MAX_FINISHED + 1
