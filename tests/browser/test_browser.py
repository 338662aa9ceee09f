"""The real app in a real browser: `streamlit run app.py` + Playwright driving Debian's chromium.

The server gets its own DuckDB cache (``EFFDEPTH_CACHE``), pre-filled through the engine with one
prompt on two models: the default embedded model (smollm2-135m) and a tiny random Llama saved as a
local directory. Each page is opened, the charts are waited for (Vega renders large heatmaps to a
<canvas>, small charts to <svg>, both inside ``.vega-embed``), the ED marker is checked in the page
text, a prompt is typed and probed, a Compare view of the two cached runs is opened, a Runs export is
downloaded, and a full-page screenshot of every page is saved under tests/artifacts/.

Timings printed (run pytest with -s to see them): a cached Explore view from navigation to its
heatmap drawn, and a cold probe of a 64-token prompt on the default model (click → heatmap drawn).
"""

from __future__ import annotations

import io
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from effdepth import app, models
from tests.browser.support import (
    CHART,
    PROMPT_64,
    TIMINGS,
    _canvas_has_pixels,
    _url,
    _wait_charts,
    _wait_idle,
    shoot,
)

# slow: the server's cache holds a run of smollm2-135m (fixture runs), some tests load it themselves
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# ---------------------------------------------------------------------------------------------- tests


def test_home(server, page):
    page.goto(_url(server))
    page.get_by_text("effective depth ratio").first.wait_for()
    page.get_by_role("button", name="Explore one model × one prompt").wait_for()
    page.get_by_text("Not in the cache yet").first.wait_for()  # the default prompt is not cached here
    shoot(page, "home")


def test_cached_explore_view(server, page, runs):
    smol = runs["smol"]
    start = time.perf_counter()
    page.goto(_url(server, "Explore", run=smol.run_id))
    page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for()
    TIMINGS["cached Explore: navigation → heatmap drawn"] = (time.perf_counter() - start) * 1000
    print(f"\ncached Explore view, navigation → first heatmap drawn: "
          f"{TIMINGS['cached Explore: navigation → heatmap drawn']:.0f} ms")
    _wait_charts(page, 8)
    # the same view again in this tab (frontend already loaded, browser cache warm)
    start = time.perf_counter()
    page.goto(_url(server, "Explore", run=smol.run_id, lens="overlap"))
    page.locator(".st-key-heat_lens .vega-embed").locator("canvas, svg.marks").first.wait_for()
    TIMINGS["cached Explore again (warm tab): navigation → heatmap drawn"] = (time.perf_counter() - start) * 1000
    _wait_charts(page, 8)
    assert _canvas_has_pixels(page, ".st-key-heat_contrib .vega-embed canvas, .st-key-heat_contrib svg.marks")
    ed, edr = app.ed_value(smol.tables["ed"], "cosine", "p1")
    # the script may still be streaming the last elements (the noise-floor column) under load
    page.get_by_text("Noise floor", exact=True).first.wait_for(timeout=60_000)
    body = page.inner_text("body")
    assert f"ED = {ed}, EDR = {edr:.2f}" in body  # the caption under the cosine curve
    assert "Noise floor" in body and "L (layers)" in body
    # clicking a heatmap cell selects that token for the logit-lens read-out (URL pos changes)
    heat = page.locator(".st-key-heat_contrib .vega-embed")
    heat.scroll_into_view_if_needed()
    box = heat.bounding_box()
    before = page.url
    page.mouse.click(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.3)
    page.wait_for_function("(u) => window.location.href !== u && window.location.href.includes('pos=')",
                           arg=before, timeout=30_000)
    pos = int(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["pos"][0])
    assert 0 <= pos < smol.meta["n_tokens"] - 1
    page.get_by_text(f"logit lens at position {pos}:").first.wait_for()
    _wait_charts(page, 8)
    shoot(page, "explore")


def test_in_app_navigation_to_a_cached_explore_view(server, page, runs):
    """What a user does: from a loaded page, click Explore in the sidebar; time until the heatmap is drawn."""
    smol = runs["smol"]
    page.goto(_url(server, "Runs", run=smol.run_id))
    _wait_idle(page)
    link = page.locator("[data-testid=stSidebar] a", has_text="Explore").first
    link.wait_for()
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        link.click()
        page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for()
        timings.append((time.perf_counter() - start) * 1000)
        assert "run=" + smol.run_id in page.url
        page.locator("[data-testid=stSidebar] a", has_text="Runs").first.click()
        page.locator(".st-key-heat_contrib").first.wait_for(state="detached")
        _wait_idle(page)
    TIMINGS["cached Explore via the sidebar (best of 3): click → heatmap drawn"] = min(timings)
    print(f"\nin-app navigation → cached Explore heatmap drawn: {', '.join(f'{t:.0f}' for t in timings)} ms")


def test_probe_a_typed_prompt_cold(server, page):
    """Type a 64-token prompt, click Run probes on the default model (not loaded yet): time to heatmap."""
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt="Hello"))
    box = page.get_by_role("textbox", name="Prompt (teacher-forced: question and answer together)")
    box.wait_for()
    box.fill(PROMPT_64)
    box.press("Control+Enter")
    # the rerun with the new prompt redraws the button: a click on the old one can be lost
    page.wait_for_function("() => decodeURIComponent(window.location.href.replace(/\\+/g, ' ')).includes('= 12')",
                           timeout=120_000)
    _wait_idle(page)
    run = page.get_by_role("button", name="Run probes")
    run.wait_for(timeout=60_000)
    start = time.perf_counter()
    run.click()
    page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for(timeout=600_000)
    TIMINGS["cold 64-token probe on smollm2-135m: click → heatmap drawn"] = (time.perf_counter() - start) * 1000
    print(f"\ncold probe, 64 tokens, {models.DEFAULT_MODEL}: click → first heatmap drawn: "
          f"{TIMINGS['cold 64-token probe on smollm2-135m: click → heatmap drawn']:.0f} ms")
    _wait_charts(page, 8)
    assert "64" in page.locator("[data-testid=stMetric]").nth(1).inner_text()  # T (tokens)
    assert "Done in" in page.inner_text("body")
    stored = [r for r in app.open_store(server["cache"]).runs().itertuples() if r.prompt_text == PROMPT_64]
    assert stored and stored[0].n_tokens == 64
    print(f"engine time for it (forward + probes, no model load): {stored[0].total_seconds:.1f} s")


def test_results_appear_probe_by_probe(server, page):
    """With the model loaded, the first probes' charts are drawn while the layer-skip probe still runs, and
    the skip matrix is drawn as its layers fill, before the run ends."""
    prompt = PROMPT_64 + " Then 12 + 5 = 17, and 17 - 4 = 13."
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt="A short warm-up, so the model is held."))
    page.get_by_role("button", name="Run probes").click(timeout=120_000)
    page.get_by_text("Done in").first.wait_for(timeout=300_000)  # the model is loaded now, whatever ran before
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt=prompt))
    run = page.get_by_role("button", name="Run probes")
    run.wait_for(timeout=120_000)
    _wait_idle(page)
    start = time.perf_counter()
    run.click()
    page.locator(CHART).first.wait_for(timeout=300_000)
    first = (time.perf_counter() - start) * 1000
    page.get_by_text("Logit lens (probe B)").first.wait_for(timeout=300_000)
    lens = (time.perf_counter() - start) * 1000
    assert "Done in" not in page.inner_text("body"), "the lens section only came with the whole run"
    shoot(page, "explore-in-progress")
    page.get_by_text("Filling in as the replay moves up the layers").first.wait_for(timeout=300_000)
    filling = (time.perf_counter() - start) * 1000
    assert "Done in" not in page.inner_text("body"), "the skip matrix only came with the whole run"
    page.wait_for_timeout(300)
    shoot(page, "explore-skip-filling")
    page.get_by_text("Done in").first.wait_for(timeout=600_000)
    total = (time.perf_counter() - start) * 1000
    TIMINGS["probe by probe (model loaded): click → first chart"] = first
    TIMINGS["probe by probe: click → lens section"] = lens
    TIMINGS["probe by probe: click → skip matrix filling in"] = filling
    TIMINGS["probe by probe: click → whole run done"] = total
    print(f"\nprobe by probe, {models.DEFAULT_MODEL} loaded: first chart {first:.0f} ms, lens section {lens:.0f} ms, "
          f"whole run {total:.0f} ms (first chart at {first / total:.0%} of the run)")
    _wait_charts(page, 8)
    shoot(page, "explore-probe-by-probe")


def test_compare_a_thinks_both_read(server, page):
    """Model A continues the prompt, then A and B are probed on prompt + A's text; the continuation is shown
    as text and its boundary is marked on both (here B is the same model in bfloat16: one tokenizer)."""
    page.goto(_url(server, "Compare", model=models.DEFAULT_MODEL, model_b=models.DEFAULT_MODEL, dtype_b="bfloat16",
                   prompt="The capital of France is", generate=16))
    page.get_by_text("Model B reads model A's continuation").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Continue with A, then compute it").click(timeout=60_000)
    page.get_by_text("Both models read the prompt followed by what").first.wait_for(timeout=300_000)
    page.get_by_role("button", name="Compute B").click(timeout=120_000)
    _wait_charts(page, 4, timeout=300_000)
    _wait_idle(page)
    body = page.inner_text("body")
    assert "Both models read the prompt followed by what" in body and "relative depth" in body
    shoot(page, "compare-a-thinks-both-read")


def test_compare_two_cached_runs(server, page, runs):
    page.goto(_url(server, "Compare", run=runs["smol"].run_id, run_b=runs["tiny"].run_id))
    _wait_charts(page, 6)
    body = page.inner_text("body")
    assert "relative depth" in body and "No Δ heatmap" in body
    assert page.locator("[data-testid=stDataFrame]").count() >= 1  # the EDR table
    shoot(page, "compare")


def test_runs_export_and_reopen(server, page, runs, tmp_path):
    page.goto(_url(server, "Runs"))
    grid = page.locator("[data-testid=stDataFrame]").first
    grid.wait_for()
    page.wait_for_timeout(1000)
    shoot(page, "runs")
    # tick the first row's checkbox (the grid is a canvas: click its selection column)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)
    csv_button = page.get_by_role("button", name="Tables as CSV (zip)")
    csv_button.wait_for(timeout=30_000)
    with page.expect_download(timeout=60_000) as info:
        csv_button.click()
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    names = zipfile.ZipFile(io.BytesIO(target.read_bytes())).namelist()
    run_id = names[0].split("/")[0]
    assert {f"{run_id}/meta.csv", f"{run_id}/layer_token.csv", f"{run_id}/ed.csv"} <= set(names)
    assert run_id in {runs["smol"].run_id, runs["tiny"].run_id} or len(run_id) == 16
    shoot(page, "runs-selected")
    page.get_by_role("link", name="Open in Explore").click()
    page.wait_for_url("**/Explore?**")
    assert f"run={run_id}" in page.url
    page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for()


def _svg_texts(page, scope: str) -> list[str]:
    return page.evaluate("(sel) => [...document.querySelectorAll(sel + ' svg.marks text')].map(t => t.textContent)",
                         scope)


def test_difficulty_page(server, page, runs):
    """Difficulty on the pre-filled sweeps: every chart drawn as SVG, the ED legends are the backend's, and a
    click on an item's point offers the link that opens that item's run in Explore."""
    from effdepth import app, charts, sweeps

    page.goto(_url(server, "Difficulty", model=runs["tiny_dir"]))
    page.locator(".st-key-diff_items svg.marks").first.wait_for(timeout=180_000)
    _wait_charts(page, 10)
    assert page.locator(".vega-embed svg.marks").count() >= 10
    body = page.inner_text("body")
    assert "Effective depth per bin" in body and "Depth score (layer skipping, P2)" in body
    store = app.open_store(server["cache"])
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    item_set = sweeps.load_items(store, sweeps.pick_set(sets, runs["tiny_dir"], "float32", False))
    agg = sweeps.aggregate_by_bin(item_set, "token", n_boot=50)  # point EDs do not depend on the resamples
    legend = charts.ed_legend_labels(sweeps.probe_eds(agg, "kl"), item_set.bins)
    texts = _svg_texts(page, "[data-testid=stMain]")
    assert set(legend.values()) <= set(texts), (legend, texts)
    assert {"arith", "story"} <= set(_svg_texts(page, ".st-key-diff_items"))
    points = page.locator(".st-key-diff_items svg .mark-symbol path")
    assert points.count() >= 3
    point = points.first
    point.scroll_into_view_if_needed()
    point.click()
    link = page.get_by_role("link", name="Open this item in Explore")
    link.wait_for(timeout=60_000)
    assert "item=" in page.url
    _wait_idle(page)
    _wait_charts(page, 10)
    shoot(page, "difficulty")
    link.click()
    page.wait_for_url("**/Explore?**")
    run_id = urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["run"][0]
    assert any(run_id in ids for ids in item_set.items["run_ids"])
    page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for()


def test_compare_items_mode(server, page, runs):
    page.goto(_url(server, "Compare", cmp_mode="items", model=runs["tiny_dir"], model_b=runs["tiny_8"]))
    page.get_by_text("Effective depth over the shared items").first.wait_for(timeout=180_000)
    _wait_charts(page, 5)
    assert page.locator(".vega-embed svg.marks").count() >= 5
    body = page.inner_text("body")
    assert "Aggregate curves on relative depth" in body and "3 items" in body
    texts = _svg_texts(page, "[data-testid=stMain]")
    assert "relative depth  layer / L" in " ".join(texts)
    shoot(page, "compare-items")


def test_demo_mode_in_the_browser(server, page):
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt="never computed", demo="1"))
    page.get_by_text("Not cached.").first.wait_for()
    assert page.get_by_role("button", name="Run probes").count() == 0
    assert "Demo mode" in page.inner_text("body")


# ------------------------------------------------------------------------- several sessions, one model

#: two ~27-token prompts of different lengths for the two sessions
TWO_PROMPTS = ("The spouse of the performer of Imagine is Yoko Ono, and the capital of France is Paris today.",
               "Question: Tom has 3 boxes with 4 apples in each box. How many apples? Answer: 3 * 4 = 12 apples")
#: textContent every 200 ms (no layout, unlike innerText on every DOM mutation, which starves a 2-core machine)
WATCH_WAITING = """() => { window.__sawWaiting = false; clearInterval(window.__watch);
    window.__watch = setInterval(() => { if (document.body.textContent.includes("waiting for another session"))
        window.__sawWaiting = true; }, 200); }"""


def test_two_sessions_at_once_get_their_own_numbers(server, browser):
    """Two browser sessions click "Run probes" at the same moment on the default model: one runs, the other
    waits its turn (and says so); both end with exactly the numbers of a solo run of their own text."""
    from effdepth import engine

    pages = []
    for text in TWO_PROMPTS:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt=text))
        page.get_by_role("button", name="Run probes").wait_for()
        page.evaluate(WATCH_WAITING)
        pages.append(page)
    buttons = [page.get_by_role("button", name="Run probes") for page in pages]
    for button in buttons:  # within a few milliseconds of each other
        button.click(no_wait_after=True)
    for page in pages:
        page.locator(".st-key-heat_contrib .vega-embed").locator("canvas, svg.marks").first.wait_for(timeout=600_000)
    saw_waiting = [page.evaluate("() => window.__sawWaiting") for page in pages]
    shoot(pages[1], "explore-second-session")
    for page in pages:
        page.context.close()
    assert sum(saw_waiting) == 1, saw_waiting  # exactly one session waited for the other's run

    store = app.open_store(server["cache"])
    loaded = models.load_model(models.DEFAULT_MODEL)
    for text in TWO_PROMPTS:
        stored = [r.run_id for r in store.runs().itertuples() if r.prompt_text == text]
        assert len(stored) == 1, text
        got = store.get(stored[0])
        solo = engine.run_probes(loaded, text, app.config_for())  # what `effdepth probe --no-cache` gives
        assert got.run_id == solo.run_id
        for name in ("layer_token", "layer", "skip", "skip_output"):
            diff = (got.tables[name]["value"].to_numpy(float) - solo.tables[name]["value"].to_numpy(float))
            assert len(got.tables[name]) == len(solo.tables[name]) and abs(diff).max() <= 1e-5, (name, abs(diff).max())
        assert got.tables["ed"]["ed"].tolist() == solo.tables["ed"]["ed"].tolist()


HOSTILE = "[Session expired - click here to log in again](http://evil.example/login) ![t](http://evil.example/t.png)"


@pytest.mark.parametrize("path, field", [("", "model"), ("Explore", "model"), ("Compare", "model_b")])
def test_a_crafted_link_renders_as_plain_text(server, page, path, field):
    page.goto(_url(server, path, **{field: HOSTILE, "prompt": "Hello there"}))
    page.get_by_text("[Session expired - click here to log in again]").first.wait_for(timeout=60_000)
    _wait_idle(page)
    # (the sidebar's links carry the URL's query, so they contain the text, percent-encoded, as data)
    assert page.locator("a[href^='http://evil.example']").count() == 0
    assert page.locator("img[src*='evil.example'], img[src*='evil%2Eexample']").count() == 0
    if path == "Explore":
        shoot(page, "crafted-link")


def test_closing_the_tab_mid_run_is_said_on_reopening(server, browser):
    """Close the tab while the skip probe runs: the server stops the run at its next progress step, keeps
    the probes that had finished (a complete run of their own), and the reopened view shows them, says what
    was stopped and offers to run the rest."""
    text = " ".join(["The quick brown fox jumps over the lazy dog, and the spouse of the performer of Imagine "
                     "is Yoko Ono."] * 6)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt=text))
    page.get_by_role("button", name="Run probes").click()
    page.get_by_text("Layer skipping").first.wait_for(timeout=300_000)  # cosines and lens are done
    context.close()
    again = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    deadline = time.monotonic() + 120
    while True:
        again.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt=text))
        again.locator(".st-key-run_probes, .st-key-run_rest").first.wait_for(timeout=120_000)
        if "did not finish" in again.inner_text("body") or time.monotonic() > deadline:
            break
        again.wait_for_timeout(2000)
    body = again.inner_text("body")
    assert "did not finish: the browser session ended" in body, body[:2000]
    assert "contributions and cosines, logit lens) was kept and is shown" in body
    again.get_by_role("button", name="Run the remaining probes").wait_for()
    again.locator(".st-key-heat_lens .vega-embed").locator("canvas, svg.marks").first.wait_for()
    stored = [r for r in app.open_store(server["cache"]).runs().itertuples() if r.prompt_text == text]
    assert len(stored) == 1 and list(stored[0].probes) == ["cosine", "logit_lens"]
    shoot(again, "explore-stopped-run")
    again.context.close()


def test_the_stop_button_ends_a_run(server, page):
    text = " ".join(["Question: Tom has 3 boxes with 4 apples in each box. How many apples? Answer: 12."] * 6)
    page.goto(_url(server, "Explore", model=models.DEFAULT_MODEL, prompt=text))
    page.get_by_role("button", name="Run probes").click()
    page.get_by_text("Layer skipping").first.wait_for(timeout=300_000)
    page.get_by_role("button", name="Stop").click()
    page.get_by_text("did not finish: it was stopped").first.wait_for(timeout=120_000)
    _wait_idle(page)
    body = page.inner_text("body")
    assert "was kept and is shown" in body and "Done in" not in body
    stored = [r for r in app.open_store(server["cache"]).runs().itertuples() if r.prompt_text == text]
    assert len(stored) == 1 and "skip" not in list(stored[0].probes)


def test_server_log_has_no_tracebacks(server):
    text = Path(server["log"]).read_text()
    assert "Traceback" not in text, text[-3000:]
