"""Explore on a long trace (no Streamlit): the ED per segment along it, the window of positions the heatmaps
draw (so a page never draws more than ``HEATMAP_CELLS`` cells at once) and the boundaries marked on both."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from effdepth import sweeps
from effdepth.app.lookup import memo_chart
from effdepth.app.options import DEFAULT_SEGMENT, SEGMENT_CHOICES

#: the most layer × token cells one heatmap draws (the page's payload stays bounded on a 16k-token trace)
HEATMAP_CELLS = 50_000
#: the widest window of positions a heatmap draws, cells permitting
WINDOW_POSITIONS = 512


@dataclass(frozen=True)
class Window:
    """The positions start … stop-1 the heatmaps draw, of the measured span first … last."""

    start: int
    stop: int
    first: int
    last: int

    @property
    def width(self) -> int:
        return self.stop - self.start


def measured_positions(tables: dict) -> list[int]:
    """The positions a run measured, ascending (from its per-position table)."""
    frame = tables["layer_token"]
    return sorted(int(p) for p in frame["pos"].unique()) if len(frame) else []


def window_width(n_layers: int) -> int:
    """How many positions one heatmap draws: ``WINDOW_POSITIONS``, fewer where the cells would pass the bound."""
    return max(8, min(WINDOW_POSITIONS, HEATMAP_CELLS // (int(n_layers) + 1)))


def heatmap_window(meta: dict, tables: dict, start: int | None) -> Window | None:
    """The window the heatmaps draw, starting at ``start`` (None or -1: the last window), clamped to the
    measured span; None when the whole run fits one heatmap."""
    measured = measured_positions(tables)
    if not measured:
        return None
    first, last = measured[0], measured[-1]
    width = window_width(int(meta["n_layers"]))
    if last - first + 1 <= width:
        return None
    chosen = last + 1 - width if start is None or start < 0 else min(max(first, int(start)), last + 1 - width)
    return Window(chosen, chosen + width, first, last)


def window_tables(tables: dict, window: Window | None, names=("layer_token", "tokens")) -> dict:
    """The run's per-position tables cut to the window (the tables themselves when there is none)."""
    if window is None:
        return {name: tables[name] for name in names}
    out = {}
    for name in names:
        frame = tables[name]
        out[name] = frame[(frame["pos"] >= window.start) & (frame["pos"] < window.stop)].reset_index(drop=True)
    return out


def window_starts(window: Window, step: int | None = None) -> list[int]:
    """The window starts a slider offers: every ``step`` (a quarter window) across the span, and the last."""
    step = step or max(1, window.width // 4)
    stops = list(range(window.first, window.last + 1 - window.width, step))
    return sorted({*stops, window.last + 1 - window.width})


boundaries = sweeps.boundaries  # the positions marked along a trace


def segment_size(size: int | None) -> int:
    """The offered segment size nearest ``size``."""
    value = DEFAULT_SEGMENT if size is None else int(size)
    return min(SEGMENT_CHOICES, key=lambda choice: (abs(choice - value), choice))


def has_segments(tables: dict, size: int) -> bool:
    """Whether a run has at least two segments of ``size`` measured positions (a trace worth following)."""
    return len(measured_positions(tables)) >= 2 * int(size)


def trace_segments(run, size: int) -> pd.DataFrame:
    """``sweeps.segments`` of a run, memoised per run and size (the bootstrap takes a few seconds)."""
    return memo_chart((run.run_id, "segments", int(size)), lambda: sweeps.segments(run.tables["layer_token"], size))


#: the largest trace file Explore reads (MB): past any model's context at 4 characters a token
MAX_TRACE_FILE_MB = 4
TRACE_KEYS = ("prompt", "response")


@dataclass(frozen=True)
class TraceFile:
    """A text read from a file: ``text`` is what the probes read (a JSONL line: prompt + response, as written)."""

    text: str
    prompt: str | None  # the question part of a JSONL line (None for a .txt file)
    n_lines: int  # the lines of a JSONL file that hold a trace (1 for a .txt file)


def read_trace_file(name: str, data: bytes, line: int = 1) -> TraceFile:
    """The text of a ``.txt`` file, or of line ``line`` (from 1) of a ``.jsonl`` file whose lines are
    {"prompt": ..., "response": ...}; PromptError naming the byte or the line otherwise."""
    import json

    from effdepth.errors import PromptError

    if len(data) > MAX_TRACE_FILE_MB * 2**20:
        raise PromptError(f"{name} has {len(data) / 2**20:.1f} MB; a trace file may have {MAX_TRACE_FILE_MB} MB.")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PromptError(f"{name} is not UTF-8 text: the byte 0x{data[err.start]:02x} at offset {err.start:,} is "
                          "not valid UTF-8. Save it as UTF-8.") from None
    if not name.lower().endswith(".jsonl"):
        return TraceFile(content.removeprefix("\ufeff"), None, 1)
    lines = [(number, text) for number, text in enumerate(content.splitlines(), 1) if text.strip()]
    if not lines:
        raise PromptError(f"{name} has no lines with a trace.")
    if not 1 <= int(line) <= len(lines):
        raise PromptError(f"{name} has {len(lines)} trace lines; pick one of 1 … {len(lines)}, not {line}.")
    number, text = lines[int(line) - 1]
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptError(f"Line {number} of {name} is not JSON ({err.msg} at column {err.colno}).") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in TRACE_KEYS):
        has = ", ".join(sorted(map(str, record))) if isinstance(record, dict) else type(record).__name__
        raise PromptError(f"Line {number} of {name} has no text under \"prompt\" and \"response\" (it has: "
                          f"{has or 'nothing'}).")
    return TraceFile(record["prompt"] + record["response"], record["prompt"], len(lines))
