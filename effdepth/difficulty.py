"""Difficulty: the effective depth across benchmark items, read from the sweeps in the store.

Pure functions over the DuckDB store (``effdepth.store.Store``) and pandas frames — no Streamlit, no
model. The Difficulty page and Compare's "benchmark items" mode are thin layers over them.

- A *benchmark-item run* is a stored run whose meta has ``dataset`` and ``item_index`` (written by
  ``effdepth sweep`` / ``probe --item``). Its bin is meta ``bin`` if set, else the dataset name.
- A *sweep set* is everything stored for one (model fingerprint, dtype, chat template).
- One item may have runs from several probe configs (a ``cosine,logit_lens`` sweep and a
  ``skip``-only sweep, say). They are merged per (fingerprint, dtype, chat template, dataset,
  item_index): each curve of the ``layer`` table (per metric) and each skip variant (per variant)
  comes from the newest run that has it. Runs whose text differs from the newest run of the item (an
  older dataset version) are left out of the merge.
- Aggregates over the items of a bin use ``sweep.bootstrap_ci`` (token-weighted P1 or per-prompt P2)
  on the merged curves plus ``cos_mu`` (the per-item mean of the three cosines, so that the cosine
  curve gets its own band; its aggregate equals the mean of the aggregated cosines); the depth score
  uses ``sweep.depth_score_by_bin`` on the reduced (split = -1) future skip matrices; items with a skip
  run but no such matrix (prompts under 13 tokens) are left out and reported (``depth_score_notes``).

Everything costly is memoised in-process: the store reads by the cache file's stamp (any write
changes it), the bootstraps by the exact run ids they read (a run id fixes its numbers).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from effdepth import depth, sweep
from effdepth.contract import SPLIT_MAX
from effdepth.memo import Memo, store_stamp

PROBES = ("cosine", "kl", "overlap")
RULES = ("p1", "guarded")
HOWS = {"token": "token-weighted (P1)", "prompt": "per-prompt mean (P2)"}
#: the curve of each probe that carries its ED (cosine: μ, the mean of the three cosines)
PROBE_METRIC = {"cosine": "cos_mu", "kl": "kl", "overlap": "overlap"}
COSINES = depth.COSINES
CURVE_METRICS = COSINES + ("cos_mu", "kl", "overlap")
#: known datasets from easy to hard (bins of other datasets follow, by name)
DATASET_ORDER = ("manual", "addition", "multiplication", "hellaswag", "gsm8k", "math", "mquake", "aime2024",
                 "aime2025")
ITEM_KEY = ("model_fingerprint", "dtype", "chat_template", "dataset", "item_index")
RUN_COLUMNS = ["run_id", "model_name", "model_fingerprint", "dtype", "chat_template", "dataset", "item_index",
               "bin", "n_layers", "n_tokens", "prompt_hash", "probes", "created"]


# --------------------------------------------------------------------------------------------------
# Commands shown to the user
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Memo
# --------------------------------------------------------------------------------------------------

_MEMO = Memo(size=64)


def _memo(key: tuple, build: Callable[[], Any]) -> Any:
    return _MEMO.get(key, build)


def clear_memo() -> None:
    _MEMO.clear()


_stamp = store_stamp


# --------------------------------------------------------------------------------------------------
# Reading the store
# --------------------------------------------------------------------------------------------------


def _bulk(store, sql: str, params: list) -> pd.DataFrame | None:
    """One query in one connection (the store's own transaction: lock retry, corrupt-file errors);
    None for store stand-ins without it."""
    transaction = getattr(store, "_transaction", None)
    if transaction is None:
        return None
    with transaction() as con:
        return con.execute(sql, params).df()


def _bin_of(meta: Mapping) -> str:
    value = meta.get("bin")
    return str(value) if value not in (None, "") else str(meta.get("dataset"))


def _run_row(run_id: str, meta: Mapping) -> dict:
    return {"run_id": str(run_id), "model_name": meta.get("model_name"),
            "model_fingerprint": meta.get("model_fingerprint"), "dtype": meta.get("dtype"),
            "chat_template": bool(meta.get("chat_template")), "dataset": str(meta.get("dataset")),
            "item_index": int(meta.get("item_index")), "bin": _bin_of(meta),
            "n_layers": int(meta.get("n_layers") or 0), "n_tokens": int(meta.get("n_tokens") or 0),
            "prompt_hash": meta.get("prompt_hash"), "probes": list(meta.get("probes") or []),
            "created": str(meta.get("created") or "")}


def _read_item_runs(store) -> tuple[pd.DataFrame, dict[str, dict]]:
    frame = _bulk(store, "SELECT run_id, meta_json FROM runs WHERE dataset IS NOT NULL AND item_index IS NOT NULL",
                  [])
    if frame is not None:
        pairs = [(r, json.loads(m)) for r, m in zip(frame["run_id"], frame["meta_json"])]
    else:
        listing = store.runs()
        pairs = []
        if listing is not None and len(listing):
            for row in listing.itertuples():
                if getattr(row, "dataset", None) is None or pd.isna(getattr(row, "item_index", None)):
                    continue
                meta = store.meta(row.run_id) if hasattr(store, "meta") else store.get(row.run_id).meta
                pairs.append((row.run_id, meta))
    metas = {str(r): m for r, m in pairs if m.get("dataset") not in (None, "") and m.get("item_index") is not None}
    rows = [_run_row(r, m) for r, m in metas.items()]
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs = runs.sort_values(["created", "run_id"], ascending=[False, True]).reset_index(drop=True)
    return runs, metas


def item_runs(store) -> pd.DataFrame:
    """Every benchmark-item run in the store, newest first -> DataFrame[RUN_COLUMNS] (memoised)."""
    return _memo(("item_runs", _stamp(store)), lambda: _read_item_runs(store))[0]


def run_metas(store) -> dict[str, dict]:
    """run id -> meta of every benchmark-item run (memoised with ``item_runs``)."""
    return _memo(("item_runs", _stamp(store)), lambda: _read_item_runs(store))[1]


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def dataset_rank(name: str) -> tuple:
    """Sort key of a dataset: known datasets from easy to hard, then the rest by name."""
    base = str(name).lower()
    rank = next((k for k, known in enumerate(DATASET_ORDER) if base == known or base.startswith(known)),
                len(DATASET_ORDER))
    return (rank, _natural(base))


def bin_order(runs: pd.DataFrame) -> list[str]:
    """Bins sorted by dataset difficulty (``DATASET_ORDER``), then naturally ("level 2" < "level 10")."""
    if runs is None or not len(runs):
        return []
    pairs = runs[["dataset", "bin"]].drop_duplicates()
    keyed = sorted(pairs.itertuples(index=False), key=lambda r: (dataset_rank(r.dataset), _natural(r.bin)))
    seen: list[str] = []
    for row in keyed:
        if row.bin not in seen:
            seen.append(row.bin)
    return seen


def set_key(fingerprint: str, dtype: str, chat: bool) -> str:
    return f"{fingerprint}|{dtype}|{int(bool(chat))}"


def sweep_sets(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep set (model fingerprint, dtype, chat template) of ``item_runs``:
    key, model_name (newest run's), dtype, chat_template, n_items, n_runs, n_layers, datasets (list),
    bins (list), label ("qwen2.5-coder-0.5b · float32 · 24 layers · 40 items: gsm8k 20, aime2025 20")."""
    columns = ["key", "model_name", "model_fingerprint", "dtype", "chat_template", "n_items", "n_runs", "n_layers",
               "datasets", "bins", "label"]
    if runs is None or not len(runs):
        return pd.DataFrame(columns=columns)
    from effdepth.app import short_model_name  # lazily: views pulls in the engine

    rows = []
    for (fp, dtype, chat), group in runs.groupby(["model_fingerprint", "dtype", "chat_template"], sort=False):
        items = group.drop_duplicates(["dataset", "item_index"])
        datasets = sorted(items["dataset"].unique(), key=dataset_rank)
        counts = items["dataset"].value_counts()
        name = str(group["model_name"].iloc[0])
        label = (f"{short_model_name(name)} · {dtype}{' · chat template' if chat else ''} · "
                 f"{int(group['n_layers'].iloc[0])} layers · {len(items)} items: "
                 + ", ".join(f"{d} {int(counts[d])}" for d in datasets))
        rows.append({"key": set_key(fp, dtype, chat), "model_name": name, "model_fingerprint": fp, "dtype": dtype,
                     "chat_template": bool(chat), "n_items": len(items), "n_runs": len(group),
                     "n_layers": int(group["n_layers"].iloc[0]), "datasets": datasets,
                     "bins": bin_order(items), "label": label})
    return pd.DataFrame(rows, columns=columns).sort_values(["model_name", "dtype", "chat_template"]).reset_index(
        drop=True)


def pick_set(sets: pd.DataFrame, model: str, dtype: str | None = None, chat: bool | None = None) -> str | None:
    """The key of the sweep set that best matches a view's model / dtype / chat template: the exact
    match, else the same model (any dtype / template), else the first set; None when there is none."""
    if sets is None or not len(sets):
        return None
    same = sets[(sets["model_name"] == model) | (sets["model_fingerprint"] == model)]
    for candidates in (same[(same["dtype"] == dtype) & (same["chat_template"] == bool(chat))],
                       same[same["dtype"] == dtype], same, sets):
        if len(candidates):
            return str(candidates["key"].iloc[0])
    return None


# --------------------------------------------------------------------------------------------------
# Merging the runs of one item
# --------------------------------------------------------------------------------------------------


@dataclass
class MergedItem:
    """One benchmark item with its curves and skip tables merged over its runs (newest first)."""

    layer: pd.DataFrame  # metric, layer, value (+ cos_mu when the three cosines are there)
    skip: pd.DataFrame  # variant, split, skipped, affected, value (split = -1 rows)
    skip_output: pd.DataFrame  # variant, split, skipped, value (split = -1 rows)
    sources: dict[str, str]  # "metric:<name>" / "skip:<variant>" -> run id it came from
    run_ids: tuple[str, ...]  # the runs merged, newest first
    dropped: tuple[str, ...] = ()  # runs left out (their text differs from the newest run's)


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else "object") for c in columns})


def merge_item(runs: Sequence[tuple[str, Mapping[str, pd.DataFrame]]],  # noqa: C901 - to split with the sweeps room (the house issue)
               hashes: Sequence[str | None] | None = None) -> MergedItem:
    """Merge the runs of one item, given newest first as (run id, {table name: frame}).

    ``layer``: each metric from the newest run that has it; ``skip`` / ``skip_output``: each variant
    from the newest run that has it (only the reduced split = -1 rows are kept). ``hashes``: the
    runs' prompt hashes; runs whose hash differs from the newest run's are dropped.
    """
    runs = list(runs)
    dropped: list[str] = []
    if hashes is not None and runs:
        first = hashes[0]
        keep = [(r, h) for r, h in zip(runs, hashes) if h == first or h is None or first is None]
        dropped = [r[0] for r, h in zip(runs, hashes) if not (h == first or h is None or first is None)]
        runs = [r for r, _ in keep]
    sources: dict[str, str] = {}
    layer_parts, skip_parts, out_parts = [], [], []
    for run_id, tables in runs:
        layer = tables.get("layer")
        if layer is not None and len(layer):
            for metric, rows in layer.groupby("metric", sort=False):
                if f"metric:{metric}" not in sources:
                    sources[f"metric:{metric}"] = run_id
                    layer_parts.append(rows[["metric", "layer", "value"]])
        skip = tables.get("skip")
        if skip is not None and len(skip):
            reduced = skip[skip["split"] == SPLIT_MAX]
            for variant, rows in reduced.groupby("variant", sort=False):
                if f"skip:{variant}" not in sources:
                    sources[f"skip:{variant}"] = run_id
                    skip_parts.append(rows[["variant", "split", "skipped", "affected", "value"]])
                    out = tables.get("skip_output")
                    if out is not None and len(out):
                        out_parts.append(out[(out["variant"] == variant) & (out["split"] == SPLIT_MAX)][
                            ["variant", "split", "skipped", "value"]])
    layer = (pd.concat(layer_parts, ignore_index=True) if layer_parts
             else _empty(["metric", "layer", "value"]))
    if len(layer):
        layer["layer"] = layer["layer"].astype(int)
        layer["value"] = layer["value"].astype(float)
        layer = depth.with_cosine_mean(layer)
    skip = (pd.concat(skip_parts, ignore_index=True) if skip_parts
            else _empty(["variant", "split", "skipped", "affected", "value"]))
    skip_output = (pd.concat(out_parts, ignore_index=True) if out_parts
                   else _empty(["variant", "split", "skipped", "value"]))
    return MergedItem(layer=layer.reset_index(drop=True), skip=skip, skip_output=skip_output, sources=sources,
                      run_ids=tuple(r for r, _ in runs), dropped=tuple(dropped))


# --------------------------------------------------------------------------------------------------
# An item set: the merged items of one sweep set
# --------------------------------------------------------------------------------------------------

ITEM_COLUMNS = ["item_id", "dataset", "item_index", "bin", "n_tokens", "n_layers", "run_id", "run_ids",
                "has_curves", "has_skip", "prompt_hash"]


@dataclass
class ItemSet:
    """The merged benchmark items of one (model fingerprint, dtype, chat template)."""

    key: str
    model_name: str
    dtype: str
    chat_template: bool
    n_layers: int
    items: pd.DataFrame  # ITEM_COLUMNS, one row per item, in bin order then dataset / index
    merged: dict[str, MergedItem]  # item id -> merged tables
    metas: dict[str, dict] = field(default_factory=dict)  # run id -> meta of every run merged

    @property
    def bins(self) -> list[str]:
        return list(dict.fromkeys(self.items["bin"]))

    def meta(self) -> dict:
        """A meta-like dict naming the set (for ``app.pair_labels``)."""
        return {"model_name": self.model_name, "dtype": self.dtype, "chat_template": self.chat_template,
                "n_layers": self.n_layers}

    def subset(self, item_ids: Iterable[str]) -> "ItemSet":
        keep = set(item_ids)
        items = self.items[self.items["item_id"].isin(keep)].reset_index(drop=True)
        return ItemSet(self.key, self.model_name, self.dtype, self.chat_template, self.n_layers, items,
                       {i: m for i, m in self.merged.items() if i in keep}, self.metas)


def item_id(dataset: str, index: int) -> str:
    return f"{dataset}:{int(index)}"


def _split_by_run(frame: pd.DataFrame | None, run_ids: Sequence[str]) -> dict[str, pd.DataFrame]:
    if frame is None or not len(frame):
        return {}
    return {str(r): g.drop(columns="run_id") for r, g in frame.groupby("run_id", sort=False)}


def _read_tables(store, run_ids: Sequence[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """{table: {run id: frame}} of the layer table and the reduced skip tables (bulk when possible)."""
    ids = [str(r) for r in run_ids]
    out: dict[str, dict[str, pd.DataFrame]] = {"layer": {}, "skip": {}, "skip_output": {}}
    if not ids:
        return out
    if getattr(store, "_transaction", None) is not None:
        with store._transaction() as con:
            layer = con.execute("SELECT run_id, metric, layer, value FROM layer WHERE list_contains(?, run_id) "
                                "ORDER BY run_id, metric, layer", [ids]).df()
            skip = con.execute("SELECT run_id, variant, split, skipped, affected, value FROM skip "
                               "WHERE split = ? AND list_contains(?, run_id) ORDER BY run_id, variant, skipped, "
                               "affected", [SPLIT_MAX, ids]).df()
            skip_out = con.execute("SELECT run_id, variant, split, skipped, value FROM skip_output "
                                   "WHERE split = ? AND list_contains(?, run_id) ORDER BY run_id, variant, skipped",
                                   [SPLIT_MAX, ids]).df()
        out["layer"] = _split_by_run(layer, ids)
        out["skip"] = _split_by_run(skip, ids)
        out["skip_output"] = _split_by_run(skip_out, ids)
        return out
    for rid in ids:
        for name in out:
            out[name][rid] = store.table(rid, name)
    return out


def _build_set(store, key: str, datasets: Sequence[str] | None) -> ItemSet | None:
    runs = item_runs(store)
    metas = run_metas(store)
    fp, dtype, chat = key.rsplit("|", 2)
    chosen = runs[(runs["model_fingerprint"] == fp) & (runs["dtype"] == dtype)
                  & (runs["chat_template"] == bool(int(chat)))]
    if datasets:
        chosen = chosen[chosen["dataset"].isin(list(datasets))]
    if not len(chosen):
        return None
    tables = _read_tables(store, list(chosen["run_id"]))
    rows, merged = [], {}
    for (dataset, index), group in chosen.groupby(["dataset", "item_index"], sort=False):
        group = group.sort_values(["created", "run_id"], ascending=[False, True])
        ids = [str(r) for r in group["run_id"]]
        item = merge_item([(r, {name: tables[name].get(r) for name in tables}) for r in ids],
                          hashes=list(group["prompt_hash"]))
        iid = item_id(dataset, index)
        merged[iid] = item
        newest = group.iloc[0]
        has_curves = bool(len(item.layer)) and bool(set(item.layer["metric"]) & set(sweep.ED_METRICS))
        primary = next((item.sources[f"metric:{m}"] for m in ("cos_layer", "kl", "overlap")
                        if f"metric:{m}" in item.sources), item.run_ids[0])
        rows.append({"item_id": iid, "dataset": dataset, "item_index": int(index), "bin": newest["bin"],
                     "n_tokens": int(newest["n_tokens"]), "n_layers": int(newest["n_layers"]), "run_id": primary,
                     "run_ids": item.run_ids, "has_curves": has_curves,
                     "has_skip": "skip:future" in item.sources and bool(
                         len(item.skip_output[item.skip_output["variant"] == "future"])),
                     "prompt_hash": newest["prompt_hash"]})
    items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    order = {b: k for k, b in enumerate(bin_order(items))}
    datasets = {d: k for k, d in enumerate(sorted(items["dataset"].unique(), key=dataset_rank))}
    items = items.assign(_b=items["bin"].map(order), _d=items["dataset"].map(datasets)).sort_values(
        ["_b", "_d", "item_index"]).drop(columns=["_b", "_d"]).reset_index(drop=True)
    newest = chosen.iloc[0]
    used = {r for ids in items["run_ids"] for r in ids}
    return ItemSet(key=key, model_name=str(newest["model_name"]), dtype=dtype, chat_template=bool(int(chat)),
                   n_layers=int(newest["n_layers"]), items=items, merged=merged,
                   metas={r: metas[r] for r in used if r in metas})


def load_items(store, key: str, datasets: Sequence[str] | None = None) -> ItemSet | None:
    """The merged items of the sweep set ``key`` (see ``sweep_sets``), optionally of some datasets only;
    None when the set has no runs (memoised by the cache file's stamp)."""
    return _memo(("items", _stamp(store), key, tuple(datasets or ())), lambda: _build_set(store, key, datasets))


# --------------------------------------------------------------------------------------------------
# Aggregates per bin
# --------------------------------------------------------------------------------------------------


def _frames(item_set: ItemSet, item_ids: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """(layer frames, token counts) of some items, restricted to the curves the ED rules read."""
    tokens = dict(zip(item_set.items["item_id"], item_set.items["n_tokens"]))
    frames = {}
    for iid in item_ids:
        layer = item_set.merged[iid].layer
        frames[iid] = layer[layer["metric"].isin(CURVE_METRICS)]
    return frames, {iid: int(tokens[iid]) for iid in item_ids}


def _group_items(item_set: ItemSet, by: str = "bin") -> dict[str, list[str]]:
    with_curves = item_set.items[item_set.items["has_curves"]]
    groups: dict[str, list[str]] = {}
    for row in with_curves.itertuples():
        groups.setdefault(getattr(row, by), []).append(row.item_id)
    return groups


def bootstrap(item_set: ItemSet, item_ids: Sequence[str], how: str = "token", n_boot: int | None = None,
              seed: int = sweep.BOOT_SEED) -> sweep.BootstrapCI:
    """``sweep.bootstrap_ci`` over some items of a set (memoised by the runs behind them)."""
    n_boot = int(n_boot or sweep.N_BOOT)
    ids = list(item_ids)
    key = ("boot", how, n_boot, seed, tuple((i, item_set.merged[i].run_ids) for i in ids))

    def build():
        frames, counts = _frames(item_set, ids)
        return sweep.bootstrap_ci(frames, counts, how=how, n_boot=n_boot, seed=seed)

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
    n_boot = int(n_boot or sweep.N_BOOT)
    for name, (item_set, ids) in groups.items():
        if not ids:
            continue
        ci = bootstrap(item_set, ids, how, n_boot, seed)
        n_layers = item_set.n_layers
        curves = ci.curves.assign(group=name, n_layers=n_layers, n_items=len(ids))
        curves["depth"] = curves["layer"].astype(float) / n_layers
        curve_parts.append(curves)
        ed = ci.ed[ci.ed["probe"].isin(PROBES)].assign(group=name, n_items=len(ids), n_layers=n_layers)
        ed_parts.append(ed)
    curves = (pd.concat(curve_parts, ignore_index=True)[CURVE_COLUMNS] if curve_parts
              else pd.DataFrame(columns=CURVE_COLUMNS))
    ed = pd.concat(ed_parts, ignore_index=True)[ED_COLUMNS] if ed_parts else pd.DataFrame(columns=ED_COLUMNS)
    if len(ed):
        ed["ed"] = ed["ed"].astype("Int64")
    return Aggregate(curves.reset_index(drop=True), ed.reset_index(drop=True), how, n_boot)


def aggregate_by_bin(item_set: ItemSet, how: str = "token", n_boot: int | None = None,
                     seed: int = sweep.BOOT_SEED) -> Aggregate:
    """Aggregate curves and ED/EDR with 95 % bootstrap CIs per bin (``group`` = the bin), for the
    items that have cosine / logit-lens curves."""
    groups = {b: (item_set, ids) for b, ids in _group_items(item_set).items()}
    return _aggregate(groups, how, n_boot, seed)


def probe_curves(agg: Aggregate, probe: str) -> pd.DataFrame:
    """The aggregate curve of one probe (cosine: μ) per group, with its band."""
    return agg.curves[agg.curves["metric"] == PROBE_METRIC[probe]].reset_index(drop=True)


def probe_eds(agg: Aggregate, probe: str) -> pd.DataFrame:
    return agg.ed[agg.ed["probe"] == probe].reset_index(drop=True)


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


# --------------------------------------------------------------------------------------------------
# Per-item ED and depth score
# --------------------------------------------------------------------------------------------------


def item_eds(item_set: ItemSet) -> pd.DataFrame:
    """``sweep.per_item_ed`` of every item with curves, joined with its dataset, index and bin ->
    DataFrame[item_id, dataset, item_index, bin, n_tokens, run_id, probe, rule, ed, edr, n_layers]."""
    ids = [i for i, has in zip(item_set.items["item_id"], item_set.items["has_curves"]) if has]
    columns = ["item_id", "dataset", "item_index", "bin", "n_tokens", "run_id", "probe", "rule", "ed", "edr",
               "n_layers"]
    if not ids:
        return pd.DataFrame(columns=columns)
    per = sweep.per_item_ed({i: item_set.merged[i].layer for i in ids}).rename(columns={"run_id": "item_id"})
    per = per[per["probe"].isin(PROBES)]
    info = item_set.items[["item_id", "dataset", "item_index", "bin", "n_tokens"]]
    out = per.merge(info, on="item_id", how="left")
    out["run_id"] = [explore_run(item_set, i, p) for i, p in zip(out["item_id"], out["probe"])]
    return out[columns].reset_index(drop=True)


def explore_run(item_set: ItemSet, iid: str, probe: str | None = None) -> str:
    """The run to open in Explore for an item: the one that gave the probe's curve (else the newest)."""
    item = item_set.merged[iid]
    metric = {"cosine": "cos_layer", "kl": "kl", "overlap": "overlap", "skip": None}.get(probe or "cosine")
    if metric and f"metric:{metric}" in item.sources:
        return item.sources[f"metric:{metric}"]
    if probe == "skip" and "skip:future" in item.sources:
        return item.sources["skip:future"]
    row = item_set.items[item_set.items["item_id"] == iid]
    return str(row["run_id"].iloc[0]) if len(row) else item.run_ids[0]


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


def skip_items(item_set: ItemSet) -> list[str]:
    return [i for i, has in zip(item_set.items["item_id"], item_set.items["has_skip"]) if has]


def _has_skip_run(item_set: ItemSet, iid: str) -> bool:
    """Whether some run of the item ran layer skipping (a prompt under 13 tokens then has only the
    current-effect variants, so no future matrix)."""
    item = item_set.merged[iid]
    return any(k.startswith("skip:") for k in item.sources) or any(
        "skip" in ((item_set.metas.get(r) or {}).get("probes") or []) for r in item.run_ids)


def depth_scores(item_set: ItemSet) -> sweep.DepthScores | None:
    """``sweep.depth_score_by_bin`` over the items with a layer-skipping run; those without a reduced
    future skip matrix (too short for it, < 13 tokens) are left out and listed in ``left_out``, and a bin
    with none left scores NaN (see ``depth_score_notes``). None if no item has a skip run."""
    table = item_set.items
    ids = [i for i, has in zip(table["item_id"], table["has_skip"]) if has or _has_skip_run(item_set, i)]
    if not ids:
        return None
    bins = dict(zip(table["item_id"], table["bin"]))
    tokens = dict(zip(table["item_id"], table["n_tokens"]))
    key = ("depth", tuple((i, item_set.merged[i].run_ids) for i in ids))
    return _memo(key, lambda: sweep.depth_score_by_bin(
        {i: item_set.merged[i].skip for i in ids}, {i: item_set.merged[i].skip_output for i in ids},
        {i: bins[i] for i in ids}, variant="future", n_tokens={i: int(tokens[i]) for i in ids}))


def item_name(item_set: ItemSet, iid: str) -> str:
    """"gsm8k[3]": an item as the CLI names it."""
    row = item_set.items[item_set.items["item_id"] == iid]
    return f"{row['dataset'].iloc[0]}[{int(row['item_index'].iloc[0])}]" if len(row) else iid


def depth_score_notes(item_set: ItemSet, scores: sweep.DepthScores | None, limit: int = 10) -> list[str]:
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
        why = sweep.LEFT_OUT_REASONS[reason]
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


# --------------------------------------------------------------------------------------------------
# Compare two models over shared items
# --------------------------------------------------------------------------------------------------


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
                      how: str = "token", n_boot: int | None = None, seed: int = sweep.BOOT_SEED) -> Aggregate:
    """Aggregate curves and ED/EDR with CIs of two models over the same items (``group`` = the label);
    ``curves['depth']`` = layer / L puts models of different depth on one axis."""
    ids = list(item_ids)
    return _aggregate({labels[0]: (set_a, ids), labels[1]: (set_b, ids)}, how, n_boot, seed)
