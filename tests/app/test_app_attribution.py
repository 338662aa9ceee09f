"""Explore's benchmark-item picker and its erasure / integrated-gradient section (AppTest)."""

from __future__ import annotations

import pytest

from effdepth import app, charts, datasets, engine
from tests import app_support
from tests.app.test_app import EXPLORE, forbid_model_loads, marks, no_problems, page, specs, title, url


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "effdepth.duckdb"
    monkeypatch.setenv("EFFDEPTH_CACHE", str(path))
    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(tmp_path / "cache"))  # the erasure baseline file
    engine._BASELINES.clear()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-attr")
    model = str(app_support.build_tiny_dir(base / "tiny", seed=1))
    return {"model": model, "run": app_support.compute_run(model, app_support.TINY_PROMPT)}


def chart_frames(at, wanted_title: str) -> list:
    """The data frames Streamlit ships with a chart (Arrow IPC in the proto's datasets)."""
    import json

    import pyarrow as pa

    for element in at.get("vega_lite_chart"):
        if title(json.loads(element.proto.spec)) == wanted_title:
            return [pa.ipc.open_stream(d.data.data).read_pandas() for d in element.proto.datasets]
    raise AssertionError(f"no chart titled {wanted_title!r}")


def attr_chart(at, metric: str) -> dict:
    wanted = charts.METRICS[metric][0]
    found = [s for s in specs(at) if title(s) == wanted]
    assert found, f"no {metric} heatmap; have {[title(s) for s in specs(at)]}"
    return found[0]


def test_item_picker_sets_the_prompt_and_the_url(cache, tiny):
    app_support.fill_store(cache, [tiny["run"]])
    at = page(EXPLORE, model=tiny["model"], prompt=app_support.TINY_PROMPT)
    no_problems(at)
    at.selectbox(key="w_item_dataset").set_value("gsm8k").run()
    at.number_input(key="w_item_index").set_value(3).run()
    no_problems(at)
    item = datasets.get_item("gsm8k", 3)
    assert at.text_area(key="w_prompt").value == item.text
    query = url(at)
    assert query["item"] == "gsm8k:3" and query["prompt"] == item.text
    # A link reopens the item; editing the prompt text leaves the item behind.
    again = page(EXPLORE, **query)
    assert again.selectbox(key="w_item_dataset").value == "gsm8k"
    assert again.number_input(key="w_item_index").value == 3
    again.text_area(key="w_prompt").set_value(item.text + " extra").run()
    assert again.selectbox(key="w_item_dataset").value is None


def test_attribution_computes_on_click_and_reopens_from_cache(cache, tiny, monkeypatch):
    app_support.fill_store(cache, [tiny["run"]])
    at = page(EXPLORE, run=tiny["run"].run_id, ig_steps=16)
    no_problems(at)
    assert at.text_input(key="w_answer").value == ""
    # default answer span: the last word, shown as text (app.md escapes it)
    assert any(r"\'1889\.\'" in c.value for c in at.caption)
    at.button(key="run_attr").click().run()
    no_problems(at)
    assert any("Done" in s.label for s in at.status)
    heat = attr_chart(at, "erasure")
    assert "rect" in marks(heat)
    # The engine's numbers, through the store, are what the chart draws.
    store = app.open_store()
    config = app.attribution_config(" 1889.", 16)
    key, stored = app.find_cached(store, tiny["model"], app_support.TINY_PROMPT, "float32", False, config)
    assert stored is not None and len(stored.tables["erasure"]) > 0
    drawn = max(chart_frames(at, charts.METRICS["erasure"][0]), key=len)
    want = stored.tables["erasure"].sort_values(["depth", "pos"])
    got = drawn.sort_values(["layer", "pos"])
    assert list(got["layer"]) == list(want["depth"]) and list(got["pos"]) == list(want["pos"])
    assert got["value"].to_numpy() == pytest.approx(want["value"].to_numpy())
    # the cosine ED of the main run is drawn on it
    want = {v for v in (app.ed_value(tiny["run"].tables["ed"], "cosine", r)[0] for r in ("p1", "guarded"))
            if v is not None}
    assert set(charts.rule_positions(heat, "y")) == want
    # IG heatmap: diverging scale symmetric around 0, domain without position 0.
    at.radio(key="w_attr").set_value("ig_layer").run()
    no_problems(at)
    ig = attr_chart(at, "ig_layer")
    scale = next(v["encoding"]["color"]["scale"] for v in charts.iter_views(ig)
                 if charts.mark_type(v) == "rect" and "color" in v.get("encoding", {}))
    low, high = scale["domain"]
    frame = app.attribution_layer_token(stored)
    top = frame[(frame.metric == "ig_layer") & (frame.pos > 0)]["value"].abs().max()
    assert low == pytest.approx(-top) and high == pytest.approx(top)
    assert url(at)["attr"] == "ig_layer"
    # Reopened from its URL in demo mode: drawn from the cache, no model load.
    forbid_model_loads(monkeypatch)
    again = page(EXPLORE, **(url(at) | {"demo": "1"}))
    no_problems(again)
    assert attr_chart(again, "ig_layer")


def test_attribution_with_a_bad_answer_is_a_clear_error(cache, tiny):
    app_support.fill_store(cache, [tiny["run"]])
    at = page(EXPLORE, run=tiny["run"].run_id, answer="Eiffel", ig_steps=16)
    at.button(key="run_attr").click().run()
    assert not at.exception
    assert any("not the end of the prompt" in e.value for e in at.error)
