"""The same sweep started from the Difficulty page (chromium on `streamlit run app.py`) and from the CLI, back to
back, each on a fresh cache: the page's timeline (items stored against seconds since the click) and the items/s
of both (issue 12 §4).

    .venv/bin/python bench/bench_sweep_browser.py --model smollm2-135m --dataset hops --n 10

Both include loading the model; the CLI's time also includes starting Python and importing (its own
"s/item computed" line leaves them out). Results go to bench/results-sweep-browser.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, _free_port, _healthy, pick_option, shoot  # noqa: E402

DATASET_LABELS = {"hops": "hops (1–4 composition steps)", "gsm8k": "GSM8K (test)", "aime2025": "AIME 2025"}


def _server(cache: Path, log: Path):
    port = _free_port()
    env = os.environ | {"EFFDEPTH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while not _healthy(url):
        time.sleep(0.3)
    return proc, url


def browser_sweep(args, tmp: Path) -> dict:
    from playwright.sync_api import sync_playwright

    proc, url = _server(tmp / "browser.duckdb", tmp / "streamlit.log")
    timeline = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/Difficulty")
            page.get_by_text("Run a sweep from here").first.click()
            page.locator(".st-key-w_sweep_model input").fill(args.model)
            page.locator(".st-key-w_sweep_n input").fill(str(args.n))
            pick_option(page, "w_sweep_dataset", DATASET_LABELS[args.dataset])
            start = time.perf_counter()
            page.get_by_role("button", name="Start the sweep").click()
            seen = -1
            while seen < args.n:
                found = re.search(r"(\d+)/(\d+) stored", page.inner_text("body"))
                if found and int(found.group(1)) != seen:
                    seen = int(found.group(1))
                    timeline.append((round(time.perf_counter() - start, 2), seen))
                time.sleep(0.25)
            total = time.perf_counter() - start
            page.wait_for_timeout(3000)
            shoot(page, f"difficulty-sweep-{args.model}-{args.dataset}")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(15)
    first = next(t for t, n in timeline if n > 0)
    return {"timeline": timeline, "total_s": round(total, 1), "items_per_s": round(args.n / total, 3),
            "s_per_item_after_first": round((total - first) / max(args.n - timeline[1][1], 1), 2)}


def cli_sweep(args, tmp: Path) -> dict:
    clock = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "effdepth", "sweep", "--model", args.model, "--dataset", args.dataset,
                          "--n", str(args.n), "--probes", args.probes, "--cache", str(tmp / "cli.duckdb"), "-q",
                          "--n-boot", "200"], cwd=ROOT, capture_output=True, text=True, check=True)
    total = time.perf_counter() - clock
    line = out.stdout.splitlines()[0]
    rate = re.search(r"([\d.]+) s/item computed", line)
    return {"line": line, "total_s": round(total, 1), "items_per_s": round(args.n / total, 3),
            "s_per_item_in_sweep": float(rate.group(1)) if rate else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dataset", default="hops", choices=list(DATASET_LABELS))
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--probes", default="cosine,logit_lens")  # the page's default probes
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="effdepth-sweep-bench-"))
    row = {"model": args.model, "dataset": args.dataset, "n": args.n, "probes": args.probes,
           "browser": browser_sweep(args, tmp), "cli": cli_sweep(args, tmp)}
    print(json.dumps(row, indent=1))
    with open(ROOT / "bench" / "results-sweep-browser.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
