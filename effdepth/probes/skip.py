"""Probe C (PROBES.md §6): layer skipping — effect on later layers' contributions and on the output.

Variants (column ``variant`` of the tables):

- ``future``  (§6.1) skip layer s at positions 1..t-1 for a split t; measure at positions >= t;
- ``current`` (§6.2) skip layer s at all positions >= 1; measure at all positions;
- ``local_future`` / ``local_current`` (§6.3) remove only s's direct contribution c_s from every later
  residual in the same window; each later layer is evaluated on h_i - c_s with no cascade;
- ``noise_*`` the same intervention path with an edit that changes nothing (the noise floor of
  batching/recomputation). ``skipped`` is -1 on those rows.

R(s, j) = max_{measured i} ||c_j[i] - c'_j[i]|| / max(||c_j[i]||, 1e-6) and
O(s) = max_{measured i} ||softmax(z'[i]) - softmax(z[i])||_2. Position 0 is never edited.
Rows with ``split`` = -1 are the max over splits (for ``current`` variants the split column is 0).

How it is fast: a skip of layer s leaves layers < s untouched and layer s's output is known without
running it (its input where skipped, the clean output elsewhere), so a variant starts at layer s+1
from the clean trace; variants of all splits share one staggered batch (see capture.Replayer).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from effdepth.capture import Replayer

EPS = 1e-6
SEED_FUTURE = 123  # P2's random.seed for split positions
MAX_SPLITS = 4
VARIANTS = ("future", "current", "local_future", "local_current")


def draw_splits(n_tokens: int, seed: int = SEED_FUTURE, max_splits: int = MAX_SPLITS,
                rng: random.Random | None = None) -> list[int]:
    """Split points as in P2: candidates 8, 16, ... below T-4, shuffled with ``seed``, first 4 kept."""
    rng = rng or random.Random(seed)
    candidates = list(range(8, n_tokens - 4, 8))
    rng.shuffle(candidates)
    return candidates[:max_splits]


def check_splits(splits: Sequence[int], n_tokens: int) -> list[int]:
    """Validate explicit split points: 2 <= t <= T-1 (a window 1..t-1 and at least one measured token)."""
    bad = [t for t in splits if not 2 <= int(t) <= n_tokens - 1]
    if bad:
        raise ValueError(f"split points {bad} are outside 2..{n_tokens - 1} for a {n_tokens}-token prompt")
    return [int(t) for t in splits]


@dataclass
class _Variant:
    kind: str
    split: int  # t, or 0 for "all positions"
    skipped: int  # s, or -1 for a noise variant
    start: int  # first layer to run
    measure: torch.Tensor  # [T] bool


@dataclass
class SkipResult:
    """Long tables of the skip probe; see the module docstring."""

    matrix: pd.DataFrame  # variant, split, skipped, affected, value
    output: pd.DataFrame  # variant, split, skipped, value
    splits: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, cols in (("matrix", ["variant", "split", "skipped", "affected", "value"]),
                           ("output", ["variant", "split", "skipped", "value"])):
            if list(getattr(self, name).columns) != cols:
                raise ValueError(f"{name} columns {list(getattr(self, name).columns)} != {cols}")


def _windows(n_tokens: int, split: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(edited positions, measured positions) as [T] bool masks; split None = current effect."""
    pos = torch.arange(n_tokens)
    if split is None:
        return pos >= 1, torch.ones(n_tokens, dtype=torch.bool)
    return (pos >= 1) & (pos < split), pos >= split


class _Accumulator:
    """Collects R[variant, layer] and O[variant] as variants run."""

    def __init__(self, replayer: Replayer, variants: list[_Variant]):
        trace = replayer.trace
        self.replayer = replayer
        self.variants = variants
        device = replayer.device  # comparisons run where the replayed activations live
        self.clean_contrib = trace.contrib.to(device)  # [L, T, d]
        self.clean_norm = self.clean_contrib.norm(dim=-1).clamp_min(EPS)  # [L, T]
        self.measure = torch.stack([v.measure for v in variants]).to(device)  # [K, T]
        self.effect = torch.zeros(len(variants), trace.n_layers)  # R [K, L], on the CPU
        self.output = torch.zeros(len(variants))  # O [K]

    def record(self, layer: int, rows: torch.Tensor, contrib: torch.Tensor) -> None:
        """contrib: the variants' layer-``layer`` contributions, [B, T, d]."""
        rel = (contrib - self.clean_contrib[layer]).norm(dim=-1) / self.clean_norm[layer]  # [B, T]
        rel = rel.masked_fill(~self.measure[rows.to(rel.device)], 0.0)
        self.effect[rows, layer] = rel.amax(dim=-1).cpu()

    def on_layer(self, layer: int, rows: torch.Tensor, inp: torch.Tensor, out: torch.Tensor) -> None:
        self.record(layer, rows, out - inp)

    @torch.no_grad()
    def record_output(self, rows: torch.Tensor, final_resid: torch.Tensor,
                      clean_probs: torch.Tensor, budget_bytes: int = 256 * 2**20) -> None:
        """O for each variant row from its final residual [B, T, d] (decoded only where measured)."""
        taps = self.replayer.taps
        device = next(taps.unembed.parameters()).device
        measure = self.measure[rows.to(self.measure.device)].cpu()  # [B, T]
        which, pos = measure.nonzero(as_tuple=True)
        flat = final_resid.cpu()[which, pos]  # [N, d]
        chunk = max(1, budget_bytes // (3 * clean_probs.shape[-1] * 4))
        dist = torch.empty(flat.shape[0])
        for start in range(0, flat.shape[0], chunk):
            stop = min(start + chunk, flat.shape[0])
            probs = torch.softmax(taps.to_logits(flat[start:stop].to(device)).cpu(), dim=-1)
            dist[start:stop] = (probs - clean_probs[pos[start:stop]]).norm(dim=-1)
        best = torch.zeros(len(rows)).scatter_reduce(0, which, dist, reduce="amax", include_self=True)
        self.output[rows] = best


def _skip_variants(n_layers: int, n_tokens: int, splits: Sequence[int | None]) -> list[_Variant]:
    variants = []
    for split in splits:
        _, measure = _windows(n_tokens, split)
        kind = "future" if split is not None else "current"
        variants.append(_Variant("noise_" + kind, split or 0, -1, 0, measure))
        for s in range(n_layers):
            variants.append(_Variant(kind, split or 0, s, s + 1, measure))
    return variants


@torch.no_grad()
def _run_skips(replayer: Replayer, splits: Sequence[int | None], max_batch_tokens: int,
               progress: Callable[[str, float], None] | None) -> _Accumulator:
    trace = replayer.trace
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    variants = _skip_variants(n_layers, n_tokens, splits)
    acc = _Accumulator(replayer, variants)
    clean_probs = torch.softmax(trace.logits, dim=-1)  # [T, V]
    inputs = torch.empty(len(variants), n_tokens, trace.resid.shape[-1])
    for k, v in enumerate(variants):
        edited, _ = _windows(n_tokens, v.split or None)
        if v.skipped < 0:
            inputs[k] = trace.resid[0]
            continue
        s = v.skipped
        # Layer s skipped in the window: its output is its input there, the clean output elsewhere.
        inputs[k] = torch.where(edited[:, None], trace.resid[s], trace.resid[s + 1])
        acc.record(s, torch.tensor([k]), (inputs[k] - trace.resid[s])[None].to(replayer.device))
    batch = max(1, max_batch_tokens // n_tokens)
    for first in range(0, len(variants), batch):
        rows = list(range(first, min(first + batch, len(variants))))
        row_index = torch.tensor(rows)
        final = replayer.run_staggered(
            [variants[k].start for k in rows], inputs[rows],
            on_layer=lambda layer, local, inp, out: acc.on_layer(layer, row_index[local], inp, out))
        acc.record_output(row_index, final, clean_probs)
        if progress:
            progress(f"skip {rows[-1] + 1}/{len(variants)} variants", (rows[-1] + 1) / len(variants))
    return acc


@torch.no_grad()
def _run_local(replayer: Replayer, splits: Sequence[int | None], max_batch_tokens: int,
               progress: Callable[[str, float], None] | None) -> _Accumulator:
    """§6.3: layer i >= s runs on h_i - c_s (in the window) with no cascade between layers."""
    trace = replayer.trace
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    variants = _skip_variants(n_layers, n_tokens, splits)
    for v in variants:
        v.kind = v.kind.replace("noise_", "noise_local_") if v.skipped < 0 else "local_" + v.kind
    acc = _Accumulator(replayer, variants)
    clean_probs = torch.softmax(trace.logits, dim=-1)
    edits = torch.stack([  # what is removed from every later residual, [K, T, d]
        torch.zeros_like(trace.resid[0]) if v.skipped < 0 else
        trace.contrib[v.skipped] * _windows(n_tokens, v.split or None)[0][:, None].float()
        for v in variants])
    batch = max(1, max_batch_tokens // n_tokens)
    for layer in range(n_layers):
        rows = [k for k, v in enumerate(variants) if v.skipped < layer]  # noise rows have s = -1
        for first in range(0, len(rows), batch):
            chunk = torch.tensor(rows[first:first + batch])
            inp = (trace.resid[layer][None] - edits[chunk]).to(replayer.device)
            acc.on_layer(layer, chunk, inp, replayer.run_layer(layer, inp))
        if progress:
            progress(f"local layer {layer + 1}/{n_layers}", (layer + 1) / n_layers)
    for first in range(0, len(variants), batch):
        chunk = torch.arange(first, min(first + batch, len(variants)))
        acc.record_output(chunk, trace.resid[-1][None] - edits[chunk], clean_probs)
    return acc


def _frames(acc: _Accumulator) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_layers = acc.effect.shape[1]
    meta = pd.DataFrame([{"variant": v.kind, "split": v.split, "skipped": v.skipped}
                         for v in acc.variants])
    matrix = meta.loc[meta.index.repeat(n_layers)].reset_index(drop=True)
    matrix["affected"] = list(range(n_layers)) * len(acc.variants)
    matrix["value"] = acc.effect.double().reshape(-1).numpy()
    output = meta.assign(value=acc.output.double().numpy())
    return matrix, output


def _reduce_splits(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Append the max over splits as split = -1."""
    reduced = frame.groupby(keys, as_index=False, sort=False)["value"].max().assign(split=-1)
    return pd.concat([frame, reduced[frame.columns]], ignore_index=True)


def skip_effects(replayer: Replayer, splits: Sequence[int] | None = None,
                 variants: Sequence[str] = VARIANTS, seed: int = SEED_FUTURE,
                 max_batch_tokens: int = 8192,
                 progress: Callable[[str, float], None] | None = None) -> SkipResult:
    """Run the requested skip variants on the replayer's prompt; see the module docstring."""
    n_tokens = replayer.trace.n_tokens
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown skip variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    splits = check_splits(splits, n_tokens) if splits else draw_splits(n_tokens, seed)
    wants_future = any(v.endswith("future") for v in variants)
    if wants_future and not splits:
        raise ValueError(f"the prompt has {n_tokens} tokens; the future-effect skip needs a split point "
                         "t with 8 <= t < T-4 (at least 13 tokens) or explicit --splits")
    split_list: list[int | None] = []
    if wants_future:
        split_list += list(splits)
    if any(v.endswith("current") for v in variants):
        split_list.append(None)
    frames = []
    if "future" in variants or "current" in variants:
        chosen = [t for t in split_list if (t is None and "current" in variants)
                  or (t is not None and "future" in variants)]
        frames.append(_frames(_run_skips(replayer, chosen, max_batch_tokens, progress)))
    if "local_future" in variants or "local_current" in variants:
        chosen = [t for t in split_list if (t is None and "local_current" in variants)
                  or (t is not None and "local_future" in variants)]
        frames.append(_frames(_run_local(replayer, chosen, max_batch_tokens, progress)))
    matrix = pd.concat([f[0] for f in frames], ignore_index=True)
    output = pd.concat([f[1] for f in frames], ignore_index=True)
    matrix = _reduce_splits(matrix, ["variant", "skipped", "affected"])
    output = _reduce_splits(output, ["variant", "skipped"])
    return SkipResult(matrix=matrix, output=output, splits=list(splits) if wants_future else [])
