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
                     budget_bytes: int = 256 * 2**20, reuse_prefix: bool = True,
                     progress: Callable[[str, float], None] | None = None) -> pd.DataFrame:
    """E[k, t] for k = 0..L and t in ``positions`` (default all) -> DataFrame[depth, pos, value].

    ``baseline``: [L+1, d] (see ``erasure_baseline``); ``answer_len``: number of answer tokens at the
    end of the prompt. See the module docstring for the definition. ``reuse_prefix=False`` replays every
    variant over the whole replayed window (the path used where a suffix replay is not available).
    ``positions`` are text positions; a Replayer over a window of the text (``Replayer.offset``) erases
    positions inside it, and the window must reach the answer-predicting positions.
    """
    trace = replayer.trace
    n_layers, n_rows, d_model = trace.n_layers, trace.n_tokens, trace.resid.shape[-1]
    offset = getattr(replayer, "offset", 0)
    n_tokens = getattr(replayer, "n_text", n_rows)
    baseline = torch.as_tensor(baseline, dtype=torch.float32)
    if baseline.shape != (n_layers + 1, d_model):
        raise ValueError(f"baseline has shape {tuple(baseline.shape)}, expected {(n_layers + 1, d_model)}")
    answer = answer_positions(n_tokens, answer_len) - offset  # rows of the replay
    if int(answer[0]) < 0 or int(answer[-1]) >= n_rows:
        raise ValueError(f"the replayed window {offset}…{offset + n_rows - 1} does not hold the answer-predicting "
                         f"positions {int(answer[0]) + offset}…{int(answer[-1]) + offset}")
    positions = list(range(offset, offset + n_rows)) if positions is None else [int(t) for t in positions]
    bad = [t for t in positions if not offset <= t < offset + n_rows]
    if bad:
        raise ValueError(f"positions {bad} are outside {offset}..{offset + n_rows - 1}")
    effect = torch.zeros(n_layers + 1, n_rows)
    decode = _Decoder(replayer, answer, budget_bytes)
    erased = sorted({t - offset for t in positions if t - offset <= int(answer[-1])})
    by_suffix = reuse_prefix and replayer.suffix(0, int(answer[-1]) + 1) is not None
    run = _erase_by_suffix if by_suffix else _erase_in_full
    run(replayer, baseline, erased, decode, effect, max_batch_tokens, progress)
    depth_col = [k for k in range(n_layers + 1) for _ in positions]
    pos_col = positions * (n_layers + 1)
    rows_col = [t - offset for t in pos_col]
    return pd.DataFrame({"depth": depth_col, "pos": pos_col,
                         "value": effect[depth_col, rows_col].double().numpy()})


class _Decoder:
    """max over the answer-predicting positions of ||softmax(z') - softmax(z)||_2, in vocabulary-sized
    chunks of variants (a 150k vocabulary makes [B, A, V] the largest tensor of the probe)."""

    def __init__(self, replayer: Replayer, answer: torch.Tensor, budget_bytes: int) -> None:
        self.taps = replayer.taps
        self.answer = answer
        self.clean_probs = torch.softmax(replayer.trace.logits_at(answer), dim=-1)  # [A, V]
        self.device = next(self.taps.unembed.parameters()).device
        vocab = self.clean_probs.shape[-1]
        self.per_chunk = max(1, budget_bytes // (3 * vocab * 4 * len(answer)))

    def distance(self, at_answer: torch.Tensor, answer_rows: torch.Tensor) -> torch.Tensor:
        """at_answer [B, A', d]: final residuals at the answer positions ``answer_rows`` (indices into
        A; the others are unchanged, distance 0) -> [B]."""
        clean = self.clean_probs[answer_rows]
        out = []
        for start in range(0, at_answer.shape[0], self.per_chunk):
            z = self.taps.to_logits(at_answer[start:start + self.per_chunk].to(self.device)).cpu()
            out.append((torch.softmax(z, dim=-1) - clean).norm(dim=-1).amax(dim=-1))
        return torch.cat(out)


def _erase_in_full(replayer, baseline, erased, decode, effect, max_batch_tokens, progress) -> None:
    """Every variant (k, t) replays layers k.. over the whole text, in staggered batches."""
    trace = replayer.trace
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    variants = [(k, t) for k in range(n_layers + 1) for t in erased]
    every = torch.arange(len(decode.answer))
    batch = max(1, max_batch_tokens // n_tokens)
    for first in range(0, len(variants), batch):
        chunk = variants[first:first + batch]
        inputs = torch.stack([trace.resid[k] for k, _ in chunk])  # [B, T, d]
        for row, (k, t) in enumerate(chunk):
            inputs[row, t] = baseline[k]
        final = replayer.run_staggered([k for k, _ in chunk], inputs)  # [B, T, d]
        dist = decode.distance(final[:, decode.answer], every)
        for row, (k, t) in enumerate(chunk):
            effect[k, t] = dist[row]
        if progress:
            done = min(first + batch, len(variants))
            progress(f"erasure {done}/{len(variants)} variants", done / max(len(variants), 1))


def _erase_by_suffix(replayer, baseline, erased, decode, effect, _max_batch_tokens, progress) -> None:
    """The variants of one position t share the clean prefix < t: they replay only positions
    t .. last answer-predicting one, attending to the prefix's clean keys / values, all depths k in one
    staggered batch (depth k joins at layer k)."""
    trace = replayer.trace
    n_layers = trace.n_layers
    stop = int(decode.answer[-1]) + 1  # later positions cannot reach the answer-predicting ones
    depths = list(range(n_layers + 1))
    for done, t in enumerate(erased, start=1):
        view = replayer.suffix(t, stop)
        inputs = trace.resid[:, t:stop].clone()  # [L+1, S, d]: row k starts at layer k
        inputs[:, 0] = baseline
        final = view.run_staggered(depths, inputs)  # [L+1, S, d]
        answer_rows = (decode.answer >= t).nonzero()[:, 0]
        effect[:, t] = decode.distance(final[:, decode.answer[answer_rows] - t], answer_rows)
        if progress:
            progress(f"erasure {done}/{len(erased)} positions", done / max(len(erased), 1))


def erasure_matrix(frame: pd.DataFrame) -> torch.Tensor:
    """DataFrame[depth, pos, value] -> [L+1, T'] tensor (rows: depth, columns: the positions given)."""
    table = frame.pivot(index="depth", columns="pos", values="value").sort_index().sort_index(axis=1)
    return torch.tensor(table.to_numpy())
