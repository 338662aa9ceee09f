"""Explore on a long trace (issue 18 §4): the EDR per segment along it, the overview strip, and heatmaps
that draw one window of positions at a time (a bounded payload), moved by a slider and kept in the URL."""

from __future__ import annotations

import pytest

from effdepth import app, charts, engine, models
from effdepth.store import Store
from tests import app_support
from tests.app.test_app import EXPLORE, errors, no_problems, page, specs, title, url

N_WORDS = 1499  # 1,500 tokens with <s>


@pytest.fixture(scope="module")
def long_dir(tmp_path_factory):
    from tests.unit.test_store import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("long-page") / "llama", max_positions=2048)


def _text() -> str:
    return " ".join(f"w{(7 * i) % 61}" for i in range(N_WORDS))


def _frames(at, prefix: str) -> list:
    """The data frames Streamlit ships with the first chart whose title starts with ``prefix``."""
    import json

    import pyarrow as pa

    for element in at.get("vega_lite_chart"):
        if title(json.loads(element.proto.spec)).startswith(prefix):
            return [pa.ipc.open_stream(d.data.data).read_pandas() for d in element.proto.datasets]
    raise AssertionError(f"no chart titled {prefix!r}")


def _cells(at, prefix: str) -> int:
    """The cells of the chart's largest dataset (the heatmap's own; the others are marks on it)."""
    return max(len(f) for f in _frames(at, prefix))


def test_a_long_trace_shows_ed_along_it_and_windows_its_heatmaps(cache, long_dir):
    loaded = models.load_model(str(long_dir))
    run = engine.run_probes(loaded, _text(), engine.ProbeConfig(probes=("cosine", "logit_lens")))
    Store(cache).put(run)
    at = page(EXPLORE, model=str(long_dir), prompt=_text())
    no_problems(at)
    assert not errors(at)
    titles = [title(s) for s in specs(at)]
    assert any("effective depth along the trace" in t for t in titles)
    assert any(t.startswith("the whole trace") for t in titles)
    heat = "cosine(layer contribution"
    width = app.window_width(3)
    assert _cells(at, heat) == width * 3 <= app.HEATMAP_CELLS  # layers × the window's positions
    assert _cells(at, "the whole trace") <= 600 * 3  # the overview is binned, whatever the length
    rows = max(_frames(at, "effective depth along the trace"), key=len)
    assert set(rows["start"]) == set(range(0, 1500, 256))  # the default 256 positions per segment
    slider = at.select_slider(key="w_win")
    assert slider.value == 1500 - width  # the last window first
    slider.set_value(0).run()
    no_problems(at)
    assert url(at)["win"] == "0"
    cells = max(_frames(at, heat), key=len)
    assert cells["pos"].min() == 0 and cells["pos"].max() == width - 1
    at.select_slider(key="w_seg").set_value(128).run()
    no_problems(at)
    assert url(at)["seg"] == "128"
    assert app.state_from_query({"seg": "100000", "win": "-9"}).seg == 512
    assert app.state_from_query({"win": "-9"}).win == -1
    spec = charts.segment_chart(app.trace_segments(run, 128), boundaries={"answer →": 1400}).to_dict()
    marked = [row for rows in spec["datasets"].values() for row in rows if row.get("what") == "answer →"]
    assert marked and {row["pos"] for row in marked} == {1400}


def test_a_trace_file_becomes_the_prompt(cache, long_dir):
    """A .jsonl line of prompt + response, or a .txt file, becomes the prompt with one click; a long one is not
    written into the URL; a file that is not UTF-8 or a line without the keys is said, naming the byte / line."""
    import json

    at = page(EXPLORE, model=str(long_dir))
    no_problems(at)
    lines = [json.dumps({"prompt": "w1 w2 ", "response": "w3 w4"}), json.dumps({"question": "w5", "answer": "w6"})]
    at.file_uploader(key="w_trace_file").set_value(("traces.jsonl", "\n".join(lines).encode(), "application/json"))
    at.run()
    no_problems(at)
    at.button(key="w_trace_use").click().run()
    no_problems(at)
    assert at.text_area(key="w_prompt").value == "w1 w2 w3 w4" and url(at)["prompt"] == "w1 w2 w3 w4"
    at.number_input(key="w_trace_line").set_value(2).run()
    assert 'Line 2 of traces.jsonl has no text under "prompt" and "response" (it has: answer, question)' in errors(at)
    at.file_uploader(key="w_trace_file").set_value(("bad.txt", b"w1 \xff w2", "text/plain")).run()
    assert "bad.txt is not UTF-8 text: the byte 0xff at offset 3" in errors(at)
    long_text = _text() + " " + _text()  # past app.URL_PROMPT_CHARS
    at.file_uploader(key="w_trace_file").set_value(("long.txt", long_text.encode(), "text/plain")).run()
    at.button(key="w_trace_use").click().run()
    no_problems(at)
    assert at.text_area(key="w_prompt").value == long_text
    assert "prompt" not in url(at)  # past app.URL_PROMPT_CHARS the link carries the run id, not the text
    captions = app_support.unescape(" ".join(c.value for c in at.caption))
    assert "Estimated before the run: About" in captions and "peak memory" in captions
    assert "past the model's context of 2,048 tokens" in captions


def test_the_trace_file_reader():
    from effdepth.errors import PromptError

    assert app.read_trace_file("t.txt", "\ufeffw1 w2".encode()).text == "w1 w2"
    read = app.read_trace_file("t.jsonl", b'\n{"prompt": "Q ", "response": "A"}\n\n{"prompt": "", "response": "B"}', 2)
    assert (read.text, read.prompt, read.n_lines) == ("B", "", 2)
    with pytest.raises(PromptError, match="pick one of 1 … 2, not 3"):
        app.read_trace_file("t.jsonl", b'{"prompt": "Q", "response": "A"}\n{"prompt": "", "response": "B"}', 3)
    with pytest.raises(PromptError, match="Line 1 of t.jsonl is not JSON"):
        app.read_trace_file("t.jsonl", b"{nope")
    with pytest.raises(PromptError, match="a trace file may have 4 MB"):
        app.read_trace_file("t.txt", b"w" * (5 * 2**20))


def test_compare_measures_the_positions_asked_for_and_windows_long_heatmaps(cache, long_dir, tmp_path):
    """Compare takes the measured positions (both runs), finds the runs of those positions, and draws the
    heatmaps and the Δ of a long trace one window at a time."""
    from tests.app.test_app import COMPARE
    from tests.unit.test_store import tiny_model_dir

    other = tiny_model_dir(tmp_path / "other", max_positions=2048, seed=5)
    config = engine.ProbeConfig(probes=("cosine", "logit_lens"), positions="from:100")
    runs = [engine.run_probes(models.load_model(str(d)), _text(), config) for d in (long_dir, other)]
    Store(cache).put(runs[0])
    Store(cache).put(runs[1])
    at = page(COMPARE, model=str(long_dir), model_b=str(other), prompt=_text(), positions="from:100")
    no_problems(at)
    assert at.text_input(key="w_positions").value == "from:100"
    assert _cells(at, "…/llama: cosine") == app.window_width(3) * 3  # the last window of each run
    assert max(len(f) for f in _frames(at, "Δ")) == app.window_width(3) * 3
