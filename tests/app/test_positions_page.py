"""Explore with measured positions: the control, the summary strip, the shaded columns, the URL."""

from __future__ import annotations

from effdepth import app, charts
from tests.app.test_app import EXPLORE, by_title, errors, no_problems, page, url
from tests.unit.test_store import TEXT


def _band(spec: dict) -> list[dict]:
    return [v for v in charts.iter_views(spec) if charts.mark_type(v) == "rect"
            and v.get("mark", {}).get("color") == "#e8e8e8"]


def test_explore_measures_a_window(cache, word_model_dir):
    at = page(EXPLORE, model=str(word_model_dir), prompt=TEXT, positions="last:6")
    no_problems(at)
    assert at.text_input(key="w_positions").value == "last:6"
    at.button(key="run_probes").click().run()
    no_problems(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["measured"] == "6 of 21" and metrics["T (tokens)"] == "21"
    heat = by_title(at, "cosine(layer contribution")
    band = _band(heat)
    assert len(band) == 1  # the unmeasured columns, shaded (their count: tests/unit/test_positions.py)
    assert url(at)["positions"] == "last:6"
    full = page(EXPLORE, model=str(word_model_dir), prompt=TEXT)  # all positions: another run, not cached
    no_problems(full)
    assert full.button(key="run_probes").label == "Run probes"


def test_a_bad_window_is_said_and_a_bad_url_falls_back(cache, word_model_dir):
    at = page(EXPLORE, model=str(word_model_dir), prompt=TEXT)
    at.text_input(key="w_positions").set_value("first:3").run()
    assert "not one of all, last:N" in errors(at)
    assert app.state_from_query({"positions": "first:3"}).positions == "all"
    assert app.state_from_query({"positions": "Stride:4"}).positions == "stride:4"
