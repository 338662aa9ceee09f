"""The contract between effdepth's layers, torch-free: tables, probes, sentinels, progress.

Engine, store, CLI, charts and app read these names; no other module defines them again.
A run (:class:`RunResult`) is a ``meta`` dict plus one long table per name in :data:`TABLES`; a fitted
linear map between two models (:class:`LinearMap`) is a ``meta`` dict plus its error matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: progress(stage, fraction): fraction in [0, 1] within the stage, or None when unknown. Raising from it
#: ends the work (the app's stop control, a closed session).
Progress = Callable[[str, float | None], None]

#: the computations a run can include, in the order a run performs them (docs/SPEC.md §4–§7)
PROBES = ("cosine", "logit_lens", "shortcut_lens", "skip", "erasure", "igrad")
DEFAULT_PROBES = ("cosine", "logit_lens", "skip")  # erasure and IG cost (L+1)·T and L·N passes: opt-in
#: (the shortcut lens is opt-in too: its first use on a model fits it, a minute or more on a CPU)
ANSWER_PROBES = ("erasure", "igrad")  # the probes that measure the answer span at the end of the prompt
#: the layer-skip variants (docs/SPEC.md §6.1–§6.3): effect on later tokens / the same token, through the
#: whole network or the direct path only
SKIP_VARIANTS = ("future", "current", "local_future", "local_current")

#: One set of defaults, read by the CLI, the app and the Python API alike (so the same request finds the same
#: cached run from all three): P2's 256 integrated-gradient steps, P2's seed for the skip's split points,
#: a sweep's items and probes, and the longest continuation a request can ask for.
DEFAULT_IG_STEPS = 256
DEFAULT_SEED = 123
DEFAULT_SWEEP_N = 20
DEFAULT_SWEEP_PROBES = ("cosine", "logit_lens", "skip")
MAX_NEW_TOKENS = 4096
#: the weight dtypes a run may use, and the names each is also asked by (normalised before any cache key)
DTYPES = ("float32", "bfloat16")
DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def dtype_name(dtype) -> str:
    """The canonical name of a dtype (``bf16`` -> ``bfloat16``); ValueError naming the choices otherwise."""
    name = DTYPE_ALIASES.get(str(dtype).strip().lower()) if isinstance(dtype, str) else None
    if name is None:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_ALIASES)}, not {dtype!r}")
    return name


#: ``split`` of the skip tables for variants without a split point (current effect: every position)
SPLIT_NONE = 0
#: ``split`` of the rows that hold the maximum over all split points (the reduced matrix)
SPLIT_MAX = -1
#: ``skipped`` of the noise-floor rows: variants whose edit changes nothing
SKIPPED_NOISE = -1


def reduced_rows(frame: pd.DataFrame, variant: str | None = None, noise: bool = True) -> pd.DataFrame:
    """The rows of a skip table (``skip`` / ``skip_output``) that hold the max over split points, of one
    ``variant`` (None: every variant); ``noise=False`` leaves out the noise-floor rows."""
    keep = frame["split"] == SPLIT_MAX
    if variant is not None:
        keep &= frame["variant"] == variant
    if not noise:
        keep &= frame["skipped"] != SKIPPED_NOISE
    return frame[keep]

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


@dataclass
class LinearMap:
    """A fitted linear map between two models (``effdepth.linear.maps``): ``meta`` (the pair, the text, the
    token counts) and the held-out relative error of the map from source depth s to target depth j.

    error: [L_A+1, L_B+1] (rows: source depth s = 0 … L_A, columns: target depth j = 0 … L_B)."""

    meta: dict
    error: np.ndarray

    def __post_init__(self) -> None:
        self.error = np.asarray(self.error, dtype=float)
        expected = (int(self.meta["source_layers"]) + 1, int(self.meta["target_layers"]) + 1)
        if self.error.shape != expected:
            raise ValueError(f"error has shape {self.error.shape}, expected {expected} (L_A+1, L_B+1)")

    @property
    def map_id(self) -> str:
        return self.meta["map_id"]

    def best_target(self) -> np.ndarray:
        """For every source depth s, the target depth j of the smallest error -> [L_A+1] int."""
        return self.error.argmin(axis=1)

    def diagonal(self) -> np.ndarray:
        """The relative-depth diagonal: for every s, j = s · L_B / L_A (fractional) -> [L_A+1]."""
        n_a, n_b = self.error.shape[0] - 1, self.error.shape[1] - 1
        return np.arange(n_a + 1) * n_b / max(n_a, 1)
