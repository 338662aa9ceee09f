"""Where the skip probe edits and measures (docs/SPEC.md §6): the split points (P2's draw, or explicit
ones checked), the replayed window's place in the text, each variant's edited and measured rows, and
the packed layout of one skipped layer's splits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from effdepth import contract

SEED_FUTURE = contract.DEFAULT_SEED  # P2's random.seed for split positions
MAX_SPLITS = 4


def draw_splits(n_tokens: int, seed: int = SEED_FUTURE, max_splits: int = MAX_SPLITS,
                rng: random.Random | None = None, measured: Sequence[int] | None = None) -> list[int]:
    """Split points as in P2: candidates 8, 16, ... below T-4, shuffled with ``seed``, first 4 kept.

    With measured positions A … B (a window), the same inside it: A+8, A+16, … below B+1-4, so that each
    split has at least 8 edited positions of the window before it and 4 measured ones from it on."""
    rng = rng or random.Random(seed)
    first, stop = 0, n_tokens
    if measured is not None and len(measured):
        first, stop = min(measured), max(measured) + 1
    candidates = list(range(first + 8, stop - 4, 8))
    rng.shuffle(candidates)
    return candidates[:max_splits]


def check_splits(splits: Sequence[int], n_tokens: int, measured: Sequence[int] | None = None) -> list[int]:
    """Validate explicit split points: 2 <= t <= T-1 (a window 1..t-1 and at least one measured token);
    with measured positions, at least one of them before t (edited) and one at or after it."""
    bad = [t for t in splits if not 2 <= int(t) <= n_tokens - 1]
    if bad:
        raise ValueError(f"split points {bad} are outside 2..{n_tokens - 1} for a {n_tokens}-token prompt")
    unmeasured = [t for t in splits if measured is not None and not any(p >= int(t) for p in measured)]
    if unmeasured:
        raise ValueError(f"split points {unmeasured} have no measured position at or after them")
    unedited = [t for t in splits if measured is not None and not int(t) > max(min(measured), 1)]
    if unedited:
        raise ValueError(f"split points {unedited} leave no measured position before them to skip the layer at "
                         f"(the window starts at {min(measured)})")
    return list(dict.fromkeys(int(t) for t in splits))  # a repeated split point is one split


@dataclass(frozen=True)
class _Window:
    """Where the replay sits in the text: row i is position ``offset + i``; the skipped layer is skipped at
    positions >= ``first_edit`` only (1: every position but the first; a window's first measured one)."""

    offset: int = 0
    first_edit: int = 1

    def positions(self, n_rows: int) -> torch.Tensor:
        return torch.arange(n_rows) + self.offset


def _windows(n_tokens: int, split: int | None, keep: torch.Tensor | None = None,
             where: _Window = _Window()) -> tuple[torch.Tensor, torch.Tensor]:
    """(edited rows, measured rows) as [T] bool masks over the replayed rows; split None = current
    effect. ``keep`` [T] bool: the run's measured positions (None: all), which the measured rows stay within."""
    pos = where.positions(n_tokens)
    if split is None:
        edited, measured = pos >= where.first_edit, torch.ones(n_tokens, dtype=torch.bool)
    else:
        edited, measured = (pos >= where.first_edit) & (pos < split), pos >= split
    return edited, measured if keep is None else measured & keep


def _packed_layout(n_tokens: int, splits: Sequence[int], with_current: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean position, group) of every slot; the prefix is cut at the largest split without ``current``."""
    prefix = n_tokens if with_current else max(splits)
    pos = torch.cat([torch.arange(prefix), *(torch.arange(t, n_tokens) for t in splits)])
    group = torch.cat([torch.zeros(prefix, dtype=torch.long),
                       *(torch.full((n_tokens - t,), k + 1) for k, t in enumerate(splits))])
    return pos, group
