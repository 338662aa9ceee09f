"""The skip probe's long tables (docs/SPEC.md §6): the result type, the accumulator's rows as frames, the
max over splits, and the partial results handed out while the replay runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from effdepth import contract


@dataclass
class SkipResult:
    """Long tables of the skip probe; see the module docstring."""

    matrix: pd.DataFrame  # variant, split, skipped, affected, value
    output: pd.DataFrame  # variant, split, skipped, value
    splits: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, cols in (("matrix", contract.columns("skip")), ("output", contract.columns("skip_output"))):
            if list(getattr(self, name).columns) != cols:
                raise ValueError(f"{name} columns {list(getattr(self, name).columns)} != {cols}")


def frames(acc, known_only: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(matrix, output) rows of the accumulator; ``known_only``: just the cells measured so far."""
    n_layers = acc.effect.shape[1]
    meta = pd.DataFrame([{"variant": v.kind, "split": v.split, "skipped": v.skipped}
                         for v in acc.variants])
    matrix = meta.loc[meta.index.repeat(n_layers)].reset_index(drop=True)
    matrix["affected"] = list(range(n_layers)) * len(acc.variants)
    matrix["value"] = acc.effect.double().reshape(-1).numpy()
    output = meta.assign(value=acc.output.double().numpy())
    if known_only:
        matrix = matrix[acc.filled.reshape(-1).numpy()].reset_index(drop=True)
        output = output[acc.output_done.numpy()].reset_index(drop=True)
    return matrix, output


#: the gap between two partial hand-overs grows to this fraction of the time the probe has run
PARTIAL_BACKOFF = 1 / 3


class Partial:
    """Hands ``on_partial`` the skip tables measured so far: the finished variant families in full, the
    running one's known cells (the values are final). The gap between two hand-overs is ``every_s`` at
    first and then a third of the time the probe has run, so a long probe is redrawn some ten times, not every
    second (each redraw costs the page a chart: measured 22 % of a 1.5B model's run at one per second)."""

    def __init__(self, on_partial: Callable[[SkipResult], None] | None, splits: list[int], every_s: float):
        self.on_partial, self.splits, self.every_s = on_partial, splits, every_s
        self.done: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.started = self.last = time.perf_counter()

    def watch(self, acc):
        if self.on_partial is not None:
            acc.on_change = lambda: self._maybe_send(acc)
        return acc

    def _maybe_send(self, acc) -> None:
        now = time.perf_counter()
        if now - self.last < max(self.every_s, PARTIAL_BACKOFF * (now - self.started)):
            return
        parts = [*self.done, frames(acc, known_only=True)]
        matrix = pd.concat([f[0] for f in parts], ignore_index=True)
        output = pd.concat([f[1] for f in parts], ignore_index=True)
        self.on_partial(SkipResult(reduce_splits(matrix, ["variant", "skipped", "affected"]),
                                   reduce_splits(output, ["variant", "skipped"]), self.splits))
        self.last = time.perf_counter()


def reduce_splits(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Append the max over splits as split = -1."""
    reduced = frame.groupby(keys, as_index=False, sort=False)["value"].max().assign(split=-1)
    return pd.concat([frame, reduced[frame.columns]], ignore_index=True)
