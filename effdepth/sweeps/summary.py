"""What a sweep says per bin, as one JSON-ready document (``effdepth sweep --json OUT``): for every bin its
item count, the ED / EDR of the aggregate curves per probe and rule with bootstrap CIs (token-weighted,
P1), P2's depth score, and the mean commitment depth per token class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from effdepth.sweeps.curves import bootstrap_ci, collect
from effdepth.sweeps.depth_score import depth_score_by_bin
from effdepth.sweeps.items import bin_order
from effdepth.sweeps.token_depth import by_class, sweep_rows


def _number(value):
    """JSON has no NaN: None instead; numpy scalars as plain numbers."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def sweep_document(store, run_ids: Sequence[str], how: str = "token", n_boot: int = 1000) -> dict:
    """{"bins": [{"bin", "n_items", "ed": [...], "depth_score": [...], "token_depth": [...]}], "n_items"}."""
    metas = {rid: store.meta(rid) or {} for rid in run_ids}
    bins: dict[str, list[str]] = {}
    for rid in run_ids:
        bins.setdefault(str(metas[rid].get("bin") or metas[rid].get("dataset") or "all"), []).append(rid)
    order = bin_order(pd.DataFrame({"dataset": [str(metas[r].get("dataset") or "") for r in run_ids],
                                    "bin": [str(metas[r].get("bin") or metas[r].get("dataset") or "all")
                                            for r in run_ids]}))  # easy to hard, "2 hops" before "10 hops"
    bins = {name: bins[name] for name in order}
    scores = _depth_scores(store, run_ids, metas)
    classes = by_class(sweep_rows(store, run_ids), n_boot=min(n_boot, 1000))
    out = []
    for name, ids in bins.items():
        out.append({"bin": name, "n_items": len(ids), "ed": _eds(store, ids, how, n_boot),
                    "depth_score": [{"effect": r["effect"], "reduce": r["reduce"], "n_items": int(r["n_items"]),
                                     "depth_score": _number(r["depth_score"])}
                                    for r in scores if r["bin"] == name],
                    "token_depth": [{"class": r["class"], "mean": _number(r["mean"]), "lo": _number(r["lo"]),
                                     "hi": _number(r["hi"]), "n_tokens": int(r["n_tokens"]),
                                     "n_items": int(r["n_items"])}
                                    for r in classes.to_dict("records") if r["bin"] == name]})
    return {"n_items": len(run_ids), "aggregate": how, "n_boot": n_boot, "bins": out}


def _eds(store, ids: Sequence[str], how: str, n_boot: int) -> list[dict]:
    frames, counts = collect(store, ids)
    ci = bootstrap_ci(frames, counts, how=how, n_boot=n_boot)
    return [{"probe": r["probe"], "rule": r["rule"], "ed": None if _number(r["ed"]) is None else int(r["ed"]),
             "edr": _number(r["edr"]), "edr_lo": _number(r["edr_lo"]), "edr_hi": _number(r["edr_hi"]),
             "frac_none": _number(r["frac_none"])} for r in ci.ed.to_dict("records")]


def _depth_scores(store, run_ids: Sequence[str], metas: dict) -> list[dict]:
    with_skip = [rid for rid in run_ids if "skip" in (metas[rid].get("probes") or [])]
    if not with_skip:
        return []
    bins = {rid: str(metas[rid].get("bin") or metas[rid].get("dataset") or "all") for rid in with_skip}
    result = depth_score_by_bin({rid: store.table(rid, "skip") for rid in with_skip},
                                {rid: store.table(rid, "skip_output") for rid in with_skip}, bins,
                                n_tokens={rid: int(metas[rid].get("n_tokens") or 0) for rid in with_skip})
    return result.scores.to_dict("records")
