"""Effective depth along a trace (not in the papers): the ED rules on each segment of consecutive measured
positions, with a percentile bootstrap over the segment's positions.

A long chain of thought is one text, but its question, its middle and its end need not use the model's
depth alike. ``segments(layer_token, size)`` cuts the measured positions into consecutive segments of
``size`` positions (the last may be shorter), takes each segment's layer curves (the token mean over its
positions, as a run measured at ``--positions A:B`` has) and runs every ED rule on them; the interval
resamples the segment's positions (B = ``SEGMENT_BOOT``). A segment's ``stop`` is the next one's ``start``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from effdepth import depth
from effdepth.sweeps.curves import BOOT_SEED, LEVEL, bootstrap_stacked

SEGMENT_BOOT = 200  # resamples per segment: a 8k-token trace has some 30 segments of 256
COLUMNS = ["segment", "start", "stop", "n_positions", "probe", "rule", "ed", "edr", "edr_lo", "edr_hi",
           "frac_none"]
#: the JSON's rule keys: P1's exact rules, and the guarded ones beside them
JSON_RULES = {"p1": "ed", "guarded": "ed_guarded"}


@dataclass(frozen=True)
class Segment:
    start: int  # its first position
    stop: int  # the next segment's first position (or one past the last measured position)
    positions: tuple[int, ...]  # the measured positions in it


def segment_bounds(measured: Sequence[int], size: int) -> list[Segment]:
    """Consecutive segments of ``size`` measured positions (ValueError for a size below 1)."""
    if int(size) < 1:
        raise ValueError(f"a segment holds at least 1 position, not {size}")
    ordered = sorted(int(p) for p in measured)
    cuts = list(range(0, len(ordered), int(size)))
    return [Segment(ordered[c], ordered[c + size] if c + size < len(ordered) else ordered[-1] + 1,
                    tuple(ordered[c:c + size])) for c in cuts]


def segments(layer_token: pd.DataFrame, size: int, n_boot: int = SEGMENT_BOOT, seed: int = BOOT_SEED,
             level: float = LEVEL) -> pd.DataFrame:
    """ED / EDR of every rule per segment of ``size`` measured positions, with bootstrap intervals ->
    DataFrame[segment, start, stop, n_positions, probe, rule, ed, edr, edr_lo, edr_hi, frac_none]."""
    rows = layer_token[layer_token["metric"].isin(depth.CURVE_INPUTS)]
    if not len(rows):
        return pd.DataFrame(columns=COLUMNS)
    wide = rows.pivot_table(index="pos", columns=["metric", "layer"], values="value", aggfunc="first",
                            dropna=False).sort_index().sort_index(axis=1)
    values, index = wide.to_numpy(dtype=float), wide.index.to_numpy()
    frames = []
    for number, segment in enumerate(segment_bounds(index.tolist(), size)):
        where = np.searchsorted(index, segment.positions)
        if n_boot:
            ed = bootstrap_stacked(wide.columns, values[where], np.ones(len(where)), "prompt", n_boot, seed,
                                   level).ed
        else:  # the point estimate only (a sweep's items are resampled instead)
            curve = np.nanmean(values[where], axis=0)
            ed = depth.ed_table(pd.DataFrame({"metric": wide.columns.get_level_values(0),
                                              "layer": wide.columns.get_level_values(1), "value": curve}))
            ed = ed.assign(edr_lo=np.nan, edr_hi=np.nan, frac_none=np.nan)
        frames.append(ed.assign(segment=number, start=segment.start, stop=segment.stop,
                                n_positions=len(segment.positions)))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


ITEM_COLUMNS = ["segment", "probe", "rule", "n_items", "edr_mean", "edr_lo", "edr_hi", "n_none"]


def segments_over_items(layer_tokens: Mapping[str, pd.DataFrame], size: int, n_boot: int = 1000,
                        seed: int = BOOT_SEED, level: float = LEVEL) -> pd.DataFrame:
    """Segment k of every item (its k-th run of ``size`` measured positions): the mean EDR over the items that
    reach it, with a percentile bootstrap over those items; items with no transition there are counted."""
    rows = []
    per_item = [segments(frame, size, n_boot=0) for frame in layer_tokens.values()]
    table = pd.concat(per_item, ignore_index=True) if per_item else pd.DataFrame(columns=COLUMNS)
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2 * 100
    for (segment, probe, rule), group in table.groupby(["segment", "probe", "rule"], sort=True):
        edr = group["edr"].astype(float).to_numpy()
        found = edr[~np.isnan(edr)]
        lo = hi = mean = np.nan
        if len(found):
            mean = float(found.mean())
            draws = found[rng.integers(0, len(found), size=(n_boot, len(found)))].mean(axis=1) if n_boot else found
            lo, hi = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
        rows.append({"segment": int(segment), "probe": probe, "rule": rule, "n_items": len(group),
                     "edr_mean": mean, "edr_lo": lo, "edr_hi": hi, "n_none": int(np.isnan(edr).sum())})
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def segments_json(frame: pd.DataFrame) -> list[dict]:
    """[{start, stop, n_positions, ed: {probe: {ed, edr, edr_lo, edr_hi}}, ed_guarded: {...}}] per segment."""
    out = []
    for (start, stop, count), group in frame.groupby(["start", "stop", "n_positions"], sort=True):
        entry: dict = {"start": int(start), "stop": int(stop), "n_positions": int(count)}
        for rule, key in JSON_RULES.items():
            entry[key] = {r.probe: {"ed": None if pd.isna(r.ed) else int(r.ed), "edr": _number(r.edr),
                                    "edr_lo": _number(r.edr_lo), "edr_hi": _number(r.edr_hi)}
                          for r in group[group["rule"] == rule].itertuples()}
        out.append(entry)
    return out


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 6)


def boundaries(meta: Mapping) -> dict[str, int]:
    """The positions marked along a trace: where the model's own continuation starts (generate, then probe)
    and where a benchmark item's or a trace file's answer starts."""
    marks = {}
    if meta.get("generation") and meta.get("prompt_tokens"):
        marks["model's continuation →"] = int(meta["prompt_tokens"])
    if meta.get("answer_tokens"):
        marks["answer →"] = int(meta["n_tokens"]) - int(meta["answer_tokens"])
    return marks
