"""One run at a time on one model: a first-come, first-served queue of turns.

Every probe hooks the model's modules and replays its layers, so two runs on one model in two
threads (two app sessions, two notebook threads) would write into each other's captures. A
:class:`Turns` queue gives the model to one run at a time, in arrival order; a waiting run is told
its place in the queue (``on_wait(position)``) and can give up by raising from that callback (the
app's stop control, a closed browser tab), which leaves the queue cleanly.

``turn_on(model)`` is the queue of one torch module, shared by everybody who holds that module.
The same thread may take a turn it already holds (a run that calls another probe inside it).
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: on_wait(position): called while waiting, position 1 = next in line.
WaitCallback = Callable[[int], None]


class Turns:
    """A FIFO of turns: ``with turns.turn(on_wait): ...`` runs the block alone."""

    def __init__(self, poll_seconds: float = 0.2):
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._owner: int | None = None  # thread id of the turn's holder
        self._depth = 0
        self.poll_seconds = poll_seconds
        self.turns_taken = 0
        self.waits = 0  # turns that had to wait for another one

    @property
    def waiting(self) -> int:
        """Runs waiting for a turn (not counting the one running)."""
        with self._cond:
            return max(0, len(self._queue) - (1 if self._owner is not None else 0))

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._owner is not None

    @contextmanager
    def turn(self, on_wait: WaitCallback | None = None) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:  # re-entry by the holder
                self._depth += 1
                reentered = True
            else:
                reentered = False
                ticket = object()
                self._queue.append(ticket)
        if reentered:
            try:
                yield
            finally:
                with self._cond:
                    self._depth -= 1
            return
        try:
            waited = False
            while True:
                with self._cond:
                    if self._queue[0] is ticket and self._owner is None:
                        self._owner, self._depth = me, 1
                        self.turns_taken += 1
                        self.waits += int(waited)
                        break
                    position = list(self._queue).index(ticket)
                waited = True
                if on_wait is not None:  # outside the lock: it may draw a page or raise to give up
                    on_wait(position)
                with self._cond:
                    if not (self._queue[0] is ticket and self._owner is None):
                        self._cond.wait(self.poll_seconds)
        except BaseException:
            with self._cond:
                self._queue.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield
        finally:
            with self._cond:
                self._owner, self._depth = None, 0
                self._queue.popleft()
                self._cond.notify_all()


_MODEL_TURNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_TURNS_GUARD = threading.Lock()


def turns_of(model) -> Turns:
    """The queue of turns of one torch module (created on first use, gone with the module)."""
    with _MODEL_TURNS_GUARD:
        turns = _MODEL_TURNS.get(model)
        if turns is None:
            turns = _MODEL_TURNS[model] = Turns()
        return turns


@contextmanager
def turn_on(model, on_wait: WaitCallback | None = None) -> Iterator[None]:
    """Hold ``model`` alone for the block (hooks, replays and layer surgery of one run)."""
    with turns_of(model).turn(on_wait):
        yield
