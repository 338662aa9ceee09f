#!/usr/bin/env bash
# The papers' three claims on the offline demo pair (issue: benchmarks, difficulty and scale).
# Sweeps GSM8K (20 items) and AIME 2025 (15 items, <= 400 tokens) on qwen2.5-coder-0.5b and -1.5b with
# the cosine and logit-lens probes (bf16 weights, fp32 reductions), then a small future-skip sweep for the
# depth score. Every sweep is resumable and cached; rerunning prints the aggregates from the cache.
# Output: one log per sweep under ${OUT_DIR:-bench/claims}/ (ED/EDR with bootstrap CIs, s/item).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-bench/claims}
mkdir -p "$out"
E=.venv/bin/effdepth
for model in qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  $E sweep --model $model --dtype bfloat16 --dataset gsm8k --n 20 --probes cosine,logit_lens 2>&1 \
    | tee "$out/$model.gsm8k.log" | grep -v '%|'
  $E sweep --model $model --dtype bfloat16 --dataset aime2025 --n 15 --probes cosine,logit_lens 2>&1 \
    | tee "$out/$model.aime2025.log" | grep -v '%|'
done
# Depth score (docs/SPEC.md §7.1) per bin = dataset, from the future-effect skip (4 splits per item).
for dataset in gsm8k aime2025; do
  $E sweep --model qwen2.5-coder-0.5b --dtype bfloat16 --dataset $dataset --n ${SKIP_N:-5} \
    --probes skip --skip-variants future 2>&1 | tee "$out/qwen2.5-coder-0.5b.$dataset.skip.log" | grep -v '%|'
done
