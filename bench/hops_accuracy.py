"""Sanity check of the ``hops`` dataset: does each model answer it above chance, per hop count?

For every item the model reads the prompt (no chat template, as the probes do) and continues it greedily
by up to 4 tokens; the first digit it writes is its answer (tokenizers split " 7" as one token or as " "
and "7", so the first token alone would not do). Chance is 1/2 for a reader that knows the answer is one
of the two chains' values, 1/9 for one that only knows it is a digit.

    .venv/bin/python bench/hops_accuracy.py --models smollm2-135m qwen2.5-coder-0.5b
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


@torch.no_grad()
def accuracy(loaded, items) -> dict[str, tuple[int, int]]:
    """bin -> (correct, n)."""
    out: dict[str, list[int]] = {}
    device = next(loaded.model.parameters()).device
    for item in items:
        ids = engine.tokenize(loaded, item.prompt, False)
        written = loaded.model.generate(input_ids=ids[None].to(device), attention_mask=torch.ones_like(ids[None]),
                                        max_new_tokens=4, do_sample=False,
                                        pad_token_id=loaded.tokenizer.eos_token_id)[0, len(ids):]
        text = loaded.tokenizer.decode(written, skip_special_tokens=True)
        digits = [ch for ch in text if ch.isdigit()]
        hit = int(bool(digits) and digits[0] == item.answer.strip())
        out.setdefault(item.bin, [0, 0])
        out[item.bin][0] += hit
        out[item.bin][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(ROOT / "results-hops.jsonl"))
    args = parser.parse_args()
    items = datasets.items("hops")
    print("| model | dtype | " + " | ".join(sorted({i.bin for i in items})) + " |")
    print("|---|---|" + "---|" * len({i.bin for i in items}))
    for name in args.models:
        loaded = load_model(name, args.dtype)
        result = accuracy(loaded, items)
        cells = " | ".join(f"{c}/{n} ({c / n:.0%})" for _, (c, n) in sorted(result.items()))
        print(f"| {name} | {args.dtype} | {cells} |", flush=True)
        with open(args.out, "a") as out:
            row = {"model": name, "dtype": args.dtype, "accuracy": {k: list(v) for k, v in result.items()},
                   "date": time.strftime("%Y-%m-%d")}
            out.write(json.dumps(row) + "\n")
        del loaded


if __name__ == "__main__":
    main()
