"""Generate, then probe (issue 11 §3): the continuation is the model's own greedy one, cached, and the
probes read prompt + continuation with the boundary recorded and drawn."""

from __future__ import annotations

import json

import pytest
import torch

from effdepth import charts, cli, engine, models
from effdepth import generation as generate
from effdepth.errors import PromptError
from tests.unit.test_store import TEXT


def test_greedy_continuation_is_model_generate(word_model):
    settings = generate.settings_for(6)
    heard = []
    got = generate.continue_text(word_model, TEXT, settings, on_text=heard.append)
    ids = engine.tokenize(word_model, TEXT)
    want = word_model.model.generate(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None],
                                     max_new_tokens=6, do_sample=False, pad_token_id=0)[0, ids.numel():].tolist()
    assert list(got.token_ids) == want and got.n_new_tokens == 6
    assert got.prompt_tokens == ids.numel() and got.prompt == TEXT
    assert len(heard) == 6 and heard[-1].strip() == got.text.strip()  # streamed token by token
    assert got.exact  # the probes' tokenisation of prompt + continuation gives back the same ids
    assert engine.tokenize(word_model, got.full_text).tolist() == ids.tolist() + want


def test_a_sampled_continuation_follows_its_seed(word_model):
    first = generate.continue_text(word_model, TEXT, generate.settings_for(8, seed=5, temperature=1.5))
    again = generate.continue_text(word_model, TEXT, generate.settings_for(8, seed=5, temperature=1.5))
    assert first.token_ids == again.token_ids and first.settings["sample"] and first.settings["seed"] == 5


@pytest.mark.parametrize("n, seed, temperature", [(0, None, 1.0), (generate.MAX_NEW_TOKENS + 1, None, 1.0),
                                                  (4, 1, 0.0)])
def test_bad_settings_are_refused(n, seed, temperature):
    with pytest.raises(PromptError):
        generate.settings_for(n, seed, temperature)


def test_continuations_are_cached_by_model_text_and_settings(word_model, tmp_path):
    settings = generate.settings_for(4)
    made = generate.continue_text(word_model, TEXT, settings)
    key = generate.cache_key(word_model.spec.fingerprint, "float32", TEXT, settings)
    assert generate.cached(tmp_path, key) is None
    generate.save(tmp_path, key, made)
    assert generate.cached(tmp_path, key) == made
    assert key != generate.cache_key(word_model.spec.fingerprint, "float32", TEXT, generate.settings_for(5))
    assert key != generate.cache_key(word_model.spec.fingerprint, "bfloat16", TEXT, settings)


def test_the_cli_generates_then_probes_and_reads_the_continuation_from_the_cache(word_model_dir, tmp_path,
                                                                                monkeypatch):
    out, cache = tmp_path / "run.json", str(tmp_path / "c.duckdb")
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--generate", "5", "--cache", cache,
                     "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    generation = doc["generation"]
    assert generation["n_new_tokens"] == 5 and len(generation["token_ids"]) == 5
    assert generation["settings"]["sample"] is False and doc["prompt_tokens"] == 21
    assert doc["prompt"]["n_tokens"] == 21 + 5 and doc["prompt"]["text"] == TEXT + generation["text"]
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded again"))
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--generate", "5", "--cache", cache,
                     "--json", str(out), "-q"]) == 0
    again = json.loads(out.read_text())
    assert again["from_cache"] and again["generation"] == generation


def test_the_boundary_is_in_the_heatmaps_data(word_model):
    run = engine.run_probes(word_model, TEXT)
    spec = charts.layer_token_heatmap(run.tables["layer_token"], run.tables["tokens"], "cos_layer",
                                      run.tables["ed"], boundary=12).to_dict()
    rules = [v for v in charts.iter_views(spec) if charts.mark_type(v) == "rule"
             and v.get("encoding", {}).get("x", {}).get("bandPosition") == 0]
    assert len(rules) == 1
    rows = spec["datasets"][rules[0]["data"]["name"]]
    assert rows == [{"label": rows[0]["label"], "pos": 12, "what": "model's continuation →"}]
    assert rows[0]["label"].startswith("12:")
    plain = charts.layer_token_heatmap(run.tables["layer_token"], run.tables["tokens"], "cos_layer").to_dict()
    assert not [v for v in charts.iter_views(plain) if v.get("encoding", {}).get("x", {}).get("bandPosition") == 0]
