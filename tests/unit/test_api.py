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
