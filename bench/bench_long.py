"""Benchmark: long traces up to the model's context (issue 18 §7) — the clean forward, each probe and the
peak memory at T tokens, measured at the last 256 positions, T after T in one run.

Each (model, T) runs in its own process, one after the other, so that its peak RSS (VmHWM) is its own: the
whole process (load included) and the run alone (VmHWM reset after the load). Beside the figures: the
probes' cost beyond the forward relative to the smallest T of the model, and the run's estimate
(``effdepth.estimate``) of its time and peak memory, to hold the estimate against the measurement.

    .venv/bin/python bench/bench_long.py --runs smollm2-135m:float32:1000,7500 \\
        qwen2.5-coder-0.5b:bfloat16:1000,4000,16000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PROBES = ("cosine", "logit_lens", "skip")


def one(name: str, dtype: str, n_tokens: int, window: str, probes: tuple[str, ...]) -> dict:
    """One run in this process: load, reset the peak, probe a ``n_tokens``-token text at ``window``."""
    sys.path.insert(0, str(ROOT))
    from bench_positions import text_of
    from bench_skip import peak_rss_mb, reset_peak_rss

    from effdepth import engine, estimate, positions
    from effdepth.models import load_model

    loaded = load_model(name, dtype)
    load_peak = peak_rss_mb()
    text = text_of(loaded.tokenizer, n_tokens)
    ids = engine.tokenize(loaded, text)
    selected = positions.select(window, len(ids))
    shape = estimate.Shape.of(loaded, len(ids), measured=len(selected), first_measured=selected[0],
                              last_measured=selected[-1])
    guess_s = sum(estimate.seconds(estimate.flops(shape, p), estimate.rate(dtype)) for p in ("forward", *probes))
    reset_peak_rss()
    clock = time.perf_counter()
    run = engine.run_probes(loaded, text, engine.ProbeConfig(probes=probes, positions=window))
    wall = time.perf_counter() - clock
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    timings = run.meta["timings"]
    return {"model": name, "dtype": dtype, "T": run.meta["n_tokens"], "positions": window,
            "forward_s": round(timings["forward"], 2), **{f"{p}_s": round(timings.get(p, 0.0), 2) for p in probes},
            "probes_s": round(sum(timings.get(p, 0.0) for p in probes), 2), "wall_s": round(wall, 2),
            "peak_rss_mb": round(max(peak_rss_mb(), load_peak)), "run_peak_rss_mb": round(peak_rss_mb()),
            "weights_mb": round(weights / 2**20), "target_mb": round((2 * weights + 2 * 2**30) / 2**20),
            "estimate_s": round(guess_s, 1),
            "estimate_peak_mb": round(estimate.peak_bytes(shape, probes, dtype) / 2**20),
            "splits": run.meta.get("splits_used"), "closure": run.meta["checks"]["residual_closure"],
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["smollm2-135m:float32:1000,7500"],
                        help="MODEL:DTYPE:T1,T2,… (each T in its own process, in order)")
    parser.add_argument("--window", default="last:256")
    parser.add_argument("--probes", default=",".join(PROBES))
    parser.add_argument("--out", default=str(ROOT / "results-long.jsonl"))
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "DTYPE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    probes = tuple(p for p in args.probes.split(",") if p)
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], int(args.one[2]), args.window, probes)))
        return
    print("| model | dtype | T | forward s | " + " | ".join(f"{p} s" for p in probes)
          + " | probes vs first T | peak RSS MB (run) | target MB | estimate s / MB |")
    print("|---|---|---|---|" + "---|" * len(probes) + "---|---|---|---|")
    for spec in args.runs:
        name, dtype, lengths = spec.split(":")
        first = None
        for n_tokens in (int(t) for t in lengths.split(",")):
            done = subprocess.run([sys.executable, __file__, "--one", name, dtype, str(n_tokens), "--window",
                                   args.window, "--probes", args.probes], capture_output=True, text=True)
            if done.returncode:
                print(f"| {name} | {dtype} | {n_tokens} | failed: {done.stderr.strip().splitlines()[-1]} |")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            first = first or row
            row["probes_vs_first"] = round(row["probes_s"] / max(first["probes_s"], 1e-9), 2)
            row["wall_vs_first"] = round(row["wall_s"] / max(first["wall_s"], 1e-9), 2)
            print(f"| {name} | {dtype} | {row['T']} | {row['forward_s']} | "
                  + " | ".join(str(row[f"{p}_s"]) for p in probes)
                  + f" | {row['probes_vs_first']}× | {row['peak_rss_mb']} ({row['run_peak_rss_mb']}) | "
                    f"{row['target_mb']} | {row['estimate_s']} / {row['estimate_peak_mb']} |", flush=True)
            with open(args.out, "a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
