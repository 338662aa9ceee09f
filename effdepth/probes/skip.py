"""Probe C (docs/SPEC.md §6): layer skipping — effect on later layers' contributions and on the output.

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

How it is fast:

- a skip of layer s leaves layers < s untouched and layer s's output is known without running it (its
  input where skipped, the clean output elsewhere), so a variant starts at layer s+1 from the clean
  trace; variants of all skipped layers share one staggered batch (see capture.Replayer);
- the splits of one skipped layer share their prefix: by causality, positions < t of the run with
  window 1..t-1 equal positions < t of the run that skips *every* position >= 1 (the current-effect
  run). So each skipped layer runs as one packed sequence: that shared prefix once, then each split's
  own positions t..T-1, which attend to the prefix below t and to themselves (capture.Replayer.packed).
  For 4 splits and the current variant that is about 3T instead of 5T positions per skipped layer.
  The numbers are the same computation as one forward per variant, up to float rounding (tested
  against that plain loop); architectures whose layer calls cannot be packed run unpacked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from effdepth import contract
from effdepth.capture import Replayer
from effdepth.probes.skip_tables import Partial, SkipResult, frames, reduce_splits
from effdepth.probes.skip_windows import (  # noqa: F401 - the probe's face for its callers
    MAX_SPLITS,
    SEED_FUTURE,
    _packed_layout,
    _Window,
    _windows,
    check_splits,
    draw_splits,
)

EPS = 1e-6
PARTIAL_EVERY_S = 1.0  # the shortest gap between two partial results handed to on_partial
VARIANTS = contract.SKIP_VARIANTS


@dataclass
class _Variant:
    kind: str
    split: int  # t (a text position), or 0 for "all positions"
    skipped: int  # s, or -1 for a noise variant
    start: int  # first layer to run
    measure: torch.Tensor  # [T] bool


class _CleanProbs:
    """softmax of the model's own logits at the positions the trace kept ([P, V]), and the row of each
    position (a windowed run keeps only the measured ones)."""

    def __init__(self, trace) -> None:
        kept = torch.arange(trace.n_tokens) if trace.logit_positions is None else trace.logit_positions
        self.probs = torch.softmax(trace.logits, dim=-1)  # [P, V]
        self.row_of = torch.full((trace.n_tokens,), -1, dtype=torch.long)
        self.row_of[kept] = torch.arange(len(kept))
        self.vocab = self.probs.shape[-1]

    def rows(self, pos: torch.Tensor) -> torch.Tensor:
        rows = self.row_of[pos]
        if bool((rows < 0).any()):
            raise ValueError(f"the trace kept no logits at positions {pos[rows < 0].tolist()[:5]}")
        return rows


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
        # which cells are known so far: layers below a skipped one are untouched (0 from the start), and
        # so is the skipped layer itself on the direct path
        below = torch.tensor([max(v.skipped + v.kind.startswith("local_"), 0) for v in variants])[:, None]
        self.filled = torch.arange(trace.n_layers)[None, :] < below  # [K, L]
        self.output_done = torch.zeros(len(variants), dtype=torch.bool)  # [K]
        self.on_change: Callable[[], None] | None = None  # hears every recorded layer (partial results)

    def record(self, layer: int, rows: torch.Tensor, contrib: torch.Tensor) -> None:
        """contrib: the variants' layer-``layer`` contributions, [B, T, d]."""
        rel = (contrib - self.clean_contrib[layer]).norm(dim=-1) / self.clean_norm[layer]  # [B, T]
        rel = rel.masked_fill(~self.measure[rows.to(rel.device)], 0.0)
        self.set_effect(rows, layer, rel.amax(dim=-1).cpu())

    def set_effect(self, rows: torch.Tensor, layer: int, values: torch.Tensor) -> None:
        self.effect[rows, layer] = values
        self.filled[rows, layer] = True

    def set_output(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        self.output[rows] = values
        self.output_done[rows] = True

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def on_layer(self, layer: int, rows: torch.Tensor, inp: torch.Tensor, out: torch.Tensor) -> None:
        self.record(layer, rows, out - inp)

    @torch.no_grad()
    def record_output(self, rows: torch.Tensor, final_resid: torch.Tensor,
                      clean_probs: _CleanProbs) -> None:
        """O for each variant row from its final residual [B, T, d] (decoded only where measured)."""
        measure = self.measure[rows.to(self.measure.device)].cpu()  # [B, T]
        which, pos = measure.nonzero(as_tuple=True)
        dist = _output_distances(self.replayer, final_resid.cpu()[which, pos], clean_probs, pos)
        best = torch.zeros(len(rows)).scatter_reduce(0, which, dist, reduce="amax", include_self=True)
        self.set_output(rows, best)


@torch.no_grad()
def _output_distances(replayer: Replayer, resid: torch.Tensor, clean_probs: _CleanProbs,
                      pos: torch.Tensor, budget_bytes: int = 256 * 2**20) -> torch.Tensor:
    """||softmax(z'[n]) - softmax(z[pos[n]])||_2 for final residuals resid [N, d]; decoded in chunks."""
    taps = replayer.taps
    device = next(taps.unembed.parameters()).device
    chunk = max(1, budget_bytes // (3 * clean_probs.vocab * 4))
    dist = torch.empty(resid.shape[0])
    work_buf = torch.empty(min(chunk, resid.shape[0]), clean_probs.vocab)  # reused: no page faults
    rows = clean_probs.rows(pos)
    for start in range(0, resid.shape[0], chunk):
        stop = min(start + chunk, resid.shape[0])
        probs = torch.softmax(taps.to_logits(resid[start:stop].to(device)).cpu(), dim=-1)
        work = torch.index_select(clean_probs.probs, 0, rows[start:stop], out=work_buf[:stop - start])
        dist[start:stop] = torch.linalg.vector_norm(work.neg_().add_(probs), dim=-1)
    return dist


def _skip_variants(n_layers: int, n_tokens: int, splits: Sequence[int | None],
                   keep: torch.Tensor | None = None, where: _Window = _Window()) -> list[_Variant]:
    variants = []
    for split in splits:
        _, measure = _windows(n_tokens, split, keep, where)
        kind = "future" if split is not None else "current"
        variants.append(_Variant("noise_" + kind, split or 0, -1, 0, measure))
        for s in range(n_layers):
            variants.append(_Variant(kind, split or 0, s, s + 1, measure))
    return variants


def _localise(variants: list[_Variant]) -> list[_Variant]:
    """Rename skip variants to their local (direct-path) counterparts, in place."""
    for v in variants:
        v.kind = v.kind.replace("noise_", "noise_local_") if v.skipped < 0 else "local_" + v.kind
    return variants


@torch.no_grad()
def _run_skips(replayer: Replayer, splits: Sequence[int | None], max_batch_tokens: int,
               progress: Callable[[str, float], None] | None,
               watch: Callable[[_Accumulator], _Accumulator] = lambda acc: acc,
               keep: torch.Tensor | None = None, where: _Window = _Window()) -> _Accumulator:
    trace = replayer.trace
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    variants = _skip_variants(n_layers, n_tokens, splits, keep, where)
    acc = watch(_Accumulator(replayer, variants))
    clean_probs = _CleanProbs(trace)
    inputs = torch.empty(len(variants), n_tokens, trace.resid.shape[-1])
    for k, v in enumerate(variants):
        edited, _ = _windows(n_tokens, v.split or None, where=where)
        if v.skipped < 0:
            inputs[k] = trace.resid[0]
            continue
        s = v.skipped
        # Layer s skipped in the window: its output is its input there, the clean output elsewhere.
        inputs[k] = torch.where(edited[:, None], trace.resid[s], trace.resid[s + 1])
        acc.record(s, torch.tensor([k]), (inputs[k] - trace.resid[s])[None].to(replayer.device))
    batch = max(1, max_batch_tokens // n_tokens)
    n_batches = -(-len(variants) // batch)
    for index, first in enumerate(range(0, len(variants), batch)):
        rows = list(range(first, min(first + batch, len(variants))))
        row_index = torch.tensor(rows)

        def on_layer(layer, local, inp, out, row_index=row_index, index=index):
            acc.on_layer(layer, row_index[local], inp, out)
            _layer_progress(progress, "skip", layer, n_layers, index, n_batches)
            acc.changed()

        final = replayer.run_staggered([variants[k].start for k in rows], inputs[rows], on_layer)
        acc.record_output(row_index, final, clean_probs)
        _layer_progress(progress, "skip", n_layers - 1, n_layers, index, n_batches)  # batch done
    return acc


@torch.no_grad()
def _run_local(replayer: Replayer, splits: Sequence[int | None], max_batch_tokens: int,
               progress: Callable[[str, float], None] | None,
               watch: Callable[[_Accumulator], _Accumulator] = lambda acc: acc,
               keep: torch.Tensor | None = None, where: _Window = _Window()) -> _Accumulator:
    """§6.3: layer i >= s runs on h_i - c_s (in the window) with no cascade between layers."""
    trace = replayer.trace
    n_layers, n_tokens = trace.n_layers, trace.n_tokens
    variants = _localise(_skip_variants(n_layers, n_tokens, splits, keep, where))
    acc = watch(_Accumulator(replayer, variants))
    clean_probs = _CleanProbs(trace)
    edits = torch.stack([  # what is removed from every later residual, [K, T, d]
        torch.zeros_like(trace.resid[0]) if v.skipped < 0 else
        trace.contrib[v.skipped] * _windows(n_tokens, v.split or None, where=where)[0][:, None].float()
        for v in variants])
    batch = max(1, max_batch_tokens // n_tokens)
    for layer in range(n_layers):
        rows = [k for k, v in enumerate(variants) if v.skipped < layer]  # noise rows have s = -1
        for first in range(0, len(rows), batch):
            chunk = torch.tensor(rows[first:first + batch])
            inp = (trace.resid[layer][None] - edits[chunk]).to(replayer.device)
            acc.on_layer(layer, chunk, inp, replayer.run_layer(layer, inp))
        if progress:
            progress(f"direct-path replay, layer {layer + 1}/{n_layers}", (layer + 1) / n_layers)
        acc.changed()
    for first in range(0, len(variants), batch):
        chunk = torch.arange(first, min(first + batch, len(variants)))
        acc.record_output(chunk, trace.resid[-1][None] - edits[chunk], clean_probs)
    return acc


class _Packing:
    """One packed sequence per skipped layer: the shared all-positions prefix, then each split's suffix.

    Slot a holds clean position ``pos[a]`` of group ``group[a]``: group 0 is the prefix 0..P-1 (the
    run whose window is every position >= 1), group k the positions t_k..T-1 of split k. A slot of
    group k sees the prefix below t_k and its own group; prefix slots see the prefix. Each packed
    row (a skipped layer, or -1 for the noise row) feeds one variant row per measured group.
    """

    def __init__(self, acc: _Accumulator, splits: Sequence[int], with_current: bool, view: Replayer,
                 pos: torch.Tensor, group: torch.Tensor, keep: torch.Tensor | None = None,
                 where: _Window = _Window()):
        trace = acc.replayer.trace
        self.acc, self.view, self.splits = acc, view, list(splits)  # splits: text positions
        self.pos, self.group = pos, group  # [N], [N]: see _packed_layout (rows of the replay)
        self.in_window = ((self.group == 0) & (self.pos + where.offset >= where.first_edit))[:, None]  # [N, 1]
        device = acc.replayer.device
        self.clean_contrib = acc.clean_contrib[:, self.pos.to(device)]  # [L, N, d]
        self.clean_norm = acc.clean_norm[:, self.pos.to(device)]  # [L, N]
        index = {(v.split, v.skipped): k for k, v in enumerate(acc.variants)}
        groups = [0 if with_current else None] + self.splits  # the split value of each group
        measured = torch.ones_like(self.pos, dtype=torch.bool) if keep is None else keep[self.pos]
        self.slots = [((self.group == g) & measured).nonzero()[:, 0] for g in range(len(groups))]  # measured slots
        #: variant row of (packed row r, group g); rows: -1 (noise), 0..L-1
        self.rows = list(range(-1, trace.n_layers))
        self.variant = [[None if t is None else index[(t, r)] for t in groups] for r in self.rows]

    @property
    def n_slots(self) -> int:
        return self.pos.shape[0]

    def _targets(self, rows: Sequence[int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per measured group g: (g, batch indices b, variant rows k) of the packed rows ``rows``."""
        out = []
        for g in range(len(self.slots)):
            pairs = [(b, self.variant[r + 1][g]) for b, r in enumerate(rows) if self.variant[r + 1][g] is not None]
            if pairs:
                out.append((g, torch.tensor([b for b, _ in pairs]), torch.tensor([k for _, k in pairs])))
        return out

    def record(self, layer: int, rows: Sequence[int], contrib: torch.Tensor) -> None:
        """contrib: the packed rows' layer-``layer`` contributions, [B, N, d]."""
        rel = ((contrib - self.clean_contrib[layer]).norm(dim=-1) / self.clean_norm[layer]).cpu()  # [B, N]
        for g, batch, variant in self._targets(rows):
            self.acc.set_effect(variant, layer, rel[batch][:, self.slots[g]].amax(dim=-1))

    def record_output(self, rows: Sequence[int], final: torch.Tensor, clean_probs: _CleanProbs) -> None:
        """O of each measured group of the packed rows from their final residuals [B, N, d], decoded at once."""
        final = final.cpu()
        resid, pos, owner = [], [], []
        for g, batch, variant in self._targets(rows):
            slots = self.slots[g]
            resid.append(final[batch][:, slots].reshape(-1, final.shape[-1]))  # [b * n_g, d]
            pos.append(self.pos[slots].repeat(len(batch)))
            owner.append(variant.repeat_interleave(len(slots)))
        if not resid:
            return
        owner = torch.cat(owner)
        dist = _output_distances(self.acc.replayer, torch.cat(resid), clean_probs, torch.cat(pos))
        best = torch.zeros(len(self.acc.variants)).scatter_reduce(0, owner, dist, reduce="amax", include_self=True)
        touched = owner.unique()
        self.acc.set_output(touched, best[touched])


def _packed_view(replayer: Replayer, splits: Sequence[int], pos: torch.Tensor,
                 group: torch.Tensor) -> Replayer | None:
    """The packed Replayer for this layout, or None where the model's layer calls cannot be packed."""
    limit = torch.tensor([replayer.trace.n_tokens, *splits])[group]  # a slot sees prefix slots below this
    visible = (group[:, None] == group[None, :]) | ((group[None, :] == 0) & (pos[None, :] < limit[:, None]))
    return replayer.packed(pos, visible)


def _packed_variants(replayer: Replayer, splits: Sequence[int], with_current: bool, local: bool,
                     keep: torch.Tensor | None = None,
                     where: _Window = _Window()) -> tuple[_Accumulator, _Packing] | None:
    """The accumulator (variant rows as unpacked) and the packing, or None if the model cannot be packed.
    ``splits`` are text positions; the layout is in the replay's rows."""
    rows = [t - where.offset for t in splits]
    pos, group = _packed_layout(replayer.trace.n_tokens, rows, with_current)
    view = _packed_view(replayer, rows, pos, group)
    if view is None:
        return None
    trace = replayer.trace
    variants = _skip_variants(trace.n_layers, trace.n_tokens, [*splits, *([None] if with_current else [])], keep,
                              where)
    if local:
        _localise(variants)
    acc = _Accumulator(replayer, variants)
    return acc, _Packing(acc, splits, with_current, view, pos, group, keep, where)


@torch.no_grad()
def _run_skips_packed(acc: _Accumulator, pack: _Packing, max_batch_tokens: int,
                      progress: Callable[[str, float], None] | None) -> _Accumulator:
    """Future (and current) skips as one packed sequence per skipped layer; see _Packing."""
    trace = acc.replayer.trace
    pos, in_window = pack.pos, pack.in_window
    device = acc.replayer.device
    clean_probs = _CleanProbs(trace)
    inputs = torch.empty(len(pack.rows), pack.n_slots, trace.resid.shape[-1])
    for i, s in enumerate(pack.rows):
        if s < 0:
            inputs[i] = trace.resid[0][pos]
            continue
        inputs[i] = torch.where(in_window, trace.resid[s][pos], trace.resid[s + 1][pos])
        pack.record(s, [s], (inputs[i] - trace.resid[s][pos])[None].to(device))
    batch = max(1, max_batch_tokens // pack.n_slots)
    n_batches = -(-len(pack.rows) // batch)
    for index, first in enumerate(range(0, len(pack.rows), batch)):
        rows = pack.rows[first:first + batch]

        def on_layer(layer, local, inp, out, rows=rows, index=index):
            pack.record(layer, [rows[i] for i in local.tolist()], out - inp)
            _layer_progress(progress, "skip", layer, trace.n_layers, index, n_batches)
            acc.changed()

        final = pack.view.run_staggered([max(s + 1, 0) for s in rows], inputs[first:first + batch], on_layer)
        pack.record_output(rows, final, clean_probs)
        _layer_progress(progress, "skip", trace.n_layers - 1, trace.n_layers, index, n_batches)  # batch done
    return acc


def _layer_progress(progress: Callable[[str, float], None] | None, label: str, layer: int, n_layers: int,
                    batch: int, n_batches: int) -> None:
    """'skip replay, layer l/L' as the staggered batches advance; the fraction runs over all batches."""
    if progress:
        where = f", batch {batch + 1}/{n_batches}" if n_batches > 1 else ""
        progress(f"{label} replay, layer {layer + 1}/{n_layers}{where}", (batch + (layer + 1) / n_layers) / n_batches)


@torch.no_grad()
def _run_local_packed(acc: _Accumulator, pack: _Packing, max_batch_tokens: int,
                      progress: Callable[[str, float], None] | None) -> _Accumulator:
    """§6.3 on the packed layout: layer i >= s runs on h_i - c_s in the prefix window, no cascade."""
    trace = acc.replayer.trace
    pos, in_window = pack.pos, pack.in_window.float()
    edits = torch.stack([torch.zeros(pack.n_slots, trace.resid.shape[-1]) if s < 0
                         else trace.contrib[s][pos] * in_window for s in pack.rows])  # [R, N, d]
    batch = max(1, max_batch_tokens // pack.n_slots)
    for layer in range(trace.n_layers):
        rows = [i for i, s in enumerate(pack.rows) if s < layer]  # the noise row has s = -1
        clean_in = trace.resid[layer][pos][None]  # [1, N, d]
        for first in range(0, len(rows), batch):
            chunk = rows[first:first + batch]
            inp = (clean_in - edits[chunk]).to(acc.replayer.device)
            pack.record(layer, [pack.rows[i] for i in chunk], pack.view.run_layer(layer, inp) - inp)
        if progress:
            progress(f"direct-path replay, layer {layer + 1}/{trace.n_layers}", (layer + 1) / trace.n_layers)
        acc.changed()
    clean_probs = _CleanProbs(trace)
    for first in range(0, len(pack.rows), batch):
        chunk = list(range(first, min(first + batch, len(pack.rows))))
        pack.record_output([pack.rows[i] for i in chunk], trace.resid[-1][pos][None] - edits[chunk], clean_probs)
    return acc


def _run_family(replayer: Replayer, family, variants, split_list, pack: bool, keep, where: _Window,
                partial: Partial, max_batch_tokens: int, progress) -> _Accumulator:
    """The plain or the direct-path skips (``family``: future, current, packed run, plain run), packed
    where the model's layer calls allow it."""
    future, current, packed_run, plain_run = family
    chosen = [t for t in split_list if (t is None and current in variants) or (t is not None and future in variants)]
    future_splits = [t for t in chosen if t is not None]
    packing = None
    if pack and future_splits:
        packing = _packed_variants(replayer, future_splits, current in variants, future != "future", keep, where)
    if packing is not None:
        partial.watch(packing[0])
        return packed_run(*packing, max_batch_tokens, progress)
    return plain_run(replayer, chosen, max_batch_tokens, progress, partial.watch, keep, where)


def _placement(replayer: Replayer, measured: Sequence[int] | None
               ) -> tuple[torch.Tensor | None, _Window, list[int] | None]:
    """(measured rows [T] bool or None for all, where the replay sits and edits, the measured positions
    as a window or None)."""
    n_rows, offset = replayer.trace.n_tokens, getattr(replayer, "offset", 0)
    n_tokens = getattr(replayer, "n_text", n_rows)
    if measured is None or len(measured) >= n_tokens:
        if offset or n_rows < n_tokens:
            raise ValueError("a Replayer over part of the text needs the measured positions inside it")
        return None, _Window(0, 1), None
    measured = sorted(int(p) for p in measured)
    if measured[0] < offset or measured[-1] >= offset + n_rows:
        raise ValueError(f"measured positions {measured[0]}…{measured[-1]} are outside the replayed window "
                         f"{offset}…{offset + n_rows - 1}")
    keep = torch.zeros(n_rows, dtype=torch.bool)
    keep[torch.as_tensor(measured, dtype=torch.long) - offset] = True
    return keep, _Window(offset, max(measured[0], 1)), measured


def skip_effects(replayer: Replayer, splits: Sequence[int] | None = None,
                 variants: Sequence[str] = VARIANTS, seed: int = SEED_FUTURE,
                 max_batch_tokens: int = 8192, pack: bool = True,
                 progress: Callable[[str, float], None] | None = None,
                 on_partial: Callable[[SkipResult], None] | None = None,
                 partial_every_s: float | None = None, measured: Sequence[int] | None = None) -> SkipResult:
    """Run the requested skip variants on the replayer's prompt; see the module docstring.

    ``measured``: the run's measured positions (text positions; None: all). R and O are then maxima over
    the measured positions only (the output is decoded only there), the layer is skipped from the first
    measured position on (not from position 1) and the drawn splits fall inside the window, so nothing
    before the window changes: a Replayer over the window (``Replayer.offset``) replays it alone, against
    the clean keys / values of the text before it, at a cost that does not grow with the text.

    ``pack=False`` runs every split as its own full-length sequence (the unpacked path).
    ``on_partial(result)`` hears the cells measured so far while the replay advances layer by layer
    (every affected layer fills for all skipped layers at once), at most every ``partial_every_s``
    (default ``PARTIAL_EVERY_S``).
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown skip variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    n_tokens = getattr(replayer, "n_text", replayer.trace.n_tokens)
    keep, where, window = _placement(replayer, measured)
    splits = check_splits(splits, n_tokens, window) if splits else draw_splits(n_tokens, seed, measured=window)
    wants_future = any(v.endswith("future") for v in variants)
    if wants_future and not splits:
        raise ValueError(f"the prompt has {n_tokens} tokens; the future-effect skip needs a split point "
                         "t with 8 <= t < T-4 (at least 13 tokens) or explicit --splits")
    split_list: list[int | None] = []
    if wants_future:
        split_list += list(splits)
    if any(v.endswith("current") for v in variants):
        split_list.append(None)
    every_s = PARTIAL_EVERY_S if partial_every_s is None else partial_every_s
    partial = Partial(on_partial, list(splits) if wants_future else [], every_s)
    done = partial.done
    for family in (("future", "current", _run_skips_packed, _run_skips),
                   ("local_future", "local_current", _run_local_packed, _run_local)):
        if family[0] in variants or family[1] in variants:
            done.append(frames(_run_family(replayer, family, variants, split_list, pack, keep, where, partial,
                                           max_batch_tokens, progress)))
    matrix = pd.concat([f[0] for f in done], ignore_index=True)
    output = pd.concat([f[1] for f in done], ignore_index=True)
    matrix = reduce_splits(matrix, ["variant", "skipped", "affected"])
    output = reduce_splits(output, ["variant", "skipped"])
    return SkipResult(matrix=matrix, output=output, splits=list(splits) if wants_future else [])
