"""Reading the cache for a view: the store, cached runs by input, and in-process memos of runs and
chart specs keyed by the cache's stamp (file and WAL), so a memoised value is never stale.
"""

from __future__ import annotations

from pathlib import Path

from effdepth import engine
from effdepth.app.inputs import check_prompt, resolve, run_keys
from effdepth.memo import Memo, store_stamp


def open_store(path: str | Path | None = None):
    """The result store (``$EFFDEPTH_CACHE`` or the project's cache/effdepth.duckdb)."""
    from effdepth.store import Store

    return Store(path) if path is not None else Store()


def find_cached(store, name: str, text: str, dtype: str, chat: bool,
                config: engine.ProbeConfig | None = None, positions: str = "all") -> tuple[str, object | None]:
    """(run id, RunResult or None) for an input, looked up without loading the model.

    ``config``: look for a run of that probe config (e.g. an erasure / IG run) instead of the app's;
    ``positions``: the app's config at those measured positions."""
    check_prompt(text)
    if config is not None:
        keys = [engine.run_key(resolve(name).fingerprint, text, dtype, config, chat)]
    else:
        keys = run_keys(name, text, dtype, chat, positions)
    for key in keys:
        result = store.get(key)
        if result is not None:
            return key, result
    return keys[0], None


_RUN_MEMO = Memo(size=8)


_CHART_MEMO = Memo(size=128)


def get_run(store, run_id: str | None):
    """A stored run, memoised in-process: a run id fixes its numbers, and the cache's stamp (file and
    WAL) changes with any write or delete, so a memoised run is never stale."""
    if not run_id:
        return None
    return _RUN_MEMO.get((store_stamp(store), run_id), lambda: store.get(run_id))


def memo_chart(key: tuple, build):
    """Chart specs memoised by (run id, chart, options): reruns of a cached view rebuild nothing."""
    return _CHART_MEMO.get(key, build)
