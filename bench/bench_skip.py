"""Benchmark: effdepth's probe suite against a plain one-forward-per-variant loop, in one run.

For each model and prompt length, both paths compute the same numbers on the same prompt (a GSM8K
item cut to T tokens, float32 unless --dtype says otherwise):

- suite: one clean pass (capture) + cosine/RC + chunked logit lens + future-effect skip with 4 splits
  (the staggered, batched Replayer; variants start at layer s+1 from the clean trace);
- plain: one hooked full forward for the clean pass, the logit lens decoded layer by layer on the full
  vocabulary, and one full forward (batch size 1) per (split, skipped layer) with a skip hook.

It checks that the numbers agree (max abs diff of cosines, KL, overlap, the future matrix and the
output change), and prints time, speed-up and peak RSS of each path (VmHWM, reset between phases).

    .venv/bin/python bench/bench_skip.py --models smollm2-135m --tokens 64 256
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

from effdepth import datasets
from effdepth.arch import taps
from effdepth.capture import Replayer, capture, skip_layer
from effdepth.models import EMBEDDED, load_model
from effdepth.probes import cosine, logit_lens, skip

ROOT = Path(__file__).resolve().parent


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prompt_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    text = " ".join(item.text for item in datasets.items("gsm8k", n=4))
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:n_tokens]
    assert len(ids) == n_tokens, "the GSM8K prompt is shorter than requested"
    return torch.tensor([ids])


def suite(model, ids, splits):
    replayer = Replayer(model, ids)
    trace = replayer.trace
    cos = cosine.contribution_metrics(trace)
    lens, _ = logit_lens.lens_metrics(trace, replayer.taps)
    result = skip.skip_effects(replayer, splits=splits, variants=["future"])
    m = result.matrix
    future = torch.tensor(m[(m.variant == "future") & (m.split == -1)]
                          .pivot(index="skipped", columns="affected", values="value").to_numpy())
    out = result.output
    output = torch.tensor(out[(out.variant == "future") & (out.split == -1)]
                          .sort_values("skipped")["value"].to_numpy())
    return {"cos": cos, "kl": lens["kl"], "overlap": lens["overlap"], "future": future.float(),
            "output": output.float()}


@torch.no_grad()
def plain(model, ids, splits):
    """The obvious implementation: a full forward per variant at batch size 1."""
    model_taps = taps(model)
    trace = capture(model, ids, model_taps)
    cos = cosine.contribution_metrics(trace)
    final = torch.log_softmax(trace.logits, -1)
    kl, overlap = [], []
    final_top = trace.logits.topk(5, -1).indices
    for layer in range(trace.n_layers):
        logp = torch.log_softmax(model_taps.to_logits(trace.resid[layer]), -1)  # [T, V] in one go
        kl.append((logp.exp() * (logp - final)).sum(-1))
        top = logp.topk(5, -1).indices
        overlap.append((top[:, :, None] == final_top[:, None, :]).any(-1).float().mean(-1))
    n_layers = trace.n_layers
    future = torch.zeros(n_layers, n_layers)
    output = torch.zeros(n_layers)
    clean_c = trace.contrib
    clean_p = torch.softmax(trace.logits, -1)
    for split in splits:
        for s in range(n_layers):
            with skip_layer(model, s, slice(1, split), model_taps):
                edited = capture(model, ids, model_taps)
            rel = ((edited.contrib - clean_c).norm(dim=-1) / clean_c.norm(dim=-1).clamp_min(1e-6))
            future[s] = torch.maximum(future[s], rel[:, split:].amax(-1))
            diff = (torch.softmax(edited.logits, -1) - clean_p).norm(dim=-1)[split:].max()
            output[s] = max(output[s], diff)
    return {"cos": cos, "kl": torch.stack(kl), "overlap": torch.stack(overlap), "future": future,
            "output": output}


def weight_flops(model, ids, splits) -> dict:
    """Weight-matmul FLOPs of both paths (2 per weight per token; attention scores left out).

    The FLOP-count bound on the speed-up: what no batching can beat on a compute-bound CPU.
    """
    model_taps = taps(model)
    n_layers, n_tokens = model_taps.n_layers, ids.shape[1]
    per_layer = 2 * sum(p.numel() for p in model_taps.layers[0].parameters() if p.dim() == 2)  # per token
    unembed = 2 * next(model_taps.unembed.parameters()).numel()  # per token
    suffix = sum(n_tokens - t for t in splits)
    clean = n_tokens * (n_layers * per_layer + unembed) + n_layers * n_tokens * unembed  # + logit lens
    plain = clean + len(splits) * n_layers * n_tokens * (n_layers * per_layer + unembed)
    slots = max(splits) + suffix  # packed: the shared prefix once, then each split's suffix
    layer_runs = sum(n_layers - 1 - s for s in range(n_layers)) + n_layers  # + the noise row
    suite = clean + layer_runs * slots * per_layer + (n_layers + 1) * suffix * unembed
    return {"plain_gflop": plain / 1e9, "suite_gflop": suite / 1e9, "flop_ratio": plain / suite}


def max_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for key in a:
        if key == "cos":
            worst = max(worst, *(float((a[key][m] - b[key][m]).abs().max()) for m in a[key]))
        else:
            worst = max(worst, float((a[key] - b[key]).abs().max()))
    return worst


def timed(fn, *args):
    gc.collect()
    reset_peak_rss()
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start, peak_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(EMBEDDED))
    parser.add_argument("--tokens", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "results.jsonl"))
    parser.add_argument("--flops-only", action="store_true",
                        help="print the weight-FLOP counts of both paths and their ratio; time nothing")
    args = parser.parse_args()
    if args.flops_only:
        print("| model | T | plain GFLOP | suite GFLOP | FLOP ratio |\n|---|---|---|---|---|")
        for name in args.models:
            loaded = load_model(name, dtype=args.dtype)
            for n_tokens in args.tokens:
                f = weight_flops(loaded.model, prompt_ids(loaded.tokenizer, n_tokens), skip.draw_splits(n_tokens))
                print(f"| {name} | {n_tokens} | {f['plain_gflop']:.0f} | {f['suite_gflop']:.0f} | "
                      f"{f['flop_ratio']:.2f} |", flush=True)
        return
    torch.set_num_threads(args.threads)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, dtype {args.dtype}", flush=True)
    header = ("| model | L | T | suite s | plain loop s | speed-up | max abs diff | "
              "peak RSS suite MB | peak RSS plain MB |")
    print(header + "\n|" + "---|" * 9, flush=True)
    for name in args.models:
        loaded = load_model(name, dtype=args.dtype)
        for n_tokens in args.tokens:
            ids = prompt_ids(loaded.tokenizer, n_tokens)
            splits = skip.draw_splits(n_tokens)
            suite(loaded.model, ids[:, :16], [8])  # warm-up (allocator, kernels)
            fast, fast_s, fast_rss = timed(suite, loaded.model, ids, splits)
            slow, slow_s, slow_rss = timed(plain, loaded.model, ids, splits)
            row = {"model": name, "n_layers": loaded.n_layers, "tokens": n_tokens, "splits": splits,
                   "dtype": args.dtype, "suite_s": round(fast_s, 2), "plain_s": round(slow_s, 2),
                   "speedup": round(slow_s / fast_s, 2), "max_abs_diff": max_diff(fast, slow),
                   "peak_rss_suite_mb": round(fast_rss), "peak_rss_plain_mb": round(slow_rss),
                   "threads": args.threads, "date": time.strftime("%Y-%m-%d"),
                   **{k: round(v, 2) for k, v in weight_flops(loaded.model, ids, splits).items()}}
            rows.append(row)
            print(f"| {name} | {loaded.n_layers} | {n_tokens} | {fast_s:.1f} | {slow_s:.1f} | "
                  f"{slow_s / fast_s:.1f}× | {row['max_abs_diff']:.1e} | {fast_rss:.0f} | {slow_rss:.0f} |",
                  flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        del loaded
        gc.collect()


if __name__ == "__main__":
    main()
