"""Benchmark: residual erasure with the clean prefix reused against the whole-text replay, back to back.

On one GSM8K item (the first whose text has at least ``--min-tokens`` tokens), the erasure grid of
``--positions`` (a strided sample of the erased positions: the whole-text replay costs the same per
position, the suffix replay cost falls with the position, so a stride gives a fair ratio) runs both
ways in one process, in the order new, old, old, new; the ratio uses each side's best time and the
numbers must agree to 1e-5. The full grid's time is the sample's scaled by the stride. ``--plain`` also
times, once, the papers' way: one full hooked forward per (depth, position) at batch size 1.

    .venv/bin/python bench/bench_erasure.py --model smollm2-135m --stride 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from effdepth import datasets, engine, stages
from effdepth.capture import Replayer
from effdepth.models import load_model
from effdepth.probes import erasure

ROOT = Path(__file__).resolve().parent


def gsm8k_item(tokenizer, min_tokens: int):
    """The first GSM8K item with at least ``min_tokens`` tokens, with its ids and answer length."""
    for item in datasets.items("gsm8k", n=200):
        ids = tokenizer(item.text, add_special_tokens=True)["input_ids"]
        if len(ids) >= min_tokens:
            return item, torch.tensor(ids)
    raise SystemExit(f"no GSM8K item in the first 200 has {min_tokens} tokens")


@torch.no_grad()
def plain_erasure(model, model_taps, ids: torch.Tensor, baseline: torch.Tensor, answer_len: int,
                  positions: list[int]) -> torch.Tensor:
    """One full forward per (k, t) with h_k[t] overwritten by a hook (P2's loop) -> [L+1, len(positions)]."""
    n_layers = model_taps.n_layers
    answer = erasure.answer_positions(len(ids), answer_len)
    clean = torch.softmax(model(input_ids=ids[None]).logits[0, answer].float(), -1)
    out = torch.zeros(n_layers + 1, len(positions))
    for k in range(n_layers + 1):
        for column, t in enumerate(positions):
            def edit(h, k=k, t=t):
                h = h.clone()
                h[:, t] = baseline[k]
                return h
            if k < n_layers:
                handle = model_taps.layers[k].register_forward_pre_hook(
                    lambda _m, args, kwargs: ((edit(args[0]), *args[1:]), kwargs) if args
                    else (args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}), with_kwargs=True)
            else:
                handle = model_taps.layers[-1].register_forward_hook(
                    lambda _m, _a, out: (edit(out[0]), *out[1:]) if isinstance(out, tuple) else edit(out))
            try:
                probs = torch.softmax(model(input_ids=ids[None]).logits[0, answer].float(), -1)
            finally:
                handle.remove()
            out[k, column] = (probs - clean).norm(dim=-1).max()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--min-tokens", type=int, default=176)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--plain", action="store_true", help="also time one hooked forward per variant")
    parser.add_argument("--out", default=str(ROOT / "results-erasure.jsonl"))
    args = parser.parse_args()
    loaded = load_model(args.model, args.dtype)
    item, ids = gsm8k_item(loaded.tokenizer, args.min_tokens)
    answer_len = engine.answer_length(loaded, item.text, item.answer, False, ids.tolist())
    replayer = Replayer(loaded.model, ids)
    baseline = stages.erasure_baseline(loaded)
    positions = list(range(0, len(ids), args.stride))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model} {args.dtype}; "
          f"GSM8K item {item.index}: {len(ids)} tokens, answer {answer_len} tokens; "
          f"{len(positions)} erased positions x {loaded.n_layers + 1} depths")
    times: dict[str, list[float]] = {"suffix": [], "whole text": []}
    values: dict[str, torch.Tensor] = {}
    for side in ("suffix", "whole text", "whole text", "suffix"):
        clock = time.perf_counter()
        frame = erasure.residual_erasure(replayer, baseline, answer_len, positions=positions,
                                         reuse_prefix=side == "suffix")
        times[side].append(time.perf_counter() - clock)
        values[side] = erasure.erasure_matrix(frame)
        print(f"  {side:10s} {times[side][-1]:7.1f} s", flush=True)
    gap = float((values["suffix"] - values["whole text"]).abs().max())
    best = {side: min(t) for side, t in times.items()}
    if args.plain:
        clock = time.perf_counter()
        plain = plain_erasure(loaded.model, replayer.taps, ids, baseline, answer_len, positions)
        best["plain"] = time.perf_counter() - clock
        print(f"  plain loop {best['plain']:7.1f} s, max |Δ| to the suffix path "
              f"{float((plain - values['suffix'].float()).abs().max()):.1e}", flush=True)
    row = {"model": args.model, "dtype": args.dtype, "item": item.index, "T": len(ids), "answer_len": answer_len,
           "stride": args.stride, "n_positions": len(positions), "suffix_s": round(best["suffix"], 1),
           "whole_text_s": round(best["whole text"], 1), "speedup": round(best["whole text"] / best["suffix"], 2),
           "max_abs_diff": gap, "full_grid_suffix_s": round(best["suffix"] * args.stride),
           "full_grid_whole_text_s": round(best["whole text"] * args.stride), "date": time.strftime("%Y-%m-%d")}
    if "plain" in best:
        row.update(plain_s=round(best["plain"], 1), speedup_vs_plain=round(best["plain"] / best["suffix"], 2))
    print("| model | T | positions | whole text s | suffix s | speed-up | max |Δ| |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} {args.dtype} | {len(ids)} | {len(positions)} (stride {args.stride}) | "
          f"{row['whole_text_s']} | {row['suffix_s']} | {row['speedup']}× | {gap:.1e} |")
    with open(args.out, "a") as out:
        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
