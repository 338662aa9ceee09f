"""Running a sweep: one model over many benchmark items, resumable without loading the model.

``sweep(model_name, items, store)`` runs ``engine.run_probes`` on every item whose run key is not
already in ``store`` and puts each result there. The run keys come from the model's cheap fingerprint
(``models.resolve_model``), so a finished or half-finished sweep resumes **without loading the model**;
the model is loaded when the first missing item appears. Each run's meta carries the item's
``dataset``, ``item_index`` and ``bin``. No CLI here (``effdepth sweep`` wires it in ``effdepth.cli``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import ContextManager

from effdepth import contract
from effdepth.contract import Progress
from effdepth.datasets import Item
from effdepth.engine import ANSWER_PROBES, ProbeConfig, run_key, run_probes

log = logging.getLogger(__name__)



def _models():
    from effdepth import models  # imported lazily: models pulls in the loaders

    return models


def _store_class():
    from effdepth.store import Store  # the DuckDB store (effdepth/store.py)

    return Store


def item_meta(item: Item) -> dict:
    """The extra run meta that ties a run to its benchmark item (and its gold answer, whose token count the
    run stores as ``answer_tokens``)."""
    return {"dataset": item.dataset, "item_index": item.index, "bin": item.bin, "answer": item.answer}


def item_config(config: ProbeConfig, item: Item) -> ProbeConfig:
    """The item's own config: erasure / IG measure its gold answer (the end of its teacher-forced text)."""
    if any(p in config.probes for p in ANSWER_PROBES):
        return dataclasses.replace(config, answer=item.answer)
    return config


def item_keys(fingerprint: str, items: Sequence[Item], dtype: str, config: ProbeConfig,
              chat_template: bool = False) -> list[str]:
    """The run_id of every item, as ``engine.run_probes`` will compute it (no model needed)."""
    dtype = contract.DTYPE_ALIASES.get(dtype, dtype)
    return [run_key(fingerprint, item.text, dtype, item_config(config, item), chat_template)
            for item in items]


#: what became of one item of a sweep (``on_item``): probed here, found stored (before or by another
#: sweep meanwhile), or failed and skipped
OUTCOMES = ("computed", "stored", "failed")


class _KeptModel:
    """The default way a sweep holds its model: loaded when the first missing item comes, then kept."""

    def __init__(self, load: Callable, model_name: str, dtype: str, report: _Report) -> None:
        self.load, self.model_name, self.dtype, self.report, self.loaded = load, model_name, dtype, report, None

    @contextlib.contextmanager
    def __call__(self, item: Item) -> Iterator[object]:
        if self.loaded is None:
            self.report.stage(f"loading {self.model_name}")
            self.loaded = self.load(self.model_name, dtype=self.dtype)
        yield self.loaded


def _sweep(model_name: str, items: Sequence[Item], put_store, check_stores: Sequence,
           config: ProbeConfig, dtype: str, progress: Progress | None, load: Callable | None,
           resolve: Callable | None, chat_template: bool, skip_errors: bool | tuple[type[BaseException], ...],
           desc: str, failed: list | None = None, hold: Callable[[Item], ContextManager] | None = None,
           on_start: Callable[[int, int], None] | None = None,
           on_item: Callable[[Item, str], None] | None = None) -> list[str]:
    """Probe the items whose run key is in none of ``check_stores`` and put them in ``put_store``; the
    run ids of all items that have a run (the skipped failures left out).

    The one sweep loop of the CLI, the page's jobs, ``effdepth demo`` and the API. ``hold(item)`` gives the
    model for one item as a context (default: ``load`` it once, keep it; the app lends its shared model
    item by item). ``on_start(n_items, n_stored)`` and ``on_item(item, outcome)`` (an ``OUTCOMES`` word)
    feed a caller's counters; an item another sweep stored while this one waited counts as "stored"."""
    items = list(items)
    resolve = resolve or _models().resolve_model
    load = load or _models().load_model
    keys = item_keys(resolve(model_name).fingerprint, items, dtype, config, chat_template)
    missing = [k for k, key in enumerate(keys) if not any(s.has(key) for s in check_stores)]
    if on_start is not None:
        on_start(len(items), len(items) - len(missing))
    run_ids: list[str | None] = list(keys)
    report = _Report(progress, desc, len(items), len(missing))
    hold = hold or _KeptModel(load, model_name, dtype, report)
    try:
        for done, k in enumerate(missing, 1):
            with hold(items[k]) as loaded:
                if any(s.has(keys[k]) for s in check_stores):  # stored meanwhile by another sweep
                    outcome = "stored"
                else:
                    run_ids[k] = _probe_item(loaded, items[k], keys[k], put_store, config, chat_template,
                                             skip_errors, report, failed)
                    outcome = "computed" if run_ids[k] is not None else "failed"
            if on_item is not None:
                on_item(items[k], outcome)
            report.item_done(items[k], done)
    finally:
        report.close()
    return [k for k in run_ids if k is not None]


class _Report:
    """A sweep's progress: the caller's callback, or a tqdm bar of the missing items when there is none."""

    def __init__(self, progress: Progress | None, desc: str, n_items: int, n_missing: int):
        self.progress, self.n_missing, self.bar = progress, n_missing, None
        if not n_missing:
            if progress:
                progress(f"all {n_items} items already in the store", 1.0)
            return
        if progress is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_missing, desc=desc, unit="item")
            if n_missing < n_items:
                self.bar.write(f"{n_items - n_missing} of {n_items} items already in the store")

    def stage(self, text: str) -> None:
        if self.progress:
            self.progress(text, None)

    def warn(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log.warning("%s", message)

    def item_done(self, item: Item, done: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
        elif self.progress:
            self.progress(f"{item.dataset}[{item.index}] done ({done}/{self.n_missing})", done / self.n_missing)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _probe_item(loaded, item: Item, key: str, put_store, config: ProbeConfig, chat_template: bool,
                skip_errors: bool | tuple[type[BaseException], ...], report: _Report,
                failed: list | None) -> str | None:
    """Probe one item and store its run; its run id, or None when it failed and may be skipped."""
    try:
        store_path = getattr(put_store, "path", None)
        result = run_probes(loaded, item.text, item_config(config, item), chat_template=chat_template,
                            extra_meta=item_meta(item), derived_dir=None if store_path is None else store_path.parent)
    except Exception as err:  # noqa: BLE001 - reported, optionally skipped
        if not _skippable(err, skip_errors):
            raise
        report.warn(f"{item.dataset}[{item.index}] failed and is skipped: {err}")
        if failed is not None:
            failed.append((item, err))
        return None
    if result.run_id != key:
        log.warning("run key of %s[%s] differs from the precomputed one (%s != %s); it will be recomputed on "
                    "resume", item.dataset, item.index, result.run_id, key)
    put_store.put(result)
    return result.run_id


def _skippable(err: Exception, skip_errors: bool | tuple[type[BaseException], ...]) -> bool:
    """Whether ``err`` is one the caller asked to skip: True skips any error, a tuple of classes those."""
    if isinstance(skip_errors, tuple):
        return isinstance(err, skip_errors)
    return bool(skip_errors)


def sweep(model_name: str, items: Sequence[Item], store, config: ProbeConfig | None = None,
          dtype: str = "float32", progress: Progress | None = None, load: Callable | None = None,
          resolve: Callable | None = None, chat_template: bool = False,
          skip_errors: bool | tuple[type[BaseException], ...] = False,
          failed: list | None = None, hold: Callable[[Item], ContextManager] | None = None,
          on_start: Callable[[int, int], None] | None = None,
          on_item: Callable[[Item, str], None] | None = None) -> list[str]:
    """Run the probes on every item not yet in ``store``; returns the run ids in item order.

    ``load`` defaults to ``models.load_model`` and ``resolve`` to ``models.resolve_model`` (both
    injectable for tests). ``progress(stage, frac)`` replaces the default tqdm bar (with ETA).
    ``skip_errors``: an item that fails (e.g. too long for the context) is logged and left out of the
    returned ids instead of stopping the sweep — any error when True, only these classes when a tuple
    (e.g. ``(EffdepthError,)``, so that bugs still propagate). ``failed``: a list that receives
    (item, error) of every item skipped, for a report at the end. ``hold``, ``on_start``, ``on_item``: see
    ``_sweep`` (the page's jobs lend the shared model item by item and count what lands).
    """
    return _sweep(model_name, items, store, [store], config or ProbeConfig(), dtype, progress, load,
                  resolve, chat_template, skip_errors, desc=f"sweep {model_name}", failed=failed, hold=hold,
                  on_start=on_start, on_item=on_item)
