"""Benchmark: how soon the first probe's result is there, against the whole run (model already loaded).

The engine hands each probe's run over as it ends (``on_result``); a page draws it at once. This times
that hand-over for a GSM8K item, default probes, on a loaded model: the first result (contributions and
cosines), the lens, and the whole run, in one process.

    .venv/bin/python bench/bench_first_chart.py --model qwen2.5-coder-1.5b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from effdepth import datasets, engine
from effdepth.models import load_model

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--item", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "results-first-chart.jsonl"))
    args = parser.parse_args()
    clock = time.perf_counter()
    loaded = load_model(args.model, args.dtype)
    load_s = time.perf_counter() - clock
    item = datasets.items("gsm8k", n=args.item + 1)[args.item]
    engine.run_probes(loaded, "A warm-up run, so that first-call costs are not counted.",
                      engine.ProbeConfig(probes=("cosine",)))
    handed: list[tuple[float, list[str]]] = []
    start = time.perf_counter()
    run = engine.run_probes(loaded, item.text, on_result=lambda r: handed.append(
        (time.perf_counter() - start, list(r.meta["probes"]))))
    total = time.perf_counter() - start
    row = {"model": args.model, "dtype": args.dtype, "item": args.item, "T": run.meta["n_tokens"],
           "load_s": round(load_s, 1), "first_result_s": round(handed[0][0], 2),
           "lens_result_s": round(handed[1][0], 2) if len(handed) > 1 else None, "total_s": round(total, 1),
           "timings": {k: round(v, 2) for k, v in run.meta["timings"].items()},
           "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    print(f"{args.model} {args.dtype}, GSM8K item {args.item} ({row['T']} tokens): first result "
          f"{row['first_result_s']} s, lens {row['lens_result_s']} s, whole run {row['total_s']} s "
          f"(model loaded in {row['load_s']} s; per probe {row['timings']})")
    with open(args.out, "a") as out:
        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
