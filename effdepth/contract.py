"""The contract between effdepth's layers, torch-free: tables, probes, sentinels, progress.

Engine, store, CLI, charts and app read these names; no other module defines them again.
A run (:class:`RunResult`) is a ``meta`` dict plus one long table per name in :data:`TABLES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

#: progress(stage, fraction): fraction in [0, 1] within the stage, or None when unknown. Raising from it
#: ends the work (the app's stop control, a closed session).
Progress = Callable[[str, float | None], None]

#: the computations a run can include, in the order a run performs them (docs/SPEC.md §4–§7)
PROBES = ("cosine", "logit_lens", "skip", "erasure", "igrad")
DEFAULT_PROBES = ("cosine", "logit_lens", "skip")  # erasure and IG cost (L+1)·T and L·N passes: opt-in
ANSWER_PROBES = ("erasure", "igrad")  # the probes that measure the answer span at the end of the prompt
#: the layer-skip variants (docs/SPEC.md §6.1–§6.3): effect on later tokens / the same token, through the
#: whole network or the direct path only
SKIP_VARIANTS = ("future", "current", "local_future", "local_current")

#: ``split`` of the skip tables for variants without a split point (current effect: every position)
SPLIT_NONE = 0
#: ``split`` of the rows that hold the maximum over all split points (the reduced matrix)
SPLIT_MAX = -1
#: ``skipped`` of the noise-floor rows: variants whose edit changes nothing
SKIPPED_NOISE = -1

#: Long tables: (column, DuckDB type, pandas dtype as the engine produces it). Columns the engine adds
#: later are accepted by the store too (added to its table on the fly).
TABLE_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "tokens": [("pos", "INTEGER", "int64"), ("token_id", "BIGINT", "int64"), ("token", "VARCHAR", "str")],
    "layer_token": [("metric", "VARCHAR", "str"), ("layer", "INTEGER", "int64"), ("pos", "INTEGER", "int64"),
                    ("value", "DOUBLE", "float64")],
    "layer": [("metric", "VARCHAR", "str"), ("layer", "INTEGER", "int64"), ("value", "DOUBLE", "float64")],
    "skip": [("variant", "VARCHAR", "str"), ("split", "INTEGER", "int64"), ("skipped", "INTEGER", "int64"),
             ("affected", "INTEGER", "int64"), ("value", "DOUBLE", "float64")],
    "skip_output": [("variant", "VARCHAR", "str"), ("split", "INTEGER", "int64"),
                    ("skipped", "INTEGER", "int64"), ("value", "DOUBLE", "float64")],
    "lens_topk": [("layer", "INTEGER", "int64"), ("pos", "INTEGER", "int64"), ("rank", "INTEGER", "int64"),
                  ("token_id", "BIGINT", "int64"), ("prob", "DOUBLE", "float64"), ("token", "VARCHAR", "str")],
    "ed": [("probe", "VARCHAR", "str"), ("rule", "VARCHAR", "str"), ("ed", "INTEGER", "Int64"),
           ("edr", "DOUBLE", "float64"), ("n_layers", "INTEGER", "int64"), ("threshold", "DOUBLE", "float64"),
           ("description", "VARCHAR", "str")],
    "erasure": [("depth", "INTEGER", "int64"), ("pos", "INTEGER", "int64"), ("value", "DOUBLE", "float64")],
    "igrad": [("part", "VARCHAR", "str"), ("layer", "INTEGER", "int64"), ("pos", "INTEGER", "int64"),
              ("value", "DOUBLE", "float64")],
}
TABLES = tuple(TABLE_COLUMNS)
#: tables added after the first release: a run built (or cached) without them gets them empty
OPTIONAL_TABLES = ("erasure", "igrad")


def columns(table: str) -> list[str]:
    """The column names of one long table."""
    return [name for name, _, _ in TABLE_COLUMNS[table]]


def empty_table(table: str) -> pd.DataFrame:
    """An empty long table with its columns (what a run holds for a probe it did not run)."""
    return pd.DataFrame(columns=columns(table))


@dataclass
class RunResult:
    """One run: ``meta`` (a row of the store's runs table) and long-format ``tables``."""

    meta: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in OPTIONAL_TABLES:
            if name not in self.tables or self.tables[name] is None:
                self.tables[name] = empty_table(name)
        missing = [name for name in TABLES if name not in self.tables]
        if missing:
            raise ValueError(f"RunResult is missing tables {missing}")

    @property
    def run_id(self) -> str:
        return self.meta["run_id"]

    def layer_curve(self, metric: str) -> pd.Series:
        rows = self.tables["layer"]
        return rows[rows["metric"] == metric].set_index("layer")["value"].sort_index()
