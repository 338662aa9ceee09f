"""What the Difficulty page and Compare's items mode say: EDR tables with intervals, item labels and
links into Explore, notes on left-out items, and the CLI commands that fill the cache.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from effdepth.memo import Memo, store_stamp
from effdepth.sweeps import depth_score
from effdepth.sweeps.items import ItemSet, explore_run


def _cache_flag(store) -> str:
    """`` --cache PATH`` on a continuation line when the store is not the project's default cache file."""
    path = getattr(store, "path", None)
    if path is None:
        return ""
    from effdepth.store import DEFAULT_PATH

    return "" if Path(path).absolute() == DEFAULT_PATH.absolute() else f" \\\n    --cache {shlex.quote(str(path))}"


def sweep_command(model: str, store=None, dataset: str = "gsm8k", n: int = 20,
                  probes: str = "cosine,logit_lens") -> str:
    """The CLI command that fills the cache with benchmark-item runs of ``model``."""
    return (f"effdepth sweep --model {shlex.quote(model)} --dataset {dataset} --n {n} --probes {probes}"
            + (_cache_flag(store) if store is not None else ""))


def skip_command(model: str, store=None, dataset: str = "gsm8k", n: int = 20) -> str:
    """The CLI command that adds the reduced future skip matrices the depth score needs."""
    return (f"effdepth sweep --model {shlex.quote(model)} --dataset {dataset} --n {n} --probes skip "
            "--skip-variants future" + (_cache_flag(store) if store is not None else ""))


def _ci_text(lo, hi, digits: int = 2) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "—"
    return f"[{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def edr_display(ed: pd.DataFrame, group_title: str = "bin") -> pd.DataFrame:
    """The ED/EDR table as shown: one row per (group, probe, rule), CIs as "[lo, hi]" text."""
    from effdepth import charts

    rows = []
    for r in ed.itertuples():
        none = pd.isna(r.ed)
        rows.append({group_title: r.group, "probe": charts.PROBE_TITLES.get(r.probe, r.probe),
                     "rule": {"p1": "P1", "guarded": "guarded"}.get(r.rule, r.rule),
                     "ED": None if none else int(r.ed), "ED 95% CI": _ci_text(r.ed_lo, r.ed_hi, 0),
                     "EDR": None if none else round(float(r.edr), 3),
                     "EDR 95% CI": _ci_text(r.edr_lo, r.edr_hi),
                     "no transition": f"{float(r.frac_none):.0%}" if not pd.isna(r.frac_none) else "—",
                     "items": int(r.n_items), "L": int(r.n_layers)})
    columns = [group_title, "probe", "rule", "ED", "ED 95% CI", "EDR", "EDR 95% CI", "no transition", "items", "L"]
    return pd.DataFrame(rows, columns=columns)


def item_options(item_set: ItemSet) -> list[str]:
    return list(item_set.items["item_id"])


def item_label(item_set: ItemSet, iid: str, eds: pd.DataFrame | None = None, probe: str = "cosine",
               rule: str = "p1") -> str:
    """"gsm8k #3 · 168 tokens · ED 14" for an item picker."""
    row = item_set.items[item_set.items["item_id"] == iid]
    if not len(row):
        return iid
    r = row.iloc[0]
    text = f"{r['dataset']} #{r['item_index']}" + (f" ({r['bin']})" if r["bin"] != r["dataset"] else "")
    text += f" · {r['n_tokens']} tokens"
    if eds is not None and len(eds):
        sel = eds[(eds["item_id"] == iid) & (eds["probe"] == probe) & (eds["rule"] == rule)]
        if len(sel):
            ed = sel["ed"].iloc[0]
            text += " · no transition" if pd.isna(ed) else f" · ED {int(ed)}"
    return text


def explore_query(item_set: ItemSet, iid: str, probe: str | None = None, demo: bool = False) -> dict[str, str]:
    """URL query that opens the item's run in Explore (``app.query_for_run``), naming the item too."""
    from effdepth import app

    run_id = explore_run(item_set, iid, probe)
    meta = dict(item_set.metas.get(run_id) or {"run_id": run_id, "model_name": item_set.model_name,
                                                 "dtype": item_set.dtype})
    meta.setdefault("run_id", run_id)
    return app.query_for_run(meta, demo=demo, item=iid)


def item_name(item_set: ItemSet, iid: str) -> str:
    """"gsm8k[3]": an item as the CLI names it."""
    row = item_set.items[item_set.items["item_id"] == iid]
    return f"{row['dataset'].iloc[0]}[{int(row['item_index'].iloc[0])}]" if len(row) else iid


def depth_score_notes(item_set: ItemSet, scores: depth_score.DepthScores | None, limit: int = 10) -> list[str]:
    """Why items are missing from the depth score: one sentence per bin and reason, e.g. "Bin short: all 2
    items are too short for the future-effect skip (< 13 tokens), so the bin has no depth score (n/a):
    mix[3], mix[4]." (the page shows them next to the bars, where such a bin reads n/a)."""
    left = scores.left_out if scores is not None else None
    if left is None or not len(left):
        return []
    first = scores.scores.drop_duplicates("bin").set_index("bin")
    notes = []
    for (name, reason), group in left.groupby(["bin", "reason"], sort=False):
        k, n = len(group), int(first.loc[name, "n_items"] + first.loc[name, "n_left_out"])
        names = [item_name(item_set, i) for i in group["run_id"]]
        listed = ", ".join(names[:limit]) + (f" and {k - limit} more" if k > limit else "")
        why = depth_score.LEFT_OUT_REASONS[reason]
        if int(first.loc[name, "n_items"]) == 0 and k == n:
            who = "its only item is" if k == 1 else f"all {k} items are"
            notes.append(f"Bin {name}: {who} {why}, so the bin has no depth score (n/a): {listed}.")
        else:
            verb = "is" if k == 1 else "are"
            none_left = " (no item is left, so the bin has no depth score: n/a)" if not int(
                first.loc[name, "n_items"]) else ""
            notes.append(f"Bin {name}: {k} of {n} items {verb} {why} and {verb} left out of its depth score"
                         f"{none_left}: {listed}.")
    return notes


def absent_bins(item_set: ItemSet, shown, section: str) -> list[str]:
    """Why a bin of the sweep is missing from a section ("curves": the ED section, "skip": the depth score),
    one sentence per bin, e.g. "aime: its 12 items have no cosine or logit-lens curves (skip runs only)." A
    sweep of a model with one dataset run for the lens and another for skips otherwise shows each section
    with a different bin and no word why."""
    shown = set(shown)
    items = item_set.items
    column, lack = {"curves": ("has_curves", "no cosine or logit-lens curves"),
                    "skip": ("has_skip", "no future-effect skip matrix")}[section]
    notes = []
    for name in item_set.bins:
        if name in shown:
            continue
        rows = items[items["bin"] == name]
        n = len(rows)
        have = "its only item has" if n == 1 else f"its {n} items have"
        other = ("skip runs only" if section == "curves" and bool(rows["has_skip"].any())
                 else "cosine / logit-lens runs only" if section == "skip" and bool(rows["has_curves"].any())
                 else "")
        if not bool(rows[column].any()):
            notes.append(f"{name}: {have} {lack}" + (f" ({other})." if other else "."))
    return notes


_TOKEN_DEPTH_MEMO = Memo(size=4)


def token_depth_table(store, item_set: ItemSet) -> pd.DataFrame:
    """The mean commitment depth per bin and token class over the sweep's items (each item's run that has
    the logit lens), for display: bin, class, mean, 95% CI, tokens, items. Empty without lens runs."""
    from effdepth import sweeps

    run_ids = [m.sources.get("metric:rank") for m in item_set.merged.values()]
    run_ids = tuple(r for r in run_ids if r)

    def build() -> pd.DataFrame:
        table = sweeps.token_depth_by_class(sweeps.token_depth_rows(store, run_ids))
        rank = {name: k for k, name in enumerate(item_set.bins)}  # the page's bin order, easy to hard
        table = table.sort_values("bin", key=lambda col: col.map(lambda b: rank.get(b, len(rank))),
                                  kind="stable").reset_index(drop=True)
        ci = [("" if pd.isna(lo) else f"[{lo:.1f}, {hi:.1f}]") for lo, hi in zip(table["lo"], table["hi"])]
        return pd.DataFrame({"bin": table["bin"], "tokens of": table["class"], "mean depth": table["mean"].round(2),
                             "95% CI over items": ci, "tokens": table["n_tokens"], "items": table["n_items"]})

    return _TOKEN_DEPTH_MEMO.get((store_stamp(store), item_set.key, run_ids), build)
