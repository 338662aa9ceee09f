"""Aggregates over items: pure functions on the store's long tables.

- ``aggregate(layer_frames, token_counts, how)``: one per-layer curve per metric over items.
  ``"token"`` (P1): sum_i T_i v_i / sum_i T_i, which for a per-prompt token mean v_i is the mean over all
  tokens of all prompts (docs/SPEC.md §4, §5); ``"prompt"`` (P2): the plain mean of the per-prompt
  means; ``"max"``: the max over items (P2's reduction of the skip curves, §6). Items lacking a
  (metric, layer) are left out of that cell.
- ``bootstrap_ci``: items resampled with replacement (B = 1000, seeded), 95 % percentile intervals per
  (metric, layer) of the aggregate curve and of every ED/EDR that ``depth.ed_table`` derives from each
  bootstrap aggregate; a bootstrap aggregate with no transition counts in ``frac_none``.
- ``per_item_ed``: the ED table of each item on its own (the distribution behind the aggregate ED).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from effdepth import depth

N_BOOT = 1000


BOOT_SEED = 0


LEVEL = 0.95


ED_METRICS = depth.CURVE_INPUTS  # the curves depth.ed_table uses


def collect(store, run_ids: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """(layer frames, token counts) of stored runs, the inputs of ``aggregate`` / ``bootstrap_ci``."""
    frames = {rid: store.table(rid, "layer") for rid in run_ids}
    counts = {}
    for rid in run_ids:
        meta = store.meta(rid) if hasattr(store, "meta") else None
        counts[rid] = int(meta["n_tokens"]) if meta and meta.get("n_tokens") else int(
            len(store.table(rid, "tokens")))
    return frames, counts


def _stack(layer_frames: Mapping[str, pd.DataFrame]) -> tuple[list[str], pd.MultiIndex, np.ndarray]:
    """-> (run ids, (metric, layer) columns, values [n_items, n_cells] with NaN where missing)."""
    ids = list(layer_frames)
    if not ids:
        raise ValueError("no items to aggregate")
    long = pd.concat([f[["metric", "layer", "value"]].assign(run_id=rid)
                      for rid, f in layer_frames.items()], ignore_index=True)
    long["layer"] = long["layer"].astype(int)
    wide = long.pivot_table(index="run_id", columns=["metric", "layer"], values="value",
                            aggfunc="first", dropna=False).reindex(ids)
    wide = wide.sort_index(axis=1)
    return ids, wide.columns, wide.to_numpy(dtype=float)


def _weights(ids: Sequence[str], token_counts: Mapping[str, int] | None, how: str) -> np.ndarray:
    if how == "token":
        if token_counts is None:
            raise ValueError("token-weighted aggregation needs token_counts")
        missing = [rid for rid in ids if rid not in token_counts]
        if missing:
            raise ValueError(f"no token count for runs {missing[:3]}")
        return np.array([float(token_counts[rid]) for rid in ids])
    if how in ("prompt", "max"):
        return np.ones(len(ids))
    raise ValueError(f"unknown aggregation {how!r}; use 'token', 'prompt' or 'max'")


def _combine(values: np.ndarray, weights: np.ndarray, how: str) -> np.ndarray:
    """values [..., n_items, n_cells], weights [..., n_items] (bootstrap multiplicities folded in)."""
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    if how == "max":
        masked = np.where(present & (weights[..., None] > 0), values, -np.inf)
        out = masked.max(axis=-2)
        return np.where(np.isneginf(out), np.nan, out)
    w = weights[..., None] * present
    total = w.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * filled).sum(axis=-2) / total, np.nan)


def _frame(columns: pd.MultiIndex, values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"metric": columns.get_level_values(0), "layer": columns.get_level_values(1),
                         "value": values})


def aggregate(layer_frames: Mapping[str, pd.DataFrame], token_counts: Mapping[str, int] | None = None,
              how: str = "token") -> pd.DataFrame:
    """Per-layer curve per metric over items -> DataFrame[metric, layer, value] (see module docstring)."""
    ids, columns, values = _stack(layer_frames)
    weights = _weights(ids, token_counts, how)
    return _frame(columns, _combine(values, weights, how))


def _percentiles(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():  # all-NaN cells (metric missing everywhere) give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


class BootstrapCI(NamedTuple):
    curves: pd.DataFrame  # metric, layer, value, lo, hi
    ed: pd.DataFrame  # probe, rule, ed, edr, ed_lo, ed_hi, edr_lo, edr_hi, frac_none, n_boot


def bootstrap_ci(layer_frames: Mapping[str, pd.DataFrame], token_counts: Mapping[str, int] | None = None,
                 how: str = "token", n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                 level: float = LEVEL) -> BootstrapCI:
    """Percentile bootstrap over items of the aggregate curves and of their ED/EDR (see module doc)."""
    ids, columns, values = _stack(layer_frames)
    return bootstrap_stacked(columns, values, _weights(ids, token_counts, how), how, n_boot, seed, level)


def bootstrap_stacked(columns: pd.MultiIndex, values: np.ndarray, weights: np.ndarray, how: str = "prompt",
                      n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = LEVEL) -> BootstrapCI:
    """``bootstrap_ci`` on units already stacked: values [n_units, n_cells] over (metric, layer) ``columns``,
    one weight per unit (items of a sweep, or the positions of one trace's segment)."""
    point = _combine(values, weights, how)
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    draws = rng.integers(0, n, size=(n_boot, n))
    multiplicity = np.zeros((n_boot, n))
    np.add.at(multiplicity, (np.arange(n_boot)[:, None], draws), 1.0)
    boot = np.stack([_combine(values, weights * multiplicity[b], how) for b in range(n_boot)])
    lo, hi = _percentiles(boot, level)
    curves = _frame(columns, point).assign(lo=lo, hi=hi)

    point_ed = depth.ed_table(_frame(columns, point))
    samples = {(r.probe, r.rule): [] for r in point_ed.itertuples()}
    # The rules on plain arrays per resample (ed_table's pandas round trip would dominate the time).
    metrics, layers = columns.get_level_values(0), columns.get_level_values(1)
    picks = {}
    for metric in depth.CURVE_INPUTS:
        where = np.flatnonzero(metrics == metric)
        if len(where):
            picks[metric] = where[np.argsort(np.asarray(layers[where], dtype=int))]
    for b in range(n_boot):
        for r in depth.ed_results({m: boot[b][idx] for m, idx in picks.items()}):
            samples.setdefault((r.probe, r.rule), []).append(np.nan if r.ed is None else float(r.ed))
    rows = []
    for r in point_ed.itertuples():
        eds = np.array(samples[(r.probe, r.rule)], dtype=float)
        finite = eds[~np.isnan(eds)]
        ed_lo, ed_hi = _percentiles(finite[:, None], level) if len(finite) else (np.nan, np.nan)
        ed_lo, ed_hi = float(np.ravel(ed_lo)[0]), float(np.ravel(ed_hi)[0])
        rows.append({"probe": r.probe, "rule": r.rule, "ed": r.ed, "edr": r.edr,
                     "ed_lo": ed_lo, "ed_hi": ed_hi, "edr_lo": (ed_lo + 1) / r.n_layers,
                     "edr_hi": (ed_hi + 1) / r.n_layers,
                     "frac_none": float(np.isnan(eds).mean()) if len(eds) else np.nan,
                     "n_boot": n_boot})
    ed = pd.DataFrame(rows, columns=["probe", "rule", "ed", "edr", "ed_lo", "ed_hi", "edr_lo",
                                     "edr_hi", "frac_none", "n_boot"])
    ed["ed"] = ed["ed"].astype("Int64")
    return BootstrapCI(curves, ed)


def per_item_ed(layer_frames: Mapping[str, pd.DataFrame],
                skip_frames: Mapping[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """``depth.ed_table`` of every item on its own -> DataFrame[run_id, probe, rule, ed, edr, ...]."""
    frames = []
    for rid, layer in layer_frames.items():
        skip_df = skip_frames.get(rid) if skip_frames else None
        frames.append(depth.ed_table(layer, skip_df).assign(run_id=rid))
    if not frames:
        return pd.DataFrame(columns=["run_id", "probe", "rule", "ed", "edr", "n_layers", "threshold",
                                     "description"])
    out = pd.concat(frames, ignore_index=True)
    return out[["run_id"] + [c for c in out.columns if c != "run_id"]]


def ed_distribution(per_item: pd.DataFrame) -> pd.DataFrame:
    """Summary of ``per_item_ed``: per (probe, rule) n, n_none, mean/median/min/max of ED and EDR."""
    rows = []
    for (probe, rule), group in per_item.groupby(["probe", "rule"], sort=False):
        ed = group["ed"].astype("Float64").dropna().astype(float)
        edr = group["edr"].astype(float).dropna()
        rows.append({"probe": probe, "rule": rule, "n": len(group), "n_none": len(group) - len(ed),
                     "ed_mean": ed.mean() if len(ed) else np.nan,
                     "ed_median": ed.median() if len(ed) else np.nan,
                     "ed_min": ed.min() if len(ed) else np.nan, "ed_max": ed.max() if len(ed) else np.nan,
                     "edr_mean": edr.mean() if len(edr) else np.nan,
                     "edr_median": edr.median() if len(edr) else np.nan})
    return pd.DataFrame(rows)
