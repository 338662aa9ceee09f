"""Explore's erasure / integrated-gradient heatmaps and the benchmark-item picker in a real browser.

Reuses the server, browser and page fixtures of tests/test_browser.py (same pre-filled cache); the
erasure + IG run of the default model is computed here (16 IG steps, ~20 s on 2 CPU cores) and put in
the server's cache before the page is opened.
"""

from __future__ import annotations

import pytest

from effdepth import app, datasets, engine, models
from effdepth.store import Store
from tests import app_support
from tests.browser.support import _canvas_has_pixels, _url, _wait_charts, _wait_idle, shoot

# slow: the server's cache holds a run of smollm2-135m (fixture runs), some tests load it themselves
pytestmark = [pytest.mark.browser, pytest.mark.slow]
IG_STEPS = 16


@pytest.fixture(scope="module")
def attribution_run(runs, tmp_path_factory):
    import os

    os.environ.setdefault("EFFDEPTH_CACHE_DIR", str(tmp_path_factory.mktemp("cache-dir")))
    loaded = models.load_model(models.DEFAULT_MODEL)
    config = app.attribution_config(engine.default_answer(app_support.PROMPT), IG_STEPS)
    return engine.run_probes(loaded, app_support.PROMPT, config)


def test_erasure_and_ig_heatmaps(server, page, runs, attribution_run):
    Store(server["cache"]).put(attribution_run)
    smol = runs["smol"]
    page.goto(_url(server, "Explore", run=smol.run_id, ig_steps=IG_STEPS))
    _wait_charts(page, 8)
    heading = page.get_by_text("Residual erasure and integrated gradients (probes E, F)")
    heading.scroll_into_view_if_needed()
    heat = page.locator(".st-key-heat_attr .vega-embed").locator("canvas, svg.marks").first
    heat.wait_for()
    assert "Erasure: row k erases h_k[t]" in page.inner_text("body")
    ed, _ = app.ed_value(smol.tables["ed"], "cosine", "p1")
    assert f"= {ed}" in page.inner_text(".st-key-heat_attr")  # the cosine ED rule label on the heatmap
    page.get_by_text("IG: layer output").first.click()
    page.wait_for_function("() => window.location.href.includes('attr=ig_layer')", timeout=60_000)
    _wait_idle(page)
    page.locator(".st-key-heat_attr .vega-embed").locator("canvas, svg.marks").first.wait_for()
    assert _canvas_has_pixels(page, ".st-key-heat_attr .vega-embed canvas, .st-key-heat_attr svg.marks")
    page.get_by_text("Residual erasure and integrated gradients (probes E, F)").scroll_into_view_if_needed()
    shoot(page, "explore_attribution")


def test_item_picker_opens_a_benchmark_item(server, page):
    item = datasets.get_item("gsm8k", 2)
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, item="gsm8k:2", prompt=item.text, demo=1))
    page.get_by_text("Not cached.").first.wait_for()  # demo mode: no compute, a clear message
    _wait_idle(page)
    # the selectbox shows its value in an <input> (or as text, depending on the Streamlit version)
    page.wait_for_function("""() => { const bar = document.querySelector('[data-testid=stSidebar]');
        return bar.innerText.includes('GSM8K (test)')
            || [...bar.querySelectorAll('input')].some(e => e.value === 'GSM8K (test)'); }""", timeout=60_000)
    box = page.get_by_role("textbox", name="Prompt (teacher-forced: question and answer together)")
    page.wait_for_function("(want) => [...document.querySelectorAll('textarea')].some(t => t.value === want)",
                           arg=item.text, timeout=60_000)  # the widget may fill a moment after the selectbox
    assert box.input_value() == item.text
    shoot(page, "explore_item_not_cached")
