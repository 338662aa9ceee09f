"""What the real-browser tests share: the chromium launch, waits on charts and idle pages, URLs of
the test server, and screenshots under tests/artifacts/."""

from __future__ import annotations

import socket
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


ARTIFACTS = ROOT / "tests" / "artifacts"


CHROMIUM = "/usr/bin/chromium"


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


PROMPT_64 = ("Question: A baker makes 24 muffins and 18 more. She sells 30 of them. How many are left?\n"
             "Answer: 24 + 18 = 42 muffins. 42 - 30 = 12. The answer is 12")


CHART = ".vega-embed canvas, .vega-embed svg.marks"


TIMINGS: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _url(server, path: str = "", **query) -> str:
    return f"{server['url']}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")


def _wait_charts(page, count: int, timeout: float = 60_000) -> None:
    page.wait_for_function(
        """([sel, n]) => [...document.querySelectorAll('.vega-embed')]
              .filter(e => e.querySelector('canvas, svg.marks')).length >= n""",
        arg=[CHART, count], timeout=timeout)


def _wait_idle(page) -> None:
    """Wait until Streamlit has finished the current script run (no running indicator)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget] button')"
                           " && !document.querySelector('[data-testid=stStatusWidgetRunningIcon]')",
                           timeout=120_000)


def pick_option(page, widget_key: str, option: str, tries: int = 5) -> None:
    """Choose ``option`` in the selectbox of ``widget_key``: open it until its list shows (a click that lands
    while the form is still being drawn opens nothing), then click the option."""
    select = page.locator(f".st-key-{widget_key}")
    choice = page.get_by_role("option", name=option)
    for _ in range(tries):
        select.click()
        try:
            choice.wait_for(timeout=5_000)
            break
        except Exception:  # noqa: BLE001 - the list did not open: close whatever opened, try again
            page.keyboard.press("Escape")
    choice.click()


def _canvas_has_pixels(page, selector: str) -> bool:
    return page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        if (!c) return false;
        if (c.tagName.toLowerCase() === 'svg') return c.querySelectorAll('path, rect').length > 0;
        const ctx = c.getContext('2d');
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let inked = 0;
        for (let i = 0; i < d.length; i += 4 * 97)
            if (d[i + 3] > 0 && (d[i] < 245 || d[i+1] < 245 || d[i+2] < 245)) inked++;
        return inked > 50;
    }""", selector)


def shoot(page, name: str) -> Path:
    """A full-page screenshot: Streamlit scrolls inside its main block, so grow the viewport to it first."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("""() => Math.max(900, ...[...document.querySelectorAll(
        '[data-testid=stMain], [data-testid=stAppViewContainer], section.main')].map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": 1400, "height": int(height) + 40})
    page.wait_for_timeout(2500)  # charts re-fit to the new size
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    return path
