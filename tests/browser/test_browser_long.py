"""A long trace in the real browser (issue 18 §4–5): the EDR per segment along it, the overview strip, the
heatmaps one window at a time, the slider that moves them, and a trace read from a file."""

from __future__ import annotations

import json

import pytest

from effdepth import engine, models
from tests.app.test_long_trace_page import N_WORDS, _text
from tests.browser.conftest import serving
from tests.browser.support import _url, _wait_charts, _wait_idle, shoot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    from effdepth.store import Store
    from tests.unit.test_store import tiny_model_dir

    tmp = tmp_path_factory.mktemp("browser-long")
    directory = tiny_model_dir(tmp / "llama", max_positions=2048)
    loaded = models.load_model(str(directory))
    run = engine.run_probes(loaded, _text(), engine.ProbeConfig(probes=("cosine", "logit_lens")))
    Store(tmp / "effdepth.duckdb").put(run)
    with serving(tmp / "effdepth.duckdb", tmp) as running:
        yield running | {"run": run, "model": str(directory), "tmp": tmp}


def test_a_long_trace_reads_along_its_segments_and_one_window_at_a_time(long_server, page):
    page.goto(_url(long_server, "Explore", model=long_server["model"], run=long_server["run"].run_id))
    page.get_by_text("Along the trace").first.wait_for()
    _wait_charts(page, 4)
    _wait_idle(page)
    body = page.inner_text("body")
    assert "EDR per segment of 256 measured positions" in body and f"{N_WORDS + 1} tokens" in body
    shoot(page, "explore-long-trace")
    slider = page.locator(".st-key-w_win input[type=range]")  # the thumb (react-aria slider)
    slider.focus()
    page.keyboard.press("Home")  # the first window
    page.wait_for_function("() => new URLSearchParams(location.search).get('win') === '0'", timeout=60_000)
    _wait_idle(page)
    page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for()
    shoot(page, "explore-long-trace-first-window")


def test_a_trace_file_is_read_in_the_browser(long_server, page):
    trace = long_server["tmp"] / "trace.jsonl"
    trace.write_text(json.dumps({"prompt": "w1 w2 w3 ", "response": "w4 w5 w6"}) + "\n")
    page.goto(_url(long_server, "Explore", model=long_server["model"]))
    page.locator(".st-key-w_trace_file input[type=file]").set_input_files(str(trace))
    page.get_by_role("button", name="Use this text as the prompt").click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('prompt') === 'w1 w2 w3 w4 w5 w6'",
                           timeout=60_000)
    _wait_idle(page)
    assert "Estimated before the run" in page.inner_text("body")
    shoot(page, "explore-trace-file")
