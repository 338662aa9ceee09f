"""Benchmark: measured positions on long texts — seconds per probe and peak RSS, all positions vs a window.

For each model and length T, a text of T tokens (GSM8K items joined) is probed with contributions and
the logit lens twice in one process, back to back: ``--positions all`` and ``last:256``. The forward
pass covers the whole text either way; with the window the lens decodes 256 positions instead of T.
``--skip`` adds layer skipping (windowed: R and O at the measured positions, splits inside the window,
only the window replayed). Peak RSS is VmHWM, reset before each run. bench/bench_long.py times long
traces up to the model's context.

    .venv/bin/python bench/bench_positions.py --models smollm2-135m --tokens 256 1024 4096
    .venv/bin/python bench/bench_positions.py --models qwen2.5-coder-0.5b --dtype bfloat16 --tokens 256 1024
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch
from bench_skip import peak_rss_mb, reset_peak_rss  # the same VmHWM reading as the skip benchmark

from effdepth import datasets, engine
from effdepth.models import load_model

ROOT = Path(__file__).resolve().parent


def text_of(tokenizer, n_tokens: int) -> str:
    """GSM8K items joined until the text has at least ``n_tokens`` tokens, cut back to exactly that many."""
    items = datasets.items("gsm8k", n=400)
    text, ids = "", []
    for item in items:
        text += item.text + "\n\n"
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(ids) >= n_tokens:
            break
    start = 1 if tokenizer.bos_token_id is not None and ids and ids[0] == tokenizer.bos_token_id else 0
    return tokenizer.decode(ids[start:n_tokens], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--tokens", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--window", default="last:256")
    parser.add_argument("--skip", action="store_true", help="add layer skipping to the probes")
    parser.add_argument("--out", default=str(ROOT / "results-positions.jsonl"))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {args.dtype}")
    probes = ("cosine", "logit_lens", "skip") if args.skip else ("cosine", "logit_lens")
    print("| model | T | positions | forward s | cosine s | logit lens s | skip s | peak RSS MB | target MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        loaded = load_model(name, args.dtype)
        weights_mb = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20
        target_mb = 2 * weights_mb + 1536  # the bound: 2x the weights + 1.5 GB
        for n_tokens in args.tokens:
            text = text_of(loaded.tokenizer, n_tokens)
            for spec in ("all", args.window):
                gc.collect()
                reset_peak_rss()
                clock = time.perf_counter()
                run = engine.run_probes(loaded, text, engine.ProbeConfig(probes=probes, positions=spec))
                wall = time.perf_counter() - clock
                rss = peak_rss_mb()
                t = run.meta["timings"]
                row = {"model": name, "dtype": args.dtype, "T": run.meta["n_tokens"], "positions": spec,
                       "forward_s": round(t["forward"], 2), "cosine_s": round(t["cosine"], 2),
                       "logit_lens_s": round(t["logit_lens"], 2), "skip_s": round(t["skip"], 2) if args.skip else None,
                       "wall_s": round(wall, 2),
                       "peak_rss_mb": round(rss), "weights_mb": round(weights_mb), "target_mb": round(target_mb),
                       "date": time.strftime("%Y-%m-%d")}
                print(f"| {name} | {row['T']} | {spec} | {row['forward_s']} | {row['cosine_s']} | "
                      f"{row['logit_lens_s']} | {row['skip_s'] if args.skip else '—'} | {row['peak_rss_mb']} | "
                      f"{row['target_mb']} |", flush=True)
                with open(args.out, "a") as out:
                    out.write(json.dumps(row) + "\n")
                del run
        del loaded
        gc.collect()


if __name__ == "__main__":
    main()
