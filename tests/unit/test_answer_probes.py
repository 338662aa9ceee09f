"""Residual erasure and integrated gradients through the engine, the store, the CLI and sweeps.

The probe maths is checked against slow references in test_erasure_igrad.py; here: the engine feeds the
probes the right inputs (answer span, P2's erasure baseline), the tables survive the store, the run keys
of the default probes did not change, and bad answer spans get clear errors.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from effdepth import cli, datasets, engine, models, sweeps
from effdepth.capture import Replayer, capture
from effdepth.errors import PromptError
from effdepth.probes import erasure, igrad
from effdepth.store import Store
from tests.unit.test_store import TEXT, assert_same_run, tiny_model_dir

ANSWER = " w18 w19"  # the last 2 tokens of TEXT


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def loaded(model_dir, tmp_path_factory):
    from effdepth.models import load_model

    return load_model(str(model_dir))


@pytest.fixture(autouse=True)
def private_cache_dir(tmp_path, monkeypatch):
    """The erasure baseline file goes to a private cache dir, never the user's."""
    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(tmp_path / "cache"))
    engine._BASELINES.clear()


CONFIG = engine.ProbeConfig(probes=("erasure", "igrad"), answer=ANSWER, ig_steps=8,
                            ig_parts=("layer", "mlp"))


def test_answer_length_counts_answer_tokens(loaded):
    assert engine.answer_length(loaded, TEXT, ANSWER, False) == 2
    assert engine.answer_length(loaded, TEXT, " w19", False) == 1
    assert engine.default_answer(TEXT) == "w19"
    assert engine.answer_length(loaded, TEXT + " \n", "w18 w19 ", False) == 2  # whitespace is ignored
    assert engine.ProbeConfig(probes=("erasure",), answer=" w19 ").answer == "w19"
    with pytest.raises(PromptError, match="not the end of the prompt"):
        engine.answer_length(loaded, TEXT, " w3", False)
    with pytest.raises(PromptError, match="give the answer text"):
        engine.answer_length(loaded, TEXT, "  ", False)
    with pytest.raises(PromptError, match="chat template"):
        engine.answer_length(loaded, TEXT, ANSWER, True)
    assert engine.answer_length(loaded, TEXT, TEXT, False) == 20  # all but the BOS <s> it adds


def test_erasure_baseline_is_p2_mean_over_gsm8k(loaded):
    """Mean h_k over all positions of the first 10 GSM8K items (cut to the tiny model's context)."""
    total, count = 0, 0
    for item in datasets.items("gsm8k", n=10):
        ids = loaded.tokenizer(item.text)["input_ids"][: loaded.max_context]
        trace = capture(loaded.model, torch.tensor([ids]))
        total = total + trace.resid.double().sum(1)
        count += len(ids)
    want = (total / count).float()
    got = engine.erasure_baseline(loaded)
    torch.testing.assert_close(got, want)
    files = list((models.cache_dir() / "baselines").glob("*.safetensors"))
    assert len(files) == 1
    engine._BASELINES.clear()  # from the file this time
    torch.testing.assert_close(engine.erasure_baseline(loaded), want)


def test_run_probes_matches_direct_probe_calls(loaded):
    result = engine.run_probes(loaded, TEXT, CONFIG)
    ids = engine.tokenize(loaded, TEXT)
    replayer = Replayer(loaded.model, ids[None])
    want_erasure = erasure.residual_erasure(replayer, engine.erasure_baseline(loaded), 2)
    want_ig = igrad.integrated_gradients(replayer, 2, parts=("layer", "mlp"), n_steps=8)
    pd.testing.assert_frame_equal(result.tables["erasure"], want_erasure)
    pd.testing.assert_frame_equal(result.tables["igrad"], want_ig)
    n_layers, n_tokens = loaded.n_layers, len(ids)
    assert result.tables["erasure"].shape[0] == (n_layers + 1) * n_tokens
    assert set(result.tables["igrad"]["part"]) == {"layer", "mlp"}
    # Erasing after the last answer-predicting position (T-2) changes nothing, by causality.
    last = result.tables["erasure"].query("pos == @n_tokens - 1")
    assert (last["value"] == 0).all()
    assert any("last 2 tokens" in note for note in result.meta["notes"])
    assert set(result.meta["timings"]) >= {"erasure", "igrad"}


def test_store_round_trip_and_old_results(loaded, tmp_path):
    result = engine.run_probes(loaded, TEXT, CONFIG)
    store = Store(tmp_path / "c.duckdb")
    store.put(result)
    assert_same_run(store.get(result.run_id), result)
    # A result built without the new tables (older code) gets them empty, with their columns.
    old = engine.RunResult(meta=result.meta, tables={k: v for k, v in result.tables.items()
                                                     if k not in ("erasure", "igrad")})
    assert list(old.tables["igrad"].columns) == ["part", "layer", "pos", "value"]
    assert len(old.tables["erasure"]) == 0


def test_default_probe_keys_are_unchanged():
    """Adding the opt-in probes must not invalidate cached runs of the default probes."""
    config = engine.ProbeConfig()
    assert config.probes == ("cosine", "logit_lens", "skip")
    assert set(config.as_dict()) == {"probes", "splits", "seed", "skip_variants"}
    assert engine.run_key("fp", "hello", "float32", config, False) == engine.run_key(
        "fp", "hello", "float32", engine.ProbeConfig(answer="ignored", ig_steps=3), False)
    assert "answer" in engine.ProbeConfig(probes=("igrad",), answer="x").as_dict()


@pytest.mark.parametrize("kwargs, match", [
    ({"ig_parts": ("heads",)}, "Unknown IG part"),
    ({"ig_steps": 0}, "at least 1 step"),
    ({"skip_variants": ("sideways",)}, "Unknown skip variant"),
    ({"probes": ("cosine", "tuned_lens")}, "Unknown probe"),
])
def test_bad_config_is_a_prompt_error(kwargs, match):
    with pytest.raises(PromptError, match=match):
        engine.ProbeConfig(**kwargs)


def test_engine_without_answer_is_a_clear_error(loaded):
    with pytest.raises(PromptError, match="answer"):
        engine.run_probes(loaded, TEXT, engine.ProbeConfig(probes=("erasure",)))


def test_cli_probe_writes_erasure_and_ig(model_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    code = cli.main(["probe", "--cache", str(tmp_path / "c.duckdb"), "--model", str(model_dir), "--text", TEXT,
                     "--probes", "erasure,igrad", "--ig-steps", "4", "--answer", ANSWER, "-q",
                     "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    n_tokens = len(doc["tokens"])
    erased = np.array(doc["erasure"])
    assert erased.shape == (doc["model"]["n_layers"] + 1, n_tokens)
    assert np.array(doc["igrad"]["layer"]).shape == (doc["model"]["n_layers"], n_tokens)
    assert np.all(erased[:, -1] == 0)
    # A wrong answer span: a clear message, exit code 2, nothing stored.
    code = cli.main(["probe", "--cache", str(tmp_path / "c.duckdb"), "--model", str(model_dir), "--text", TEXT,
                     "--probes", "erasure", "--answer", "w3", "-q"])
    assert code == 2
    assert "not the end of the prompt" in capsys.readouterr().err


def test_sweep_gives_each_item_its_answer(loaded, tmp_path):
    items = [datasets.Item("custom", i, f"w{i} w{i + 1} w{i + 2}", f" w{i + 3}") for i in range(3)]
    config = engine.ProbeConfig(probes=("erasure",))
    store = Store(tmp_path / "s.duckdb")
    ids = sweeps.sweep(str(loaded.spec.path), items, store, config, load=lambda *a, **k: loaded,
                      resolve=lambda name: loaded.spec, progress=lambda *a: None)
    assert len(ids) == 3 and len(set(ids)) == 3
    for rid, item in zip(ids, items):
        meta = store.meta(rid)
        assert meta["probe_config"]["answer"] == item.answer.strip()
        assert meta["item_index"] == item.index
        frame = store.table(rid, "erasure")
        assert len(frame) == (loaded.n_layers + 1) * meta["n_tokens"]
    # Resuming finds every item without loading anything.
    assert sweeps.sweep("x", items, store, config, load=None, resolve=lambda name: loaded.spec,
                       progress=lambda *a: None) == ids
