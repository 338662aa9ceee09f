"""Probe E (docs/SPEC.md §7.2): residual erasure — where does a token's information stop mattering?

Baseline (``erasure_baseline``): per depth k = 0..L, the token-weighted mean of h_k over all positions
of a set of prompts (P2: the first 10 GSM8K items), one d-vector per depth. h_0 is the embeddings (the
input of layer 0), h_k for k >= 1 is the output of layer k-1 (``Trace.resid`` indexing).

Effect (``residual_erasure``): for every depth k = 0..L and position t, h_k[t] is replaced by the
baseline vector and the model runs forward from layer k (depth L edits the final residual: no layer
runs, only the final norm + unembedding). With A = the answer-predicting positions T-alen-1 … T-2
(the positions whose next token is an answer token),

    E[k, t] = max_{i in A} ||softmax(z'[i]) - softmax(z[i])||_2

where z are the model's own clean logits. Output: DataFrame[depth, pos, value], an [L+1, T] heatmap
in long format (P2 drops the last column when plotting; it is kept here).

How it runs: the edited variant (k, t) leaves layers < k untouched, so it starts at layer k from the
clean trace (``Replayer.run_staggered``); variants of all depths share staggered batches of at most
``max_batch_tokens`` tokens, and only the |A| answer-predicting positions are decoded.

Shortcut (exact by causality): erasing a position t > T-2 (after the last answer-predicting position)
cannot change any logit in A, so those cells are 0 without running anything. The tests check this
against full hooked forwards that do run them.

Differences from the papers: P2/P1 run one traced forward per (k, t) at batch size 1; effdepth batches
the variants (docs/SPEC.md §12.6: in fp32 on CPU the batch noise is ~1e-7; in bf16 expect a small floor,
measurable by erasing a position with its own clean value, which must give ~0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from effdepth.arch import Taps
from effdepth.arch import taps as resolve_taps
from effdepth.capture import Replayer, capture

N_BASELINE_PROMPTS = 10  # P2: the first 10 GSM8K prompts


def _as_ids(prompt, tokenizer) -> torch.Tensor:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("erasure_baseline got text prompts but no tokenizer")
        return torch.tensor(tokenizer(prompt, add_special_tokens=True)["input_ids"], dtype=torch.long)
    ids = torch.as_tensor(prompt, dtype=torch.long)
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError("erasure_baseline takes one prompt per entry ([T] or [1, T] ids)")
        ids = ids[0]
    return ids


@torch.no_grad()
def erasure_baseline(model: nn.Module, texts_or_ids: Iterable, tokenizer=None,
                     model_taps: Taps | None = None) -> torch.Tensor:
    """Token-weighted mean of h_k over all positions of all prompts, k = 0..L -> fp32 [L+1, d].

    ``texts_or_ids``: strings (tokenised with ``add_special_tokens=True``, no chat template, as in
    docs/SPEC.md §1) or token-id tensors/lists ([T] or [1, T]). Every position counts, position 0 included.
    """
    model_taps = model_taps or resolve_taps(model)
    total, count = None, 0
    for prompt in texts_or_ids:
        ids = _as_ids(prompt, tokenizer)
        if ids.numel() == 0:
            continue
        trace = capture(model, ids[None], model_taps)
        part = trace.resid.double().sum(dim=1)  # [L+1, d]
        total = part if total is None else total + part
        count += trace.n_tokens
    if total is None:
        raise ValueError("erasure_baseline needs at least one non-empty prompt")
    return (total / count).float()


def answer_positions(n_tokens: int, answer_len: int) -> torch.Tensor:
    """Positions whose next token is an answer token: T-alen-1 … T-2 (the answer = last alen tokens)."""
    if not 1 <= answer_len <= n_tokens - 1:
        raise ValueError(f"answer_len must be in 1..{n_tokens - 1} for a {n_tokens}-token prompt "
                         f"(got {answer_len}); the answer is the last answer_len tokens")
    return torch.arange(n_tokens - answer_len - 1, n_tokens - 1)


@torch.no_grad()
def residual_erasure(replayer: Replayer, baseline: torch.Tensor, answer_len: int,
                     positions: Sequence[int] | None = None, max_batch_tokens: int = 8192,
                     budget_bytes: int = 256 * 2**20,
                     progress: Callable[[str, float], None] | None = None) -> pd.DataFrame:
    """E[k, t] for k = 0..L and t in ``positions`` (default all) -> DataFrame[depth, pos, value].

    ``baseline``: [L+1, d] (see ``erasure_baseline``); ``answer_len``: number of answer tokens at the
    end of the prompt. See the module docstring for the definition.
    """
    trace = replayer.trace
    n_layers, n_tokens, d_model = trace.n_layers, trace.n_tokens, trace.resid.shape[-1]
    baseline = torch.as_tensor(baseline, dtype=torch.float32)
    if baseline.shape != (n_layers + 1, d_model):
        raise ValueError(f"baseline has shape {tuple(baseline.shape)}, expected {(n_layers + 1, d_model)}")
    answer = answer_positions(n_tokens, answer_len)
    last_measured = int(answer[-1])
    positions = list(range(n_tokens)) if positions is None else [int(t) for t in positions]
    bad = [t for t in positions if not 0 <= t < n_tokens]
    if bad:
        raise ValueError(f"positions {bad} are outside 0..{n_tokens - 1}")

    variants = [(k, t) for k in range(n_layers + 1) for t in positions if t <= last_measured]
    effect = torch.zeros(n_layers + 1, n_tokens)
    clean_probs = torch.softmax(trace.logits[answer], dim=-1)  # [A, V]
    taps = replayer.taps
    device = next(taps.unembed.parameters()).device
    vocab = clean_probs.shape[-1]
    per_chunk = max(1, budget_bytes // (3 * vocab * 4 * len(answer)))  # variants decoded at once
    batch = max(1, max_batch_tokens // n_tokens)
    for first in range(0, len(variants), batch):
        chunk = variants[first:first + batch]
        inputs = torch.stack([trace.resid[k] for k, _ in chunk])  # [B, T, d]
        for row, (k, t) in enumerate(chunk):
            inputs[row, t] = baseline[k]
        final = replayer.run_staggered([k for k, _ in chunk], inputs)  # [B, T, d]
        at_answer = final[:, answer]  # [B, A, d]
        for start in range(0, len(chunk), per_chunk):
            stop = min(start + per_chunk, len(chunk))
            probs = torch.softmax(taps.to_logits(at_answer[start:stop].to(device)).cpu(), dim=-1)
            dist = (probs - clean_probs).norm(dim=-1).amax(dim=-1)  # [b]
            for row in range(start, stop):
                k, t = chunk[row]
                effect[k, t] = dist[row - start]
        if progress:
            done = min(first + batch, len(variants))
            progress(f"erasure {done}/{len(variants)} variants", done / max(len(variants), 1))
    depth_col = [k for k in range(n_layers + 1) for _ in positions]
    pos_col = positions * (n_layers + 1)
    return pd.DataFrame({"depth": depth_col, "pos": pos_col,
                         "value": effect[depth_col, pos_col].double().numpy()})


def erasure_matrix(frame: pd.DataFrame) -> torch.Tensor:
    """DataFrame[depth, pos, value] -> [L+1, T'] tensor (rows: depth, columns: the positions given)."""
    table = frame.pivot(index="depth", columns="pos", values="value").sort_index().sort_index(axis=1)
    return torch.tensor(table.to_numpy())
