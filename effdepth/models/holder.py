"""The one loaded model that a process's runs share, and their turns on it (no Streamlit, no tensors).

The app holds one model for all its browser sessions; a notebook holds one across calls of
``effdepth.probe``. Runs take turns, first come first served; a model switch waits for the run that
uses the model; changed weights on disk are reloaded before the next run.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from effdepth.contract import Progress
from effdepth.turns import Turns

#: The stage a run reports while another session's run holds the model.
WAITING_STAGE = "waiting for another session's run"


class ModelHolder:
    """Holds at most one loaded model for the whole process (the app's sessions share it).

    Runs take turns, first come first served (``effdepth.turns``): ``lease(name, dtype)`` waits until
    no other run holds the model, then hands it out, loading it (or switching to it) first, so a
    model switch never drops a model that another session is using. The held model is keyed by
    (name, dtype) and by the stamp of its files (``models.weights_stamp``: sizes and mtimes), re-checked
    on every lease: weights changed on disk are reloaded, never run under the old model.
    """

    def __init__(self, loader: Callable | None = None, stamp: Callable[[str], object] | None = None):
        self._loader = loader
        self._stamp = stamp
        self._lock = threading.RLock()
        self.turns = Turns()
        self.key: tuple[str, str] | None = None
        self.stamp: object = None
        self.loaded = None
        self.loads = 0

    def _current_stamp(self, name: str):
        if self._stamp is not None:
            return self._stamp(name)
        if self._loader is not None:  # an injected loader (tests): no files behind the name
            return None
        from effdepth import models

        return models.weights_stamp(name)

    def get(self, name: str, dtype: str, progress: Progress | None = None):
        """The model of (name, dtype), loaded if it is not the held one or its files changed. Call it
        inside ``lease`` (or ``self.turns``) when other runs may be using the holder."""
        with self._lock:
            key, stamp = (name, dtype), self._current_stamp(name)
            if self.key == key and self.loaded is not None and stamp == self.stamp:
                return self.loaded
            self.release()
            loader = self._loader
            if loader is None:
                from effdepth import models

                loader = models.load_model
            if progress:
                progress("loading model", 0.0)
            self.loaded = loader(name, dtype=dtype, progress=progress)
            self.key, self.stamp = key, stamp
            self.loads += 1
            return self.loaded

    @contextmanager
    def lease(self, name: str, dtype: str, progress: Progress | None = None) -> Iterator[object]:
        """The model for one run, held alone until the block ends; while another run holds it,
        ``progress`` hears ``waiting for another session's run (position k)`` (raise from it to give up)."""
        notify = progress or (lambda stage, frac=None: None)

        def on_wait(position: int) -> None:
            notify(f"{WAITING_STAGE} (position {position})", None)

        with self.turns.turn(on_wait):
            yield self.get(name, dtype, progress)

    def release(self) -> None:
        with self._lock:
            self.loaded = None
            self.key = None
            self.stamp = None
            gc.collect()
