"""Peak memory of the linear map's fit (issue 19 §4), this tree against another checkout, back to back.

Each side runs ``linear.linear_map`` in its own process under ``/usr/bin/time -v`` (peak RSS as the kernel
counts it) on the shipped corpus, source and target both the given model (a map of a model onto itself:
the rows, the sums and the fit are those of a real pair of its size, and any tokenizer pairs). The held-out
error matrices of the two sides are compared (the spilled rows must not change a number).

    .venv/bin/python bench/bench_linmap_memory.py --old /tmp/old            # smollm2-135m, whole corpus
    .venv/bin/python bench/bench_linmap_memory.py --model qwen2.5-coder-0.5b --tokens 4000

Writes one JSON row per run to ``bench/results-linmap-memory.jsonl`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CHILD = """
import json, sys, time
import numpy as np
from effdepth import linear, models
name, dtype, tokens, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
clock = time.perf_counter()
fitted = linear.linear_map(lambda: models.load_model(name, dtype), lambda: models.load_model(name, dtype),
                           max_tokens=None if tokens == "all" else int(tokens))
np.save(out, fitted.error)
print(json.dumps({"seconds": round(time.perf_counter() - clock, 1), "n_fit": fitted.meta["n_fit_tokens"],
                  "n_held": fitted.meta["n_held_tokens"]}))
"""


def one(tree: Path, name: str, dtype: str, tokens: str, out: Path) -> dict:
    """Run the fit in ``tree`` -> {peak_rss_mb, seconds, n_fit, n_held}."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", CHILD, name, dtype, tokens, str(out)],
                          cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                         "HOME": str(Path.home()), "TOKENIZERS_PARALLELISM": "false"},
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the fit failed\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": round(peak_kb / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--tokens", default="all", help="fit tokens (default: the whole fit part)")
    parser.add_argument("--old", type=Path, default=None, help="another checkout to measure first")
    parser.add_argument("--out", default=str(ROOT / "results-linmap-memory.jsonl"))
    args = parser.parse_args()

    import numpy as np

    trees = ([("old", args.old.resolve())] if args.old else []) + [("new", ROOT.parent)]
    rows, errors = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, tree in trees:
            out = Path(scratch) / f"{label}.npy"
            row = {"side": label, "tree": str(tree), "model": args.model, "dtype": args.dtype, "tokens": args.tokens,
                   **one(tree, args.model, args.dtype, args.tokens, out), "date": time.strftime("%Y-%m-%d")}
            errors[label] = np.load(out)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if "old" in errors:
        old, new = errors["old"], errors["new"]
        relative = float(np.max(np.abs(new - old) / np.maximum(np.abs(old), 1e-30)))
        for row in rows:
            row["max_rel_diff_vs_old"] = relative
    with open(args.out, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    print("\n| side | model | fit / held tokens | peak RSS MB | s | max rel. diff of the error vs old |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['side']} | {row['model']} ({row['dtype']}) | {row['n_fit']} / {row['n_held']} | "
              f"{row['peak_rss_mb']} | {row['seconds']} | {row.get('max_rel_diff_vs_old', '–')} |")


if __name__ == "__main__":
    main()
