"""Difficulty: the effective depth across the items of a sweep set, by bin (pure; no Streamlit, no model).

Aggregates over the items of a bin use ``curves.bootstrap_ci`` (token-weighted P1 or per-prompt P2)
on the merged curves plus ``cos_mu`` (the per-item mean of the three cosines, so the cosine curve gets
its own band). The depth score uses ``depth_score.depth_score_by_bin`` on the reduced (split =
SPLIT_MAX) future skip matrices; items with a skip run but no such matrix (prompts under 13 tokens) are
left out and reported. Bootstraps are memoised by the exact run ids they read (a run id fixes its numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from effdepth.sweeps import curves, depth_score
from effdepth.sweeps.items import AGGREGATE_METRICS, ED_PROBES, PROBE_METRIC, ItemSet, _memo, dataset_rank, explore_run


def _frames(item_set: ItemSet, item_ids: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """(layer frames, token counts) of some items, restricted to the curves the ED rules read."""
    tokens = dict(zip(item_set.items["item_id"], item_set.items["n_tokens"]))
    frames = {}
    for iid in item_ids:
        layer = item_set.merged[iid].layer
        frames[iid] = layer[layer["metric"].isin(AGGREGATE_METRICS)]
    return frames, {iid: int(tokens[iid]) for iid in item_ids}


def _group_items(item_set: ItemSet, by: str = "bin") -> dict[str, list[str]]:
    with_curves = item_set.items[item_set.items["has_curves"]]
    groups: dict[str, list[str]] = {}
    for row in with_curves.itertuples():
        groups.setdefault(getattr(row, by), []).append(row.item_id)
    return groups


def bootstrap(item_set: ItemSet, item_ids: Sequence[str], how: str = "token", n_boot: int | None = None,
              seed: int = curves.BOOT_SEED) -> curves.BootstrapCI:
    """``curves.bootstrap_ci`` over some items of a set (memoised by the runs behind them)."""
    n_boot = int(n_boot or curves.N_BOOT)
    ids = list(item_ids)
    key = ("boot", how, n_boot, seed, tuple((i, item_set.merged[i].run_ids) for i in ids))

    def build():
        frames, counts = _frames(item_set, ids)
        return curves.bootstrap_ci(frames, counts, how=how, n_boot=n_boot, seed=seed)

    return _memo(key, build)


@dataclass
class Aggregate:
    """Per group (bin, or model in Compare): the aggregate curves with bands and the ED/EDR with CIs."""

    curves: pd.DataFrame  # group, metric, layer, depth, value, lo, hi, n_layers, n_items
    ed: pd.DataFrame  # group, probe, rule, ed, edr, ed_lo, ed_hi, edr_lo, edr_hi, frac_none, n_boot, n_items, n_layers
    how: str
    n_boot: int


CURVE_COLUMNS = ["group", "metric", "layer", "depth", "value", "lo", "hi", "n_layers", "n_items"]


ED_COLUMNS = ["group", "probe", "rule", "ed", "edr", "ed_lo", "ed_hi", "edr_lo", "edr_hi", "frac_none", "n_boot",
              "n_items", "n_layers"]


def _aggregate(groups: Mapping[str, tuple[ItemSet, list[str]]], how: str, n_boot: int | None,
               seed: int) -> Aggregate:
    curve_parts, ed_parts = [], []
    n_boot = int(n_boot or curves.N_BOOT)
    for name, (item_set, ids) in groups.items():
        if not ids:
            continue
        ci = bootstrap(item_set, ids, how, n_boot, seed)
        n_layers = item_set.n_layers
        group_curves = ci.curves.assign(group=name, n_layers=n_layers, n_items=len(ids))
        group_curves["depth"] = group_curves["layer"].astype(float) / n_layers
        curve_parts.append(group_curves)
        ed = ci.ed[ci.ed["probe"].isin(ED_PROBES)].assign(group=name, n_items=len(ids), n_layers=n_layers)
        ed_parts.append(ed)
    all_curves = (pd.concat(curve_parts, ignore_index=True)[CURVE_COLUMNS] if curve_parts
              else pd.DataFrame(columns=CURVE_COLUMNS))
    ed = pd.concat(ed_parts, ignore_index=True)[ED_COLUMNS] if ed_parts else pd.DataFrame(columns=ED_COLUMNS)
    if len(ed):
        ed["ed"] = ed["ed"].astype("Int64")
    return Aggregate(all_curves.reset_index(drop=True), ed.reset_index(drop=True), how, n_boot)


def aggregate_by_bin(item_set: ItemSet, how: str = "token", n_boot: int | None = None,
                     seed: int = curves.BOOT_SEED) -> Aggregate:
    """Aggregate curves and ED/EDR with 95 % bootstrap CIs per bin (``group`` = the bin), for the
    items that have cosine / logit-lens curves."""
    groups = {b: (item_set, ids) for b, ids in _group_items(item_set).items()}
    return _aggregate(groups, how, n_boot, seed)


def probe_curves(agg: Aggregate, probe: str) -> pd.DataFrame:
    """The aggregate curve of one probe (cosine: μ) per group, with its band."""
    return agg.curves[agg.curves["metric"] == PROBE_METRIC[probe]].reset_index(drop=True)


def probe_eds(agg: Aggregate, probe: str) -> pd.DataFrame:
    return agg.ed[agg.ed["probe"] == probe].reset_index(drop=True)


def item_eds(item_set: ItemSet) -> pd.DataFrame:
    """``curves.per_item_ed`` of every item with curves, joined with its dataset, index and bin ->
    DataFrame[item_id, dataset, item_index, bin, n_tokens, run_id, probe, rule, ed, edr, n_layers]."""
    ids = [i for i, has in zip(item_set.items["item_id"], item_set.items["has_curves"]) if has]
    columns = ["item_id", "dataset", "item_index", "bin", "n_tokens", "run_id", "probe", "rule", "ed", "edr",
               "n_layers"]
    if not ids:
        return pd.DataFrame(columns=columns)
    per = curves.per_item_ed({i: item_set.merged[i].layer for i in ids}).rename(columns={"run_id": "item_id"})
    per = per[per["probe"].isin(ED_PROBES)]
    info = item_set.items[["item_id", "dataset", "item_index", "bin", "n_tokens"]]
    out = per.merge(info, on="item_id", how="left")
    out["run_id"] = [explore_run(item_set, i, p) for i, p in zip(out["item_id"], out["probe"])]
    return out[columns].reset_index(drop=True)


def skip_items(item_set: ItemSet) -> list[str]:
    return [i for i, has in zip(item_set.items["item_id"], item_set.items["has_skip"]) if has]


def _has_skip_run(item_set: ItemSet, iid: str) -> bool:
    """Whether some run of the item ran layer skipping (a prompt under 13 tokens then has only the
    current-effect variants, so no future matrix)."""
    item = item_set.merged[iid]
    return any(k.startswith("skip:") for k in item.sources) or any(
        "skip" in ((item_set.metas.get(r) or {}).get("probes") or []) for r in item.run_ids)


def depth_scores(item_set: ItemSet) -> depth_score.DepthScores | None:
    """``depth_score.depth_score_by_bin`` over the items with a layer-skipping run; those without a reduced
    future skip matrix (too short for it, < 13 tokens) are left out and listed in ``left_out``, and a bin
    with none left scores NaN (see ``depth_score_notes``). None if no item has a skip run."""
    table = item_set.items
    ids = [i for i, has in zip(table["item_id"], table["has_skip"]) if has or _has_skip_run(item_set, i)]
    if not ids:
        return None
    bins = dict(zip(table["item_id"], table["bin"]))
    tokens = dict(zip(table["item_id"], table["n_tokens"]))
    key = ("depth", tuple((i, item_set.merged[i].run_ids) for i in ids))
    return _memo(key, lambda: depth_score.depth_score_by_bin(
        {i: item_set.merged[i].skip for i in ids}, {i: item_set.merged[i].skip_output for i in ids},
        {i: bins[i] for i in ids}, variant="future", n_tokens={i: int(tokens[i]) for i in ids}))


def shared_datasets(set_a: ItemSet, set_b: ItemSet) -> list[str]:
    """Datasets in which both sets have items with curves, easy to hard."""
    a = set(set_a.items[set_a.items["has_curves"]]["dataset"])
    b = set(set_b.items[set_b.items["has_curves"]]["dataset"])
    return sorted(a & b, key=dataset_rank)


def shared_items(set_a: ItemSet, set_b: ItemSet, dataset: str | None = None) -> list[str]:
    """Item ids with curves in both sets (same dataset, index and text), optionally of one dataset."""
    def table(s: ItemSet) -> pd.DataFrame:
        t = s.items[s.items["has_curves"]]
        return t[t["dataset"] == dataset] if dataset else t

    both = table(set_a).merge(table(set_b), on=["item_id"], suffixes=("_a", "_b"))
    same = both[(both["prompt_hash_a"] == both["prompt_hash_b"]) | both["prompt_hash_a"].isna()
                | both["prompt_hash_b"].isna()]
    return list(same["item_id"])


def compare_aggregate(set_a: ItemSet, set_b: ItemSet, labels: tuple[str, str], item_ids: Sequence[str],
                      how: str = "token", n_boot: int | None = None, seed: int = curves.BOOT_SEED) -> Aggregate:
    """Aggregate curves and ED/EDR with CIs of two models over the same items (``group`` = the label);
    ``curves['depth']`` = layer / L puts models of different depth on one axis."""
    ids = list(item_ids)
    return _aggregate({labels[0]: (set_a, ids), labels[1]: (set_b, ids)}, how, n_boot, seed)
