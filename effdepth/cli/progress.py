"""Progress on stderr: one tqdm bar per stage, fed by the engine's and the loader's progress callback.
"""

from __future__ import annotations

import re
import sys
import time


class TqdmProgress:
    """``progress(stage, frac)`` callback drawing one transient tqdm bar per stage on stderr.

    Stage names with a counter ("skip replay, layer 12/30") share one bar ("skip replay, layer"); a stage
    with a fraction gets a percentage bar, one without just its elapsed time. When a stage ends its
    bar is replaced by one line "stage: 1.23 s".
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.bar = None
        self.key: str | None = None
        self.started = 0.0

    def __call__(self, stage: str, frac: float | None = None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        key = re.sub(r"\s*\d+/\d+\s*", " ", stage).strip()
        if key != self.key:
            self.close()
            self.key = key
            self.started = time.perf_counter()
            fmt = ("{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining}" if frac is not None
                   else "{desc}: {elapsed}")
            self.bar = tqdm(total=100 if frac is not None else None, desc=key, file=self.stream,
                            bar_format=fmt, leave=False, dynamic_ncols=True)
        if frac is not None and self.bar is not None:
            if self.bar.total is None:
                self.bar.total = 100
                self.bar.bar_format = "{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining}"
            self.bar.n = max(0, min(100, int(round(frac * 100))))
            self.bar.refresh()

    def write(self, line: str) -> None:
        """A line on the same stream, above the bar (tqdm keeps the bar whole)."""
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(line, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            if self.key != "ready":
                print(f"{self.key}: {time.perf_counter() - self.started:.2f} s", file=self.stream, flush=True)
            self.bar = None
            self.key = None
