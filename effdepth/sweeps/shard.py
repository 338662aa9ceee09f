"""Sharding a sweep for ``accelerate launch`` (or any launcher that sets RANK / WORLD_SIZE).

Rank r takes ``items[r::world]`` (``shard_items``) and writes its own DuckDB file
``<cache>/shards/<sweep_id>-rank<r>.duckdb`` (``sweep_shard``), because DuckDB allows one writer
process per file. ``merge_shards`` copies the shard runs into the main store (rank 0 after a barrier in
``sweep_distributed``, or the CLI after all processes exit). ``sweep_id`` hashes the model, dtype,
config and item texts, so every rank derives the same id without communicating.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from effdepth import contract
from effdepth.contract import Progress
from effdepth.datasets import Item
from effdepth.engine import ProbeConfig
from effdepth.sweeps.run import _models, _store_class, _sweep, item_keys, sweep


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
        "model": model_name, "dtype": contract.DTYPE_ALIASES.get(dtype, dtype),
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
