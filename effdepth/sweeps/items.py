"""The benchmark-item runs in the store, read as sweep sets of merged items.

- A *benchmark-item run* is a stored run whose meta has ``dataset`` and ``item_index`` (written by
  ``effdepth sweep`` / ``probe --item``). Its bin is meta ``bin`` if set, else the dataset name.
- A *sweep set* is everything stored for one (model fingerprint, dtype, chat template).
- One item may have runs from several probe configs (a ``cosine,logit_lens`` sweep and a ``skip``-only
  sweep, say). They are merged per (fingerprint, dtype, chat template, dataset, item_index): each curve
  of the ``layer`` table (per metric) and each skip variant comes from the newest run that has it. Runs
  whose text differs from the newest run of the item (an older dataset version) are left out.

Store reads are memoised in-process by the cache file's stamp (any write changes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from effdepth import depth
from effdepth.contract import SPLIT_MAX, reduced_rows
from effdepth.memo import Memo, store_stamp
from effdepth.models.registry import short_model_name
from effdepth.sweeps import curves

ED_PROBES = ("cosine", "kl", "overlap", "shortcut_kl", "shortcut_overlap")


RULES = ("p1", "guarded")


HOWS = {"token": "token-weighted (P1)", "prompt": "per-prompt mean (P2)"}


#: the curve of each probe that carries its ED (cosine: μ, the mean of the three cosines)
PROBE_METRIC = {"cosine": "cos_mu", "kl": "kl", "overlap": "overlap", "shortcut_kl": "shortcut_kl",
                "shortcut_overlap": "shortcut_overlap"}


COSINES = depth.COSINES


AGGREGATE_METRICS = COSINES + ("cos_mu", "kl", "overlap", "shortcut_kl", "shortcut_overlap")


#: known datasets from easy to hard (bins of other datasets follow, by name)
DATASET_ORDER = ("manual", "addition", "multiplication", "hops", "hellaswag", "gsm8k", "math", "mquake", "aime2024",
                 "aime2025")


ITEM_KEY = ("model_fingerprint", "dtype", "chat_template", "dataset", "item_index")


RUN_COLUMNS = ["run_id", "model_name", "model_fingerprint", "dtype", "chat_template", "dataset", "item_index",
               "bin", "n_layers", "n_tokens", "prompt_hash", "probes", "created"]


_MEMO = Memo(size=64)


def _memo(key: tuple, build: Callable[[], Any]) -> Any:
    return _MEMO.get(key, build)


def clear_memo() -> None:
    _MEMO.clear()


_stamp = store_stamp


def _bulk(store, sql: str, params: list) -> pd.DataFrame | None:
    """One query in one connection (the store's own transaction: lock retry, corrupt-file errors);
    None for store stand-ins without it."""
    transaction = getattr(store, "transaction", None)
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


_LAYER_COLUMNS = ["metric", "layer", "value"]
_SKIP_COLUMNS = ["variant", "split", "skipped", "affected", "value"]
_OUTPUT_COLUMNS = ["variant", "split", "skipped", "value"]


def merge_item(runs: Sequence[tuple[str, Mapping[str, pd.DataFrame]]],
               hashes: Sequence[str | None] | None = None) -> MergedItem:
    """Merge the runs of one item, given newest first as (run id, {table name: frame}).

    ``layer``: each metric from the newest run that has it; ``skip`` / ``skip_output``: each variant
    from the newest run that has it (only the reduced split = SPLIT_MAX rows are kept). ``hashes``: the
    runs' prompt hashes; runs whose hash differs from the newest run's are dropped.
    """
    runs, dropped = _same_text(list(runs), hashes)
    sources: dict[str, str] = {}
    layer_parts, skip_parts, out_parts = [], [], []
    for run_id, tables in runs:
        layer_parts += _new_metrics(run_id, tables.get("layer"), sources)
        for variant, rows in _new_variants(run_id, tables.get("skip"), sources):
            skip_parts.append(rows[_SKIP_COLUMNS])
            out = tables.get("skip_output")
            if out is not None and len(out):
                out_parts.append(reduced_rows(out, variant)[_OUTPUT_COLUMNS])
    layer = pd.concat(layer_parts, ignore_index=True) if layer_parts else _empty(_LAYER_COLUMNS)
    if len(layer):
        layer["layer"] = layer["layer"].astype(int)
        layer["value"] = layer["value"].astype(float)
        layer = depth.with_cosine_mean(layer)
    skip = pd.concat(skip_parts, ignore_index=True) if skip_parts else _empty(_SKIP_COLUMNS)
    skip_output = pd.concat(out_parts, ignore_index=True) if out_parts else _empty(_OUTPUT_COLUMNS)
    return MergedItem(layer=layer.reset_index(drop=True), skip=skip, skip_output=skip_output, sources=sources,
                      run_ids=tuple(r for r, _ in runs), dropped=tuple(dropped))


def _same_text(runs: list, hashes: Sequence[str | None] | None) -> tuple[list, list[str]]:
    """(runs of the newest run's text, ids of the runs of another text); a missing hash matches any."""
    if hashes is None or not runs:
        return runs, []
    first = hashes[0]
    same = [h == first or h is None or first is None for h in hashes]
    return [r for r, ok in zip(runs, same) if ok], [r[0] for r, ok in zip(runs, same) if not ok]


def _new_metrics(run_id: str, layer: pd.DataFrame | None, sources: dict[str, str]) -> list[pd.DataFrame]:
    """The rows of the metrics no newer run gave (``sources`` records where each came from)."""
    if layer is None or not len(layer):
        return []
    parts = []
    for metric, rows in layer.groupby("metric", sort=False):
        if f"metric:{metric}" not in sources:
            sources[f"metric:{metric}"] = run_id
            parts.append(rows[_LAYER_COLUMNS])
    return parts


def _new_variants(run_id: str, skip: pd.DataFrame | None, sources: dict[str, str]) -> list:
    """(variant, reduced rows) of the skip variants no newer run gave."""
    if skip is None or not len(skip):
        return []
    found = []
    for variant, rows in reduced_rows(skip).groupby("variant", sort=False):
        if f"skip:{variant}" not in sources:
            sources[f"skip:{variant}"] = run_id
            found.append((variant, rows))
    return found


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
    if getattr(store, "transaction", None) is not None:
        with store.transaction() as con:
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
        has_curves = bool(len(item.layer)) and bool(set(item.layer["metric"]) & set(curves.ED_METRICS))
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


def explore_run(item_set: ItemSet, iid: str, probe: str | None = None) -> str:
    """The run to open in Explore for an item: the one that gave the probe's curve (else the newest)."""
    item = item_set.merged[iid]
    metric = {"cosine": "cos_layer", "kl": "kl", "overlap": "overlap", "shortcut_kl": "shortcut_kl",
              "shortcut_overlap": "shortcut_overlap", "skip": None}.get(probe or "cosine")
    if metric and f"metric:{metric}" in item.sources:
        return item.sources[f"metric:{metric}"]
    if probe == "skip" and "skip:future" in item.sources:
        return item.sources["skip:future"]
    row = item_set.items[item_set.items["item_id"] == iid]
    return str(row["run_id"].iloc[0]) if len(row) else item.run_ids[0]
