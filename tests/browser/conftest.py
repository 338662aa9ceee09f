"""Fixtures of the real-browser tests: the pre-filled cache (runs), one `streamlit run app.py` server per
module on it, and a headless chromium with a fresh page per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from effdepth import models
from tests import app_support
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, ROOT, TIMINGS, _free_port, _healthy


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    cache = Path(request.config.cache.mkdir("effdepth-app-runs"))
    base = tmp_path_factory.mktemp("browser-models")
    tiny_dir = app_support.build_tiny_dir(base / "tiny-llama", seed=3)
    tiny_8 = app_support.build_tiny_dir(base / "tiny-llama-8", seed=4, n_layers=8)
    # benchmark sweeps for Difficulty / Compare's items mode, made first so the runs below stay the newest
    sweeps = app_support.fill_sweeps(base / "sweeps.duckdb", str(tiny_dir), str(tiny_8))
    return {"smol": app_support.cached_run(cache, models.DEFAULT_MODEL, app_support.PROMPT),
            "tiny": app_support.compute_run(str(tiny_dir), app_support.PROMPT), "tiny_dir": str(tiny_dir),
            "tiny_8": str(tiny_8), "sweeps": sweeps}


@contextmanager
def serving(cache: Path, tmp: Path, env: dict | None = None):
    """`streamlit run app.py` on a free port over the cache file ``cache``; always stopped at the end."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "streamlit.log", "w")
    env = os.environ | {"EFFDEPTH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"} | (env or {})
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"streamlit did not start:\n{(tmp / 'streamlit.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield {"url": url, "cache": cache, "log": tmp / "streamlit.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if TIMINGS:
            print("\n[effdepth browser timings] " + ", ".join(f"{k}: {v:.0f} ms" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """`streamlit run app.py` on a free port with a pre-filled cache; always stopped at the end."""
    tmp = tmp_path_factory.mktemp("browser-server")
    shutil.copy(runs["sweeps"], tmp / "effdepth.duckdb")
    cache = app_support.fill_store(tmp / "effdepth.duckdb", [runs["smol"], runs["tiny"]])
    with serving(cache, tmp) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (make setup-browser installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()
