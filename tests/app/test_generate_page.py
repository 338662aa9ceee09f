"""Explore's "let the model continue": the model writes, the probes read prompt + continuation, the charts
mark the boundary, and the link reopens the same view from the cache."""

from __future__ import annotations

from effdepth import app, charts
from tests.app.test_app import EXPLORE, by_title, no_problems, page, url
from tests.unit.test_store import TEXT


def test_explore_continues_then_probes(cache, word_model_dir):
    at = page(EXPLORE, model=str(word_model_dir), prompt=TEXT, generate=16)
    no_problems(at)
    assert at.select_slider(key="w_generate").value == 16
    at.button(key="run_probes").click().run()
    no_problems(at)
    captions = " ".join(c.value for c in at.caption)
    assert "The model wrote the last 16 tokens itself (greedy), from position 21" in app_text(captions)
    heat = by_title(at, "cosine(layer contribution")
    boundaries = [v for v in charts.iter_views(heat) if v.get("encoding", {}).get("x", {}).get("bandPosition") == 0]
    assert len(boundaries) == 1
    query = url(at)
    assert query["generate"] == "16" and query["run"]
    again = page(EXPLORE, model=str(word_model_dir), prompt=TEXT, generate=16)  # a fresh session: from the cache
    no_problems(again)
    assert {m.label: m.value for m in again.metric}["compute"] == "cached"
    assert {m.label: m.value for m in again.metric}["T (tokens)"] == "37"
    by_id = page(EXPLORE, run=query["run"])  # the run's link alone: the inputs say prompt + "continue by 16"
    no_problems(by_id)
    assert by_id.select_slider(key="w_generate").value == 16
    assert [t.value for t in by_id.text_area] == [TEXT]


def test_the_url_bounds_the_continuation():
    assert app.state_from_query({"generate": "100000"}).generate == max(app.GENERATE_CHOICES)
    assert app.state_from_query({"generate": "-5"}).generate == 0


def app_text(markdown: str) -> str:
    from tests.app_support import unescape

    return unescape(markdown)


def test_compare_a_thinks_both_read(cache, word_model_dir, tmp_path):
    """Compare with a continuation: model A writes, then A and B are both probed on prompt + A's text (B's run
    says who wrote it, and where it starts: the two share a tokenizer)."""
    from tests.app.test_app import COMPARE
    from tests.unit.test_store import tiny_model_dir

    other = str(tiny_model_dir(tmp_path / "other", seed=5))
    at = page(COMPARE, model=str(word_model_dir), model_b=other, prompt=TEXT, generate=16)
    no_problems(at)
    infos = app_text(" ".join(i.value for i in at.info))
    assert "Model B reads model A's continuation: continue with model A first." in infos
    assert [b.label for b in at.button if b.key == "compute_a"] == ["Continue with A, then compute it"]
    at.button(key="compute_a").click().run()
    no_problems(at)
    assert "Both models read the prompt followed by what" in app_text(" ".join(c.value for c in at.caption))
    written = [c.value for c in at.code if not c.value.startswith("effdepth linmap")]  # (the linear-map command)
    assert len(written) == 1 and written[0] and TEXT not in written[0]  # the continuation alone, as text
    at.button(key="compute_b").click().run()
    no_problems(at)
    query = url(at)
    from effdepth.store import Store

    store = Store(cache)
    run_a, run_b = store.get(query["run"]), store.get(query["run_b"])
    assert run_a.meta["prompt_text"] == run_b.meta["prompt_text"] == TEXT + written[0]
    assert run_b.meta["generation"]["written_by"] == str(word_model_dir)
    assert run_a.meta["prompt_tokens"] == run_b.meta["prompt_tokens"] == 21
    assert run_a.meta["model_name"] != run_b.meta["model_name"]


def test_explore_samples_a_continuation_with_a_seed(cache, word_model_dir):
    at = page(EXPLORE, model=str(word_model_dir), prompt=TEXT, generate=16, sample_seed=7)
    no_problems(at)
    assert at.number_input(key="w_sample_seed").value == 7 and at.slider(key="w_temperature").value == 1.0
    at.button(key="run_probes").click().run()
    no_problems(at)
    assert "(sampled, seed 7)" in app_text(" ".join(c.value for c in at.caption))
    from effdepth.store import Store

    run = Store(cache).get(url(at)["run"])
    assert run.meta["generation"]["settings"] == {"max_new_tokens": 16, "sample": True, "seed": 7,
                                                  "temperature": 1.0, "chat_template": False}
    by_id = page(EXPLORE, run=run.run_id)  # the link alone gives back the seed
    no_problems(by_id)
    assert by_id.number_input(key="w_sample_seed").value == 7
    assert app.state_from_query({"sample_seed": "-3", "temperature": "9"}).sample_seed == 0
    assert app.state_from_query({"temperature": "9"}).temperature == 2.0
    assert app.state_from_query({"temperature": "nan"}).temperature == 1.0
