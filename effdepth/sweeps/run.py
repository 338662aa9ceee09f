"""Running a sweep: one model over many benchmark items, resumable without loading the model.

``sweep(model_name, items, store)`` runs ``engine.run_probes`` on every item whose run key is not
already in ``store`` and puts each result there. The run keys come from the model's cheap fingerprint
(``models.resolve_model``), so a finished or half-finished sweep resumes **without loading the model**;
the model is loaded when the first missing item appears. Each run's meta carries the item's
``dataset``, ``item_index`` and ``bin``. No CLI here (``effdepth sweep`` wires it in ``effdepth.cli``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence

from effdepth.contract import Progress
from effdepth.datasets import Item
from effdepth.engine import ANSWER_PROBES, ProbeConfig, run_key, run_probes

log = logging.getLogger(__name__)


_DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}


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
