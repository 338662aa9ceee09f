"""Many runs on one model at once: every result equals its solo run, bit for bit, and no hook is left.

The app's sessions share one loaded model (app.ModelHolder) and every probe hooks and replays its
layers; runs therefore take turns on the model (effdepth.turns). Here: the engine from 2 and 4 threads
on texts of equal and of different lengths, the turn queue itself (order, places, giving up), the
holder (a model switch waits for the run that uses the model; changed weights are reloaded) and a
stopped run (nothing stored, the model clean, the next run fine).
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time

import pandas as pd
import pytest

from effdepth import app, engine, models, turns
from effdepth.errors import RunStopped
from effdepth.store import Store
from tests.unit.test_store import tiny_model_dir

TEXTS_EQUAL = [" ".join(f"w{i}" for i in range(k, k + 20)) for k in (0, 20, 40, 3)]  # 21 tokens each
TEXTS_MIXED = [" ".join(f"w{i}" for i in range(n)) for n in (14, 29, 21, 40)]  # 15, 30, 22 and 41 tokens
CONFIG = engine.ProbeConfig(splits=(8, 12))  # every probe of the default config, fixed splits


@pytest.fixture(scope="module")
def solo(word_model):
    """Each text run alone, before any thread starts."""
    return {text: engine.run_probes(word_model, text, CONFIG) for text in set(TEXTS_EQUAL + TEXTS_MIXED)}


def assert_identical(got: engine.RunResult, want: engine.RunResult) -> None:
    assert got.run_id == want.run_id
    for name, frame in want.tables.items():
        pd.testing.assert_frame_equal(got.tables[name], frame, check_exact=True, obj=name)
    assert got.meta["checks"] == want.meta["checks"]


def hooks_left(model) -> list[str]:
    return [name for name, module in model.named_modules()
            if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks]


def run_in_threads(word_model, texts):
    """Start one engine run per text at the same moment; returns {text: result or exception}."""
    barrier = threading.Barrier(len(texts))
    out: dict[int, object] = {}

    def work(k: int, text: str) -> None:
        barrier.wait()
        try:
            out[k] = engine.run_probes(word_model, text, CONFIG)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            out[k] = err

    threads = [threading.Thread(target=work, args=(k, t)) for k, t in enumerate(texts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return [out.get(k) for k in range(len(texts))]


@pytest.mark.parametrize("n_threads", [2, 4])
@pytest.mark.parametrize("texts", [TEXTS_EQUAL, TEXTS_MIXED], ids=["equal-lengths", "different-lengths"])
def test_engine_from_many_threads_equals_solo_runs(word_model, solo, texts, n_threads):
    waits_before = turns.turns_of(word_model.model).waits
    results = run_in_threads(word_model, texts[:n_threads])
    for text, result in zip(texts, results):
        assert isinstance(result, engine.RunResult), result
        assert_identical(result, solo[text])
    assert hooks_left(word_model.model) == []
    assert turns.turns_of(word_model.model).waits > waits_before  # the runs did meet, and took turns
    assert not turns.turns_of(word_model.model).busy


def test_a_waiting_run_hears_its_place(word_model, solo):
    stages: list[str] = []
    started, release = threading.Event(), threading.Event()

    def slow_first(stage, frac=None):
        started.set()
        release.wait(30)

    first = threading.Thread(target=engine.run_probes, args=(word_model, TEXTS_EQUAL[0], CONFIG),
                             kwargs={"progress": slow_first})
    first.start()
    started.wait(30)
    threading.Timer(0.6, release.set).start()
    result = engine.run_probes(word_model, TEXTS_EQUAL[1], CONFIG, progress=lambda s, f=None: stages.append(s))
    first.join(30)
    assert f"{engine.WAITING_STAGE} (position 1)" in stages
    assert stages.index(f"{engine.WAITING_STAGE} (position 1)") < stages.index("forward pass")
    assert_identical(result, solo[TEXTS_EQUAL[1]])


# ------------------------------------------------------------------------------------ the turn queue


def test_turns_are_first_come_first_served():
    queue = turns.Turns(poll_seconds=0.01)
    order, places = [], {}
    hold = threading.Event()

    def holder():
        with queue.turn():
            order.append("holder")
            hold.wait(10)

    def waiter(name):
        with queue.turn(on_wait=lambda k: places.setdefault(name, k)):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    while not queue.busy:
        time.sleep(0.001)
    waiters = []
    for name in ("a", "b", "c"):
        waiters.append(threading.Thread(target=waiter, args=(name,)))
        waiters[-1].start()
        while queue.waiting < len(waiters):
            time.sleep(0.001)
    hold.set()
    for thread in [first, *waiters]:
        thread.join(10)
    assert order == ["holder", "a", "b", "c"]
    assert places == {"a": 1, "b": 2, "c": 3}
    assert not queue.busy and queue.waiting == 0


def test_giving_up_leaves_the_queue():
    queue = turns.Turns(poll_seconds=0.01)
    hold, done = threading.Event(), []

    def holder():
        with queue.turn():
            hold.wait(10)

    def give_up(position):
        raise RunStopped("stopped while waiting")

    thread = threading.Thread(target=holder)
    thread.start()
    while not queue.busy:
        time.sleep(0.001)
    with pytest.raises(RunStopped):
        with queue.turn(on_wait=give_up):
            done.append("ran")  # never: it gave up before its turn
    assert queue.waiting == 0 and done == []
    hold.set()
    thread.join(10)
    with queue.turn():  # the queue still works
        with queue.turn():  # and the holder may take its own turn again
            done.append("nested")
    assert done == ["nested"] and not queue.busy


def test_a_stopped_run_keeps_what_finished_and_frees_the_model(word_model_dir, word_model, solo, tmp_path):
    store = Store(tmp_path / "cache.duckdb")
    holder, name = app.ModelHolder(), str(word_model_dir)

    def stop_in_the_lens(stage, frac=None):
        if stage.startswith("logit lens") and frac:
            raise RunStopped("The browser session ended, so the run was stopped.")

    text = TEXTS_EQUAL[2]
    with pytest.raises(RunStopped) as stopped:
        app.compute_run(store, name, text, "float32", False, holder, stop_in_the_lens, config=CONFIG)
    model = holder.loaded.model
    assert hooks_left(model) == [] and not holder.turns.busy and not turns.turns_of(model).busy
    # what had finished (the cosines) is a complete run of its own config, stored and equal to a direct one
    assert stopped.value.kept == ["cosine"] and len(store) == 1
    kept = store.get(store.runs()["run_id"][0])
    direct = engine.run_probes(word_model, text, dataclasses.replace(CONFIG, probes=("cosine",)))
    assert kept.run_id == direct.run_id and kept.meta["probes"] == ["cosine"]
    for table in ("layer_token", "layer", "ed"):
        pd.testing.assert_frame_equal(kept.tables[table], direct.tables[table], check_dtype=False, obj=table)
    assert not len(kept.tables["skip"]) and not len(kept.tables["lens_topk"])
    strip = {label: value for label, value, *_ in app.summary_items(kept.meta, kept.tables["ed"], True)}
    assert strip["ED layer-skip effect"] == strip["ED logit-lens KL"] == "not run" and strip["ED cosine μ"] != "not run"
    assert app.missing_probes(kept) == ["logit_lens", "skip"]
    result = app.compute_run(store, name, text, "float32", False, holder, config=CONFIG)
    assert_identical(result, solo[text])
    assert len(store) == 2


def test_a_stop_before_any_probe_finished_keeps_nothing(word_model):
    def stop_at_once(stage, frac=None):
        if stage.startswith("contribution"):
            raise RunStopped("stopped")

    with pytest.raises(RunStopped) as stopped:
        engine.run_probes(word_model, TEXTS_EQUAL[0], CONFIG, progress=stop_at_once)
    assert getattr(stopped.value, "partial_result", None) is None and hooks_left(word_model.model) == []


# ------------------------------------------------------------------------------------------ the holder


def test_a_model_switch_waits_for_the_run_using_the_model():
    loads, events = [], []

    def loader(name, dtype, progress=None):
        loads.append(name)
        return f"model {name}"

    holder = app.ModelHolder(loader)
    inside, leave = threading.Event(), threading.Event()

    def session_a():
        with holder.lease("a", "float32") as model:
            inside.set()
            leave.wait(10)
            events.append(("a still has", model, holder.loaded))

    thread = threading.Thread(target=session_a)
    thread.start()
    inside.wait(10)
    threading.Timer(0.5, leave.set).start()
    heard = []
    with holder.lease("b", "float32", progress=lambda s, f=None: heard.append(s)) as model:
        events.append(("b got", model, holder.loaded))
    thread.join(10)
    assert events == [("a still has", "model a", "model a"), ("b got", "model b", "model b")]
    assert loads == ["a", "b"]
    assert f"{app.WAITING_STAGE} (position 1)" in heard


def test_changed_weights_are_reloaded_and_give_new_numbers(tmp_path):
    directory = tiny_model_dir(tmp_path / "model", seed=0)
    other = tiny_model_dir(tmp_path / "other", seed=1)
    store = Store(tmp_path / "cache.duckdb")
    holder = app.ModelHolder()
    text = TEXTS_EQUAL[0]
    old = app.compute_run(store, str(directory), text, "float32", False, holder, config=CONFIG)
    time.sleep(0.01)  # a new mtime even on coarse clocks
    shutil.copyfile(other / "model.safetensors", directory / "model.safetensors")
    new = app.compute_run(store, str(directory), text, "float32", False, holder, config=CONFIG)
    assert holder.loads == 2
    assert new.meta["model_fingerprint"] != old.meta["model_fingerprint"] and new.run_id != old.run_id
    fresh = engine.run_probes(models.load_model(str(directory)), text, CONFIG)
    assert_identical(new, fresh)
    assert not new.tables["layer"]["value"].equals(old.tables["layer"]["value"])
    again = app.compute_run(store, str(directory), text, "float32", False, holder, config=CONFIG)
    assert holder.loads == 2 and again.run_id == new.run_id  # unchanged files: the held model is reused
