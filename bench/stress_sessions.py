"""Stress: several browser sessions and one CLI sweep on one server, one cache, one shared model.

    .venv/bin/python bench/stress_sessions.py [--sessions 4] [--seconds 180] [--model smollm2-135m]

Starts `streamlit run app.py` on a free loopback port with a private cache, drives N sessions in Debian's
chromium (Playwright, async: each session types a new prompt of its own, clicks "Run probes" and waits for
the heatmap, again and again), and runs `effdepth sweep` on the same cache file in a second process at the
same time. When the time is up (the loops are bounded in count and time) every run the sessions stored is
recomputed alone in this process (`engine.run_probes`, no cache) and compared. Prints runs, waits (runs that
showed "waiting for another session's run"), errors (error boxes, page errors, tracebacks in the server log)
and the check (max |Δ| over every probe table). Not a timed test: a report for the closing note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEATMAP = ".st-key-heat_contrib .vega-embed canvas, .st-key-heat_contrib .vega-embed svg.marks"
#: textContent every 200 ms (no layout, unlike innerText on every DOM mutation, which starves a 2-core machine)
WATCH_WAITING = """() => { window.__sawWaiting = false; clearInterval(window.__watch);
    window.__watch = setInterval(() => { if (document.body.textContent.includes("waiting for another session"))
        window.__sawWaiting = true; }, 200); }"""
WORDS = ("apples", "Paris", "Yoko Ono", "the river", "twelve", "a baker", "the answer", "seven boxes")


def prompt(session: int, k: int) -> str:
    """A new text per session and iteration, 20 to 60 tokens long."""
    extra = " ".join(WORDS[(session + j) % len(WORDS)] for j in range((session * 7 + k * 3) % 12))
    return (f"Session {session}, run {k}: Tom has {k + 3} boxes with {session + 2} apples in each box. "
            f"How many apples? Answer: {(k + 3) * (session + 2)} apples {extra}").strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


async def session_loop(browser, url: str, session: int, model: str, deadline: float, max_runs: int,
                       report: dict) -> None:
    from playwright.async_api import Error as PlaywrightError

    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(600_000)
    page.on("pageerror", lambda err: report["errors"].append(f"session {session}: page error {err}"))
    for k in range(max_runs):
        if time.monotonic() > deadline:
            break
        text = prompt(session, k)
        query = urllib.parse.urlencode({"model": model, "prompt": text})
        try:
            await page.goto(f"{url}/Explore?{query}")
            button = page.get_by_role("button", name="Run probes")
            await button.wait_for()
            await page.evaluate(WATCH_WAITING)
            started = time.monotonic()
            await button.click()
            await page.locator(HEATMAP).first.wait_for()
            waited = await page.evaluate("() => window.__sawWaiting")
            boxes = await page.locator("[data-testid=stAlertContentError]").all_inner_texts()
            report["runs"].append({"session": session, "text": text, "seconds": time.monotonic() - started,
                                   "waited": bool(waited)})
            report["errors"].extend(f"session {session}: error box {b!r}" for b in boxes)
        except PlaywrightError as err:
            report["errors"].append(f"session {session}: {str(err).splitlines()[0]}")
    await context.close()


async def drive(url: str, args, report: dict) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        deadline = time.monotonic() + args.seconds
        await asyncio.gather(*(session_loop(browser, url, s, args.model, deadline, args.max_runs, report)
                               for s in range(args.sessions)))
        await browser.close()


def main() -> int:  # noqa: C901 - one linear script: start, drive, stop, check, report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=180.0, help="time for starting new runs")
    parser.add_argument("--max-runs", type=int, default=12, help="runs per session at most")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sweep-items", type=int, default=6, help="items of the concurrent CLI sweep (0: none)")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="effdepth-stress-"))
    cache = tmp / "effdepth.duckdb"
    env = os.environ | {"EFFDEPTH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "streamlit.log"
    report: dict = {"runs": [], "errors": []}
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                   "--server.headless", "true", "--server.address", "127.0.0.1",
                                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sweep = None
        try:
            deadline = time.monotonic() + 90
            while not healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"streamlit did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            if args.sweep_items:
                items = tmp / "items.jsonl"
                items.write_text("".join(json.dumps({"prompt": prompt(99, k) + " Answer:", "answer": f" {k}"}) + "\n"
                                         for k in range(args.sweep_items)))
                sweep = subprocess.Popen([sys.executable, "-m", "effdepth", "sweep", "--model", args.model,
                                          "--jsonl", str(items), "--cache", str(cache)],
                                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            clock = time.monotonic()
            asyncio.run(drive(url, args, report))
            report["wall_seconds"] = time.monotonic() - clock
            if sweep is not None:
                out, _ = sweep.communicate(timeout=1800)
                report["sweep_rc"] = sweep.returncode
                if sweep.returncode != 0:
                    report["errors"].append(f"sweep exited {sweep.returncode}: {out[-800:]}")
        finally:
            if sweep is not None and sweep.poll() is None:
                sweep.kill()
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    server_log = log_path.read_text()
    if "Traceback" in server_log:
        report["errors"].append("the server log has a traceback:\n" + server_log[-2000:])

    from effdepth import app, engine, models

    store = app.open_store(cache)
    stored = {r.prompt_text: r.run_id for r in store.runs().itertuples()}
    loaded = models.load_model(args.model)
    worst, checked, missing = 0.0, 0, []
    for run in report["runs"]:
        run_id = stored.get(run["text"])
        if run_id is None:
            missing.append(run["text"])
            continue
        got, solo = store.get(run_id), engine.run_probes(loaded, run["text"], app.config_for())
        for name in ("layer_token", "layer", "skip", "skip_output"):
            a, b = got.tables[name]["value"].to_numpy(float), solo.tables[name]["value"].to_numpy(float)
            if len(a) != len(b):
                worst = float("inf")
            elif len(a):
                worst = max(worst, float(abs(a - b).max()))
        checked += 1
    report["checked"] = {"runs": checked, "max_abs_diff": worst, "missing": missing,
                         "sweep_runs": sum(1 for r in store.runs().itertuples() if r.dataset == "items")}
    waits = sum(r["waited"] for r in report["runs"])
    sweep_text = f"a CLI sweep of {args.sweep_items} items" if args.sweep_items else "no sweep"
    print(f"{args.sessions} sessions + {sweep_text}"
          f" on {args.model}, {report.get('wall_seconds', 0):.0f} s")
    print(f"runs {len(report['runs'])}, of which waited for another session's run: {waits}; "
          f"median run {statistics.median(r['seconds'] for r in report['runs']) if report['runs'] else 0:.1f} s")
    print(f"errors {len(report['errors'])}" + "".join(f"\n  {e}" for e in report["errors"][:10]))
    print(f"checked against solo runs: {checked} runs, max |Δ| {worst:.2e}, missing {len(missing)}; "
          f"sweep rc {report.get('sweep_rc')}, sweep runs stored {report['checked']['sweep_runs']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if not report["errors"] and not missing and worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
