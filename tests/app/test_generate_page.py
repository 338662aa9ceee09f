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


def test_the_url_bounds_the_continuation():
    assert app.state_from_query({"generate": "100000"}).generate == max(app.GENERATE_CHOICES)
    assert app.state_from_query({"generate": "-5"}).generate == 0


def app_text(markdown: str) -> str:
    from tests.app_support import unescape

    return unescape(markdown)
