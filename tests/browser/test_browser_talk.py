"""Issue 12's pages in a real browser: the linear shortcut lens beside the logit lens on Explore, a sweep started
from the Difficulty page landing item by item, and the presenter view stepped through with the arrow keys.

Reuses the server, browser and page fixtures of tests/browser/conftest.py (a server of its own, same
pre-filled cache); the fitted lens goes to a temporary cache folder (``EFFDEPTH_CACHE_DIR``).
"""

from __future__ import annotations

import os

import pytest

from effdepth import app
from effdepth.store import Store
from tests.browser.support import _canvas_has_pixels, _url, _wait_charts, _wait_idle, pick_option, shoot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _lens_dir(tmp_path_factory):
    os.environ.setdefault("EFFDEPTH_CACHE_DIR", str(tmp_path_factory.mktemp("cache-dir")))


def test_shortcut_lens_side_by_side(server, page, runs):
    tiny = runs["tiny"]
    page.goto(_url(server, "Explore", run=tiny.run_id, lens_view="both"))
    button = page.get_by_role("button", name="Fit and run the linear shortcut lens")
    button.wait_for(timeout=60_000)
    button.click()
    page.locator(".st-key-heat_lens_shortcut .vega-embed").locator("canvas, svg.marks").first.wait_for(
        timeout=120_000)
    _wait_idle(page)
    assert _canvas_has_pixels(page, ".st-key-heat_lens_shortcut .vega-embed canvas, "
                                    ".st-key-heat_lens_shortcut svg.marks")
    page.locator(".st-key-heat_lens .vega-embed").locator("canvas, svg.marks").first.wait_for()
    body = page.inner_text("body")
    assert "Fitted on" in body and "held-out tokens" in body  # (the ED table is a canvas grid)
    page.get_by_text("Linear shortcut lens").first.scroll_into_view_if_needed()
    shoot(page, "explore-shortcut-lens")


def test_a_sweep_started_from_the_difficulty_page_lands_item_by_item(server, page, runs):
    page.goto(_url(server, "Difficulty"))
    page.get_by_text("Run a sweep from here").first.click()
    model = page.locator(".st-key-w_sweep_model input")
    model.wait_for()
    model.fill(runs["tiny_dir"])
    page.locator(".st-key-w_sweep_n input").fill("3")
    pick_option(page, "w_sweep_dataset", "hops (1–4 composition steps)")
    page.get_by_role("button", name="Start the sweep").click()
    page.wait_for_function("() => document.body.innerText.includes('3/3 stored')", timeout=180_000)
    _wait_idle(page)
    text = page.inner_text("body")
    assert "done" in text and "s/item computed" in text
    stored = Store(server["cache"]).runs()
    assert (stored["dataset"] == "hops").sum() == 3  # the sweep's items are in the server's cache
    _wait_charts(page, 2)
    shoot(page, "difficulty-sweep-from-the-page")


def test_present_with_the_arrow_keys(server, page, runs):
    tiny = runs["tiny"]
    slides = ",".join(f"{kind}:{tiny.run_id}" for kind in ("cosine", "lens", "skip"))
    page.goto(_url(server, "Present", slides=slides))
    _wait_charts(page, 1)
    page.get_by_text("1 / 3").wait_for()
    assert app.SLIDE_KINDS["cosine"] in page.inner_text("body")
    shoot(page, "present-slide-1")
    page.keyboard.press("ArrowRight")
    page.get_by_text("2 / 3").wait_for(timeout=30_000)
    page.wait_for_function("() => window.location.href.includes('slide=1')", timeout=30_000)
    _wait_idle(page)
    _wait_charts(page, 1)
    assert app.SLIDE_KINDS["lens"] in page.inner_text("body")
    shoot(page, "present-slide-2")
    page.keyboard.press("ArrowLeft")
    page.get_by_text("1 / 3").wait_for(timeout=30_000)
