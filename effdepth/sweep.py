"""Sweeps: one model × many benchmark items, resumable and shardable, plus the aggregates over items.

Running (no CLI here; ``effdepth sweep`` wires these in cli.py):

- ``sweep(model_name, items, store)`` runs ``engine.run_probes`` on every item whose run key is not
  already in ``store`` and puts each result there. The run keys are computed from the model's cheap
  fingerprint (``models.resolve_model``), so a finished or half-finished sweep is resumed **without
  loading the model**; the model is loaded lazily when the first missing item appears. Each run's meta
  carries ``dataset``, ``item_index`` and ``bin`` of its item.
- Sharding for ``accelerate launch`` (or any launcher that sets RANK / WORLD_SIZE): rank r takes
  ``items[r::world]`` (``shard_items``) and writes to its own DuckDB file
  ``<cache>/shards/<sweep_id>-rank<r>.duckdb`` (``sweep_shard``), because DuckDB allows one writer
  process per file. ``merge_shards`` copies the shard runs into the main store (rank 0 after a
  barrier — ``sweep_distributed`` — or the CLI after all processes exit). ``sweep_id`` is a hash of the
  model, dtype, config and item texts, so every rank derives the same id without communicating.

Aggregates over items (pure functions on the store's long tables):

- ``aggregate(layer_frames, token_counts, how)`` — one per-layer curve per metric over items:
  ``"token"`` (P1): Σ_i T_i·v_i / Σ_i T_i, which for a per-prompt token mean v_i equals the sum over
  all tokens of all prompts / total tokens (docs/SPEC.md §4, §5);
  ``"prompt"`` (P2): the plain mean of the per-prompt means; ``"max"``: the max over items (P2's
  reduction of the skip curves, §6.1). Items lacking a (metric, layer) are left out of that cell.
- ``bootstrap_ci`` — items resampled with replacement (B = 1000, seeded), 95 % percentile intervals
  per (metric, layer) of the aggregate curve and of every ED/EDR that ``depth.ed_table`` derives from
  each bootstrap aggregate (cosine / KL / overlap rules; the skip ED needs matrices and is not
  bootstrapped here). A bootstrap aggregate with "no transition" counts in ``frac_none``.
- ``per_item_ed`` — the ED table of each item on its own (the distribution behind the aggregate ED).
- ``depth_score_by_bin`` — P2's depth score (§7.1): per bin, the per-item future-effect matrices
  M_ex[s, j] and output changes O_ex[s] (split = -1, the max over splits) are reduced over items by
  **max** and by **mean**; e_layer(s) = Σ_j M[s, j] / max(L-1-s, 1) (``depth.layer_effect``),
  e_logit(s) = O[s], DS = Σ s·e(s) / Σ e(s) (``depth.depth_score``). Items without that matrix
  (a prompt under 13 tokens gets only the current-effect skip) are left out of their bin and listed in
  ``DepthScores.left_out``; a bin left with no item scores NaN with ``n_items`` 0 instead of vanishing.

Not covered: P2's per-item split positions for the depth score (t = a0 for MQuAKE, a0 + {0, 4, …}
for MATH) need the tokenised answer start per item; ``sweep`` applies one ``ProbeConfig`` to all items,
so pass explicit splits per bin by calling ``sweep`` once per bin if needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from effdepth import depth
from effdepth.contract import SPLIT_MAX, Progress
from effdepth.datasets import Item
from effdepth.engine import ANSWER_PROBES, ProbeConfig, run_key, run_probes

log = logging.getLogger(__name__)

_DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}
N_BOOT = 1000
BOOT_SEED = 0
LEVEL = 0.95
ED_METRICS = depth.CURVE_INPUTS  # the curves depth.ed_table uses


# --------------------------------------------------------------------------------------- running

def _models():
    from effdepth import models  # imported lazily: models pulls in the loaders

    return models


def _store_class():
    from effdepth.store import Store  # the DuckDB store (effdepth/store.py)

    return Store


def item_meta(item: Item) -> dict:
    """The extra run meta that ties a run to its benchmark item."""
    return {"dataset": item.dataset, "item_index": item.index, "bin": item.bin}


def item_config(config: ProbeConfig, item: Item) -> ProbeConfig:
    """The item's own config: erasure / IG measure its gold answer (the end of its teacher-forced text)."""
    if any(p in config.probes for p in ANSWER_PROBES):
        return dataclasses.replace(config, answer=item.answer)
    return config


def item_keys(fingerprint: str, items: Sequence[Item], dtype: str, config: ProbeConfig,
              chat_template: bool = False) -> list[str]:
    """The run_id of every item, as ``engine.run_probes`` will compute it (no model needed)."""
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
    return [run_key(fingerprint, item.text, dtype, item_config(config, item), chat_template)
            for item in items]


def _sweep(model_name: str, items: Sequence[Item], put_store, check_stores: Sequence,  # noqa: C901 - to split into run / shard (the house issue)
           config: ProbeConfig, dtype: str, progress: Progress | None, load: Callable | None,
           resolve: Callable | None, chat_template: bool, skip_errors: bool | tuple[type[BaseException], ...],
           desc: str, failed: list | None = None) -> list[str]:
    items = list(items)
    resolve = resolve or _models().resolve_model
    load = load or _models().load_model
    spec = resolve(model_name)
    keys = item_keys(spec.fingerprint, items, dtype, config, chat_template)
    missing = [k for k, key in enumerate(keys) if not any(s.has(key) for s in check_stores)]
    run_ids: list[str | None] = list(keys)
    if not missing:
        if progress:
            progress(f"all {len(items)} items already in the store", 1.0)
        return [k for k in run_ids if k is not None]

    bar = None
    if progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(missing), desc=desc, unit="item")
        if len(missing) < len(items):
            bar.write(f"{len(items) - len(missing)} of {len(items)} items already in the store")
    loaded = None
    try:
        for done, k in enumerate(missing, 1):
            item = items[k]
            if loaded is None:
                if progress:
                    progress(f"loading {model_name}", None)
                loaded = load(model_name, dtype=dtype)
            try:
                result = run_probes(loaded, item.text, item_config(config, item), chat_template=chat_template,
                                    extra_meta=item_meta(item))
            except Exception as err:  # noqa: BLE001 - reported, optionally skipped
                if not _skippable(err, skip_errors):
                    raise
                message = f"{item.dataset}[{item.index}] failed and is skipped: {err}"
                if bar is not None:
                    bar.write(message, file=sys.stderr)
                else:
                    log.warning("%s", message)
                if failed is not None:
                    failed.append((item, err))
                run_ids[k] = None
            else:
                if result.run_id != keys[k]:
                    log.warning("run key of %s[%s] differs from the precomputed one (%s != %s); "
                                "it will be recomputed on resume", item.dataset, item.index,
                                result.run_id, keys[k])
                    run_ids[k] = result.run_id
                put_store.put(result)
            if bar is not None:
                bar.update(1)
            elif progress:
                progress(f"{item.dataset}[{item.index}] done ({done}/{len(missing)})",
                         done / len(missing))
    finally:
        if bar is not None:
            bar.close()
    return [k for k in run_ids if k is not None]


def _skippable(err: Exception, skip_errors: bool | tuple[type[BaseException], ...]) -> bool:
    """Whether ``err`` is one the caller asked to skip: True skips any error, a tuple of classes those."""
    if isinstance(skip_errors, tuple):
        return isinstance(err, skip_errors)
    return bool(skip_errors)


def sweep(model_name: str, items: Sequence[Item], store, config: ProbeConfig | None = None,
          dtype: str = "float32", progress: Progress | None = None, load: Callable | None = None,
          resolve: Callable | None = None, chat_template: bool = False,
          skip_errors: bool | tuple[type[BaseException], ...] = False,
          failed: list | None = None) -> list[str]:
    """Run the probes on every item not yet in ``store``; returns the run ids in item order.

    ``load`` defaults to ``models.load_model`` and ``resolve`` to ``models.resolve_model`` (both
    injectable for tests). ``progress(stage, frac)`` replaces the default tqdm bar (with ETA).
    ``skip_errors``: an item that fails (e.g. too long for the context) is logged and left out of the
    returned ids instead of stopping the sweep — any error when True, only these classes when a tuple
    (e.g. ``(EffdepthError,)``, so that bugs still propagate). ``failed``: a list that receives
    (item, error) of every item skipped, for a report at the end.
    """
    return _sweep(model_name, items, store, [store], config or ProbeConfig(), dtype, progress, load,
                  resolve, chat_template, skip_errors, desc=f"sweep {model_name}", failed=failed)


def _partial_state():
    """accelerate's PartialState if it is initialised and really distributed, else None."""
    try:
        from accelerate.state import PartialState
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return None
    if PartialState._shared_state == {}:
        return None
    state = PartialState()
    return state if int(state.num_processes) > 1 else None


def dist_env() -> tuple[int, int]:
    """(rank, world size): accelerate's PartialState if initialised and distributed, else the
    RANK / WORLD_SIZE variables (set by torchrun / ``accelerate launch``), else (0, 1).

    Note: on a machine without GPUs, ``accelerate launch --multi_gpu --num_processes N`` starts N
    processes (via torchrun) whose PartialState reports a single non-distributed process; the env
    variables are then the truth. ``accelerate launch --cpu --num_processes N`` (accelerate 1.x)
    starts only ONE process unless an mpirun hostfile is given.
    """
    state = _partial_state()
    if state is not None:
        return int(state.process_index), int(state.num_processes)
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_items(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """Rank ``rank``'s share: items[rank::world]."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank/world {rank}/{world}")
    return list(items)[rank::world]


def sweep_id(model_name: str, items: Sequence[Item], dtype: str = "float32",
             config: ProbeConfig | None = None) -> str:
    """A deterministic id of one sweep (same on every rank)."""
    payload = json.dumps({
        "model": model_name, "dtype": _DTYPE_ALIASES.get(dtype, dtype),
        "config": (config or ProbeConfig()).as_dict(),
        "items": [[it.dataset, it.index, hashlib.sha256(it.text.encode()).hexdigest()[:16]]
                  for it in items],
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def shard_dir() -> Path:
    return Path(_models().cache_dir()) / "shards"


def shard_path(sweep_key: str, rank: int, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or shard_dir()) / f"{sweep_key}-rank{rank}.duckdb"


def sweep_shard(model_name: str, items: Sequence[Item], main_store=None, rank: int | None = None,
                world: int | None = None, sweep_key: str | None = None,
                config: ProbeConfig | None = None, dtype: str = "float32",
                progress: Progress | None = None, load: Callable | None = None,
                resolve: Callable | None = None, directory: str | os.PathLike | None = None,
                store_factory: Callable[[Path], Any] | None = None,
                skip_errors: bool | tuple[type[BaseException], ...] = False,
                failed: list | None = None) -> tuple[Path, list[str]]:
    """Run this rank's share of ``items`` into its own shard store; returns (shard path, run ids).

    Items already in ``main_store`` (if given) or in the shard are skipped. ``rank``/``world`` default
    to ``dist_env()``; ``store_factory(path)`` defaults to ``store.Store``.
    """
    config = config or ProbeConfig()
    if rank is None or world is None:
        env_rank, env_world = dist_env()
        rank = env_rank if rank is None else rank
        world = env_world if world is None else world
    sweep_key = sweep_key or sweep_id(model_name, items, dtype, config)
    path = shard_path(sweep_key, rank, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    shard = (store_factory or _store_class())(path)
    check = [shard] + ([main_store] if main_store is not None else [])
    ids = _sweep(model_name, shard_items(items, rank, world), shard, check, config, dtype, progress,
                 load, resolve, False, skip_errors, desc=f"sweep {model_name} rank {rank}/{world}",
                 failed=failed)
    return path, ids


def _run_ids(store) -> list[str]:
    runs = store.runs()
    return [] if runs is None or not len(runs) else [str(r) for r in runs["run_id"]]


def merge_shards(store, shard_paths: Iterable[str | os.PathLike],
                 store_factory: Callable[[Path], Any] | None = None,
                 delete: bool = False) -> list[str]:
    """Copy every run of the shard stores into ``store`` (runs already there are skipped).

    Returns the run ids copied. Missing shard files are ignored (a rank may have had nothing to do).
    ``delete``: remove each shard file after it has been merged completely.
    """
    factory = store_factory or _store_class()
    merged = []
    for shard_file in shard_paths:
        path = Path(shard_file)
        if not path.exists():
            continue
        shard = factory(path)
        for run_id in _run_ids(shard):
            if store.has(run_id):
                continue
            result = shard.get(run_id)
            if result is not None:
                store.put(result)
                merged.append(run_id)
        if delete:
            del shard
            for leftover in (path, path.with_name(path.name + ".wal")):
                if leftover.is_dir():  # directory-backed stores (tests)
                    shutil.rmtree(leftover)
                elif leftover.exists():
                    leftover.unlink()
    return merged


def _marker(key: str, rank: int, directory: str | os.PathLike | None) -> Path:
    run = os.environ.get("TORCHELASTIC_RUN_ID", "") or os.environ.get("MASTER_PORT", "")
    return shard_path(key, rank, directory).with_suffix(f".done{('-' + run) if run else ''}")


def _barrier(key: str, rank: int, world: int, directory: str | os.PathLike | None,
             timeout: float | None, poll: float = 0.5) -> None:
    """Rank 0 returns when every rank has finished its shard (torch.distributed barrier when accelerate
    is really distributed; otherwise ``.done`` marker files next to the shards, named after the
    launcher's run id so that markers of an aborted earlier launch are not mistaken for this one's)."""
    state = _partial_state()
    if state is not None:
        state.wait_for_everyone()
        return
    marker = _marker(key, rank, directory)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if rank != 0:
        return
    import time

    waited = 0.0
    while not all(_marker(key, r, directory).exists() for r in range(world)):
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"ranks did not finish their shards within {timeout} s")
        time.sleep(poll)
        waited += poll


def sweep_distributed(model_name: str, items: Sequence[Item], store, config: ProbeConfig | None = None,
                      dtype: str = "float32", progress: Progress | None = None,
                      load: Callable | None = None, directory: str | os.PathLike | None = None,
                      store_factory: Callable[[Path], Any] | None = None,
                      timeout: float | None = None,
                      skip_errors: bool | tuple[type[BaseException], ...] = False,
                      failed: list | None = None) -> list[str]:
    """Inside ``accelerate launch`` / torchrun: each rank sweeps its shard into its own store file,
    then rank 0 waits for all ranks (see ``_barrier``) and merges the shards into ``store``.

    With world size 1 this is ``sweep``. Returns the run ids of all items (rank 0; items that failed
    are included only if some rank stored them) or of this rank's share (other ranks). ``skip_errors``
    and ``failed`` as in ``sweep`` (``failed`` gets this rank's failures only).
    """
    rank, world = dist_env()
    if world == 1:
        return sweep(model_name, items, store, config, dtype, progress, load, skip_errors=skip_errors,
                     failed=failed)
    config = config or ProbeConfig()
    key = sweep_id(model_name, items, dtype, config)
    _, ids = sweep_shard(model_name, items, store, rank, world, key, config, dtype, progress, load,
                         directory=directory, store_factory=store_factory, skip_errors=skip_errors,
                         failed=failed)
    _barrier(key, rank, world, directory, timeout)
    if rank != 0:
        return ids
    merge_shards(store, [shard_path(key, r, directory) for r in range(world)], store_factory,
                 delete=True)
    for r in range(world):
        _marker(key, r, directory).unlink(missing_ok=True)
    spec = _models().resolve_model(model_name)
    keys = item_keys(spec.fingerprint, items, dtype, config)
    return [k for k in keys if store.has(k)]


# ------------------------------------------------------------------------------------- aggregates

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
    weights = _weights(ids, token_counts, how)
    point = _combine(values, weights, how)
    rng = np.random.default_rng(seed)
    n = len(ids)
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


# ----------------------------------------------------------------------------------- depth score

#: engine.run_probes runs the future-effect skip only with a split point 8 ≤ t < T−4, i.e. T ≥ 13 tokens
FUTURE_MIN_TOKENS = 13
TOO_SHORT = "too_short"  # reasons in DepthScores.left_out
NO_MATRIX = "no_matrix"
#: each reason as the end of "k items are …"
LEFT_OUT_REASONS = {TOO_SHORT: f"too short for the future-effect skip (< {FUTURE_MIN_TOKENS} tokens)",
                    NO_MATRIX: "missing the reduced future-effect skip matrix"}


def _matrix(value, variant: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        matrix = depth.future_matrix(value, variant)
        if matrix is None:
            raise ValueError(f"no reduced '{variant}' skip matrix (split = -1) in the frame")
        return matrix
    return np.asarray(value, dtype=float)


def _output(value, variant: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        rows = value[(value["variant"] == variant) & (value["split"] == SPLIT_MAX)].sort_values("skipped")
        if not len(rows):
            raise ValueError(f"no reduced '{variant}' output change (split = -1) in the frame")
        return rows["value"].to_numpy(dtype=float)
    return np.asarray(value, dtype=float)


def _has_variant(matrix, output, variant: str) -> bool:
    """Whether an item has the reduced matrix and output change of ``variant`` (arrays always do)."""
    if matrix is None or output is None:
        return False
    if isinstance(matrix, pd.DataFrame) and not len(
            matrix[(matrix["variant"] == variant) & (matrix["split"] == SPLIT_MAX)]):
        return False
    if isinstance(output, pd.DataFrame) and not len(
            output[(output["variant"] == variant) & (output["split"] == SPLIT_MAX)]):
        return False
    return True


class DepthScores(NamedTuple):
    scores: pd.DataFrame  # bin, reduce, effect, depth_score, n_items, n_left_out
    profiles: pd.DataFrame  # bin, reduce, effect, layer, value
    left_out: pd.DataFrame | None = None  # run_id, bin, reason (TOO_SHORT / NO_MATRIX), n_tokens


LEFT_OUT_COLUMNS = ["run_id", "bin", "reason", "n_tokens"]


def depth_score_by_bin(matrices: Mapping[str, Any], outputs: Mapping[str, Any],
                       bins: Mapping[str, str], variant: str = "future",
                       n_tokens: Mapping[str, int] | None = None) -> DepthScores:
    """P2's depth score per difficulty bin (docs/SPEC.md §7.1).

    ``matrices[run_id]``: the item's skip matrix M_ex [L, L] (array, or the store's ``skip`` table,
    from which the split = -1 rows of ``variant`` are taken); ``outputs[run_id]``: O_ex [L] (array or
    the ``skip_output`` table); ``bins[run_id]``: the item's bin. Bins keep their first-seen order.
    Items without the reduced ``variant`` tables are left out (``left_out``; reason TOO_SHORT when
    ``n_tokens`` says the prompt had under FUTURE_MIN_TOKENS tokens for the future skip, else
    NO_MATRIX) rather than failing the whole score; a bin with no item left scores NaN.
    """
    bin_order: list[str] = []
    members: dict[str, list[str]] = {}
    left_rows: list[dict] = []
    for rid, name in bins.items():
        if name not in members:
            bin_order.append(name)
            members[name] = []
        if _has_variant(matrices.get(rid), outputs.get(rid), variant):
            members[name].append(rid)
            continue
        tokens = None if n_tokens is None or n_tokens.get(rid) is None else int(n_tokens[rid])
        short = variant == "future" and tokens is not None and tokens < FUTURE_MIN_TOKENS
        left_rows.append({"run_id": rid, "bin": name, "reason": TOO_SHORT if short else NO_MATRIX,
                          "n_tokens": tokens})
    left_out = pd.DataFrame(left_rows, columns=LEFT_OUT_COLUMNS)
    n_left = left_out["bin"].value_counts().to_dict() if len(left_out) else {}
    score_rows, profile_rows = [], []
    for name in bin_order:
        rids = members[name]
        if not rids:  # every item of the bin was left out: say so with a NaN score
            score_rows += [{"bin": name, "reduce": reduce, "effect": effect, "depth_score": None, "n_items": 0,
                            "n_left_out": int(n_left.get(name, 0))}
                           for reduce in ("max", "mean") for effect in ("layer", "logit")]
            continue
        m = np.stack([_matrix(matrices[rid], variant) for rid in rids])  # [n, L, L]
        o = np.stack([_output(outputs[rid], variant) for rid in rids])  # [n, L]
        for reduce, fn in (("max", np.max), ("mean", np.mean)):
            effects = {"layer": depth.layer_effect(fn(m, axis=0)), "logit": fn(o, axis=0)}
            for effect, e in effects.items():
                score_rows.append({"bin": name, "reduce": reduce, "effect": effect,
                                   "depth_score": depth.depth_score(e), "n_items": len(rids),
                                   "n_left_out": int(n_left.get(name, 0))})
                profile_rows += [{"bin": name, "reduce": reduce, "effect": effect, "layer": s,
                                  "value": float(v)} for s, v in enumerate(e)]
    scores = pd.DataFrame(score_rows, columns=["bin", "reduce", "effect", "depth_score", "n_items", "n_left_out"])
    profiles = pd.DataFrame(profile_rows, columns=["bin", "reduce", "effect", "layer", "value"])
    return DepthScores(scores, profiles, left_out)


def left_out_messages(left_out: pd.DataFrame | None, n_items: int,
                      names: Mapping[str, str] | None = None, limit: int = 10) -> list[str]:
    """One sentence per reason naming the items left out of the depth score (``names``: run id -> label
    such as "gsm8k[3]"; at most ``limit`` named), e.g. "1 of 3 items is too short for the future-effect
    skip (< 13 tokens) and is left out of the depth score: mine[0]." """
    if left_out is None or not len(left_out):
        return []
    out = []
    for reason in (TOO_SHORT, NO_MATRIX):
        rids = [str(r) for r in left_out.loc[left_out["reason"] == reason, "run_id"]]
        if not rids:
            continue
        k = len(rids)
        labels = [(names or {}).get(r, r) for r in rids]
        listed = ", ".join(labels[:limit]) + (f" and {k - limit} more" if k > limit else "")
        verb = "is" if k == 1 else "are"
        out.append(f"{k} of {n_items} item{'' if n_items == 1 else 's'} {verb} {LEFT_OUT_REASONS[reason]} "
                   f"and {verb} left out of the depth score: {listed}.")
    return out
