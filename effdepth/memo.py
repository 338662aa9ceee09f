"""In-process memos for what the pages redraw on every rerun: one LRU class and one cache-file stamp.

A memoised value is keyed by what fixes it; anything read from the result store is keyed by
:func:`store_stamp` as well, which changes with every write to the DuckDB file or to its WAL, so a
memoised run or aggregate is never staler than the cache it came from.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any


class Memo:
    """A thread-safe LRU memo: ``memo.get(key, build)`` builds on a miss; None results are not kept."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = build()  # outside the lock: a slow build does not block other keys
        if value is not None:
            with self._lock:
                self._values[key] = value
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


def store_stamp(store) -> tuple:
    """(path, (mtime, size) of the cache file, (mtime, size) of its WAL): changes with every write."""
    path = getattr(store, "path", None)
    if path is None:
        return (id(store),)
    out: list = [str(path)]
    for file in (Path(path), Path(f"{path}.wal")):
        try:
            stat = os.stat(file)
            out.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            out.append(None)
    return tuple(out)
