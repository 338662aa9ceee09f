"""Results probe by probe (issue 11 §1): each probe's run as soon as it is done, and probes of an earlier run
taken instead of computed again (counted: the probe functions and the layers' forwards)."""

from __future__ import annotations

import pandas as pd
import pytest

from effdepth import cli, engine
from effdepth.probes import cosine, logit_lens, skip
from tests.unit.test_store import TEXT


def _layer_calls(word_model):
    """A counter of the last layer's forward calls (the clean pass is 1; every replay adds more)."""
    calls = {"n": 0}

    def hook(module, args, kwargs, output):
        calls["n"] += 1

    layer = word_model.model.model.layers[-1]
    return calls, layer.register_forward_hook(hook, with_kwargs=True)


def test_the_skip_matrix_fills_layer_by_layer(word_model, monkeypatch):
    """While the skip probe runs, the page hears its cells so far: each one the final value, more of them
    each time, the affected layers in order; the finished run has them all and an ED."""
    from effdepth.probes import skip_tables

    monkeypatch.setattr(skip, "PARTIAL_EVERY_S", 0.0)
    monkeypatch.setattr(skip_tables, "PARTIAL_BACKOFF", 0.0)
    heard = []
    final = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine", "skip")),
                              on_result=heard.append)
    running = [r for r in heard if r.meta.get("running") == "skip"]
    n_layers = word_model.n_layers
    assert len(running) >= n_layers  # at least once per replayed layer
    keys = ["variant", "split", "skipped", "affected"]
    want = final.tables["skip"].set_index(keys)["value"]
    sizes = []
    for result in running:
        assert result.meta["probes"] == ["cosine"]  # skip is not finished: no skip ED in these
        assert "skip" not in set(result.tables["ed"]["probe"])
        got = result.tables["skip"].set_index(keys)["value"]
        pd.testing.assert_series_equal(got, want.loc[got.index], check_exact=False, atol=1e-7)
        sizes.append(len(got))
    assert sizes == sorted(sizes) and sizes[0] < len(want) and sizes[-1] <= len(want)
    first = running[0].tables["skip"]
    replayed = first[(first["variant"] == "future") & (first["affected"] > first["skipped"])]
    assert replayed.empty or replayed["affected"].max() < n_layers - 1  # the last layer is still to come
    assert "skip" in set(final.tables["ed"]["probe"])


def test_partial_hand_overs_back_off(monkeypatch):
    """A long probe is handed over at most every ``every_s`` at first, then every third of its run time: some
    ten times in a 70-second probe, not seventy (each one costs the page a redraw)."""
    from effdepth.probes import skip_tables

    clock = {"now": 0.0}
    monkeypatch.setattr(skip_tables.time, "perf_counter", lambda: clock["now"])
    sent = []
    partial = skip_tables.Partial(lambda result: sent.append(clock["now"]), [], every_s=1.0)
    monkeypatch.setattr(skip_tables, "frames", lambda acc, known_only=False: (
        pd.DataFrame({"variant": ["current"], "split": [0], "skipped": [0], "affected": [0], "value": [0.0]}),
        pd.DataFrame({"variant": ["current"], "split": [0], "skipped": [0], "value": [0.0]})))
    for step in range(700):  # a layer replayed every 0.1 s for 70 s
        clock["now"] = step * 0.1
        partial._maybe_send(None)
    assert 8 <= len(sent) <= 14 and sent[0] == pytest.approx(1.0)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(sent, sent[1:]))


def _frames_equal(got: engine.RunResult, want: engine.RunResult, names=("layer_token", "layer", "skip",
                                                                         "skip_output", "lens_topk", "ed")):
    for name in names:
        a = got.tables[name].sort_values(list(got.tables[name].columns[:-1])).reset_index(drop=True)
        b = want.tables[name].sort_values(list(want.tables[name].columns[:-1])).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)


def test_each_probe_is_handed_over_when_it_is_done(word_model):
    heard = []
    final = engine.run_probes(word_model, TEXT, on_result=heard.append)
    seen = [r for r in heard if "running" not in r.meta]  # the skip matrix so far, on a slow day
    assert [r.meta["probes"] for r in seen] == [["cosine"], ["cosine", "logit_lens"]]
    assert set(seen[0].tables["layer_token"]["metric"]) == set(cosine.METRICS)
    assert set(seen[1].tables["layer_token"]["metric"]) == set(cosine.METRICS) | set(logit_lens.METRICS)
    assert not len(seen[1].tables["skip"]) and len(final.tables["skip"])
    for partial in seen:  # every hand-over is a complete run of its own config: the store takes it
        assert partial.run_id == engine.run_key(word_model.spec.fingerprint, TEXT, "float32",
                                                engine.ProbeConfig(probes=tuple(partial.meta["probes"])), False)
    plain = engine.run_probes(word_model, TEXT)
    _frames_equal(final, plain)
    _frames_equal(seen[1], engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine", "logit_lens"))),
                  names=("layer_token", "layer", "lens_topk", "ed"))


def test_an_earlier_runs_probes_are_taken_not_recomputed(word_model, monkeypatch):
    first = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine", "skip")))
    calls, handle = _layer_calls(word_model)
    try:
        fresh = engine.run_probes(word_model, TEXT)
        fresh_forwards, calls["n"] = calls["n"], 0
        counted = {"cosine": 0, "skip": 0}
        real_contributions, real_skip = cosine.contributions, skip.skip_effects

        def count(name, fn):
            def wrapped(*args, **kwargs):
                counted[name] += 1
                return fn(*args, **kwargs)
            return wrapped

        monkeypatch.setattr(cosine, "contributions", count("cosine", real_contributions))
        monkeypatch.setattr(skip, "skip_effects", count("skip", real_skip))
        reused = engine.run_probes(word_model, TEXT, reuse=first)
    finally:
        handle.remove()
    assert counted == {"cosine": 0, "skip": 0}
    assert calls["n"] == 1 < fresh_forwards  # only the clean pass: the lens needs no forward, skip was taken
    _frames_equal(reused, fresh)
    assert reused.run_id == fresh.run_id
    assert any("taken from run " + first.run_id in note for note in reused.meta["notes"])


def test_a_probe_run_with_other_options_is_computed_again(word_model, monkeypatch):
    other_seed = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("skip",), seed=7))
    counted = {"skip": 0}
    real = skip.skip_effects

    def wrapped(*args, **kwargs):
        counted["skip"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(skip, "skip_effects", wrapped)
    engine.run_probes(word_model, TEXT, reuse=other_seed)  # default seed: the matrices differ
    assert counted["skip"] == 1
    other_text = engine.run_probes(word_model, TEXT + " w1", engine.ProbeConfig(probes=("skip",)))
    assert counted["skip"] == 2
    engine.run_probes(word_model, TEXT, reuse=other_text)  # another text: computed again
    assert counted["skip"] == 3


def test_a_stopped_run_keeps_its_probes_for_the_remaining_ones(word_model):
    def stop_in_skip(stage, frac=None):
        if stage.startswith("layer skipping"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        engine.run_probes(word_model, TEXT, progress=stop_in_skip)
    partial = info.value.partial_result
    assert partial.meta["probes"] == ["cosine", "logit_lens"]
    finished = engine.run_probes(word_model, TEXT, reuse=partial)
    _frames_equal(finished, engine.run_probes(word_model, TEXT))


def test_the_cli_says_each_probe_when_it_is_ready(word_model_dir, tmp_path, capsys):
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--cache",
                     str(tmp_path / "c.duckdb")]) == 0
    err = capsys.readouterr().err
    assert "ready     cosine" in err and "ready     logit_lens: " not in err and "ready     logit_lens [" in err
    assert err.index("ready     cosine") < err.index("ready     logit_lens")


def test_a_later_run_takes_the_stored_probes_and_computes_only_the_new_one(word_model, tmp_path, monkeypatch):
    """Per-probe caching: a run asking for one more probe on a stored input computes only that probe (the
    probe functions are counted), and its numbers are a fresh run's."""
    import contextlib

    from effdepth import compute, stages
    from effdepth.store import Store

    store = Store(tmp_path / "cache.duckdb")
    take = lambda _notify: contextlib.nullcontext(word_model)  # noqa: E731
    short = compute.Request(TEXT, config=engine.ProbeConfig(probes=("cosine", "logit_lens")))
    first, cached = compute.compute(store, short, take)
    assert not cached
    called = []
    for name in ("cosine", "logit_lens", "skip"):
        monkeypatch.setitem(stages.STAGES, name,
                            lambda *args, _stage=stages.STAGES[name], _name=name: (called.append(_name), _stage(*args)))
    longer = compute.Request(TEXT, config=engine.ProbeConfig(probes=("cosine", "logit_lens", "skip")))
    later, cached = compute.compute(store, longer, take)
    assert not cached and called == ["skip"]
    assert later.run_id != first.run_id and store.has(later.run_id) and store.has(first.run_id)
    assert any(f"cosine taken from run {first.run_id}" in note for note in later.meta["notes"])
    _frames_equal(later, engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine", "logit_lens",
                                                                                       "skip"))))
    called.clear()
    other_text = compute.Request(TEXT + " w0", config=longer.config)
    compute.compute(store, other_text, take)
    assert called == ["cosine", "logit_lens", "skip"]  # another text takes nothing
