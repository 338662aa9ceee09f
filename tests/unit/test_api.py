"""The notebook API: ``effdepth.probe`` gives the engine's numbers, uses the cache, draws charts."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

import effdepth
from effdepth import engine, models
from effdepth.errors import PromptError
from tests.unit.test_store import TEXT


def test_probe_returns_the_engines_run_with_tables_eds_and_charts(word_model_dir, word_model, tmp_path):
    run = effdepth.probe(str(word_model_dir), TEXT, cache=tmp_path / "c.duckdb", splits=(8, 12))
    direct = engine.run_probes(word_model, TEXT, engine.ProbeConfig(splits=(8, 12)))
    assert isinstance(run, effdepth.Run) and not run.from_cache and run.run_id == direct.run_id
    for name in ("layer_token", "layer", "skip", "skip_output"):
        pd.testing.assert_frame_equal(run.tables[name], direct.tables[name], check_exact=True, obj=name)
    assert set(run.ed["probe"]) >= {"cosine", "kl", "overlap", "skip"}
    for chart in (run.curve("cosine"), run.curve("kl"), run.heatmap("kl"), run.skip_matrix("future")):
        assert isinstance(chart, alt.TopLevelMixin) and chart.to_dict()  # a valid Vega-Lite spec
    assert "<table" in run._repr_html_() and run.meta["model_name"] in run._repr_html_()


def test_probe_reads_the_cache_without_loading(word_model_dir, tmp_path, monkeypatch):
    first = effdepth.probe(str(word_model_dir), TEXT, cache=tmp_path / "c.duckdb", probes=("cosine",))
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    again = effdepth.probe(str(word_model_dir), TEXT, cache=tmp_path / "c.duckdb", probes=("cosine",))
    assert again.from_cache and again.run_id == first.run_id
    assert (again.tables["layer"]["value"] - first.tables["layer"]["value"]).abs().max() < 1e-12


def test_probe_takes_a_loaded_model_and_no_cache(word_model):
    run = effdepth.probe(word_model, TEXT, cache=False, probes=("cosine", "logit_lens"))
    assert not run.from_cache and run.meta["probes"] == ["cosine", "logit_lens"] and not len(run.tables["skip"])


@pytest.mark.parametrize("kwargs, words", [({"probes": ("tuned",)}, "Unknown probe"),
                                           ({"probes": ("erasure",), "answer": "w99"}, "not the end of the prompt")])
def test_bad_input_is_refused_before_any_work(word_model_dir, kwargs, words, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(PromptError, match=words):
        effdepth.probe(str(word_model_dir), TEXT, cache=False, **kwargs)
    with pytest.raises(PromptError, match="not valid text"):
        effdepth.probe(str(word_model_dir), "caf\ud800", cache=False)


@pytest.mark.parametrize("kwargs, words", [
    ({"dtype": "int8"}, "dtype must be one of"), ({"max_tokens": 9}, "takes no option 'max_tokens'"),
    ({"ig_steps": "x", "probes": ("igrad",), "answer": "w19"}, "ig_steps is a whole number"),
    ({"cache": 123}, "cache is True .* or a file path, not 123"),
    ({"cache": "/nonexistent/dir/x.duckdb"}, "The cache folder /nonexistent/dir does not exist"),
    ({"chat_template": "no"}, "chat_template is True or False, not 'no'"),
    ({"text": 123}, "The prompt must be text \\(a str\\), not int")])
def test_hostile_api_input_is_one_sentence_before_any_work(word_model_dir, kwargs, words, monkeypatch):
    """Every bad argument is an EffdepthError sentence before any load (issue 19 §7: API types)."""
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    text = kwargs.pop("text", TEXT)
    with pytest.raises(PromptError, match=words):
        effdepth.probe(str(word_model_dir), text, **({"cache": False} | kwargs))
    assert not (__import__("pathlib").Path("/nonexistent/dir").exists())


def test_api_names_and_aliases_are_normalised_before_the_key(word_model_dir, tmp_path, monkeypatch):
    """probes="cosine" is one probe, probes=None the defaults, and a bf16 run is found as bfloat16."""
    cache = tmp_path / "c.duckdb"
    one = effdepth.probe(str(word_model_dir), TEXT, probes="cosine", dtype="bf16", cache=cache)
    assert one.meta["probes"] == ["cosine"] and one.meta["dtype"] == "bfloat16"
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    again = effdepth.probe(str(word_model_dir), TEXT, probes=["cosine"], dtype="bfloat16", cache=cache)
    assert again.from_cache and again.run_id == one.run_id
    assert engine.ProbeConfig(probes=None).probes == engine.DEFAULT_PROBES


def test_generate_and_sweep_are_the_cli_flows(word_model_dir, tmp_path, monkeypatch):
    """effdepth.generate: the model continues the text (cached), the probes read text + continuation, as
    `probe --generate`; effdepth.sweep: items stored one run each, found again without a load."""
    import json

    cache = tmp_path / "c.duckdb"
    run = effdepth.generate(str(word_model_dir), TEXT, 4, probes="cosine", cache=cache)
    assert run.generation.n_new_tokens == 4 and run.meta["prompt_tokens"] == 21
    assert run.meta["n_tokens"] == 25 and run.meta["prompt_text"].startswith(TEXT)
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps({"prompt": f"w{i} w{i + 1} w{i + 2}", "answer": f" w{i + 3}"})
                               for i in range(3)))
    done = effdepth.sweep(str(word_model_dir), jsonl=items, probes=("cosine", "logit_lens"), cache=cache)
    assert len(done.run_ids) == 3 and set(done.ed()["probe"]) >= {"cosine", "kl"}
    assert done.run(0).meta["n_tokens"] == 5
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    again = effdepth.generate(str(word_model_dir), TEXT, 4, probes="cosine", cache=cache)
    assert again.from_cache and again.run_id == run.run_id and again.generation.text == run.generation.text
    with pytest.raises(PromptError, match="one of the two"):
        effdepth.sweep(str(word_model_dir), cache=cache)
    with pytest.raises(PromptError, match="stores every item's run"):
        effdepth.sweep(str(word_model_dir), jsonl=items, cache=False)
