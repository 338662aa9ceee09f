"""Computing a run for a session: overall progress across stages, the shared model's turns, stop
requests, and keeping what finished when a run is stopped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from effdepth import engine
from effdepth.app.inputs import check_prompt, config_for
from effdepth.app.lookup import find_cached
from effdepth.app.options import PROBE_LABELS
from effdepth.compute import Request, compute
from effdepth.contract import Progress
from effdepth.models.holder import ModelHolder

_STAGE_SPANS = [  # (prefix of a stage name, overall start, overall end, label)
    ("installing", 0.00, 0.05, "Loading model"),
    ("assembling", 0.00, 0.05, "Loading model"),
    ("checking sha256", 0.05, 0.08, "Loading model"),
    ("dequantising", 0.08, 0.10, "Loading model"),
    ("saving", 0.10, 0.11, "Loading model"),
    ("loading", 0.00, 0.11, "Loading model"),
    ("ready", 0.11, 0.12, "Loading model"),
    ("forward pass", 0.12, 0.14, "Forward pass"),
    ("contribution", 0.14, 0.16, "Contribution norms and cosines"),
    ("logit lens", 0.16, 0.24, "Logit lens"),
    ("layer skipping", 0.24, 0.25, "Layer skipping"),
    ("skip replay", 0.25, 0.65, "Layer skipping"),
    ("direct-path replay", 0.65, 1.00, "Layer skipping (direct path)"),
    ("residual erasure", 0.12, 0.14, "Residual erasure"),
    ("erasure ", 0.14, 0.60, "Residual erasure"),
    ("integrated gradients", 0.60, 1.00, "Integrated gradients"),
]


@dataclass
class ProgressTracker:
    """Turns the stage callbacks of load_model / run_probes into one monotone bar + a label.

    ``sink(label, fraction)`` is called on every update (a Streamlit status/progress in the app).
    """

    sink: Callable[[str, float], None] | None = None
    fraction: float = 0.0
    label: str = "Starting"
    history: list[tuple[str, float]] = field(default_factory=list)

    def __call__(self, stage: str, frac: float | None = None) -> None:
        stage = str(stage)
        low, high, title = 0.0, 0.0, stage
        for prefix, start, end, name in _STAGE_SPANS:
            if stage.lower().startswith(prefix):
                low, high, title = start, end, name
                break
        else:
            low = high = self.fraction
        overall = low + (high - low) * (frac if frac is not None and math.isfinite(frac) else 0.0)
        self.fraction = min(1.0, max(self.fraction, overall))
        self.label = title if title.lower() == stage.lower() else f"{title}: {stage}"
        self.history.append((self.label, self.fraction))
        if self.sink is not None:
            self.sink(self.label, self.fraction)


_STOPPED: OrderedDict = OrderedDict()  # (name, text, dtype, chat) -> what the last stopped run said


_STOPPED_GUARD = threading.Lock()


def record_stopped(name: str, text: str, dtype: str, chat: bool, stage: str, seconds: float, why: str,
                   kept: Sequence[str] | None = None) -> None:
    """Remember that a run of this input ended before it finished (shown when the input is reopened)."""
    when = time.strftime("%H:%M:%S")
    note = (f"The last run of this prompt on {name} ({dtype}) did not finish: {why} at {when}, "
            f"after {seconds:.0f} s, during “{stage}”. ")
    if kept:
        note += (f"What had finished ({', '.join(PROBE_LABELS.get(p, p) for p in kept)}) was kept and is shown; "
                 "the rest was not stored.")
    else:
        note += "Nothing of it was stored; run it again to see the results."
    with _STOPPED_GUARD:
        _STOPPED[(name, text, dtype, bool(chat))] = note
        while len(_STOPPED) > 256:
            _STOPPED.popitem(last=False)


def stopped_run(name: str, text: str, dtype: str, chat: bool) -> str | None:
    """The note of this input's last stopped run, if it has not been run to the end since."""
    with _STOPPED_GUARD:
        return _STOPPED.get((name, text, dtype, bool(chat)))


def _clear_stopped(name: str, text: str, dtype: str, chat: bool) -> None:
    with _STOPPED_GUARD:
        _STOPPED.pop((name, text, dtype, bool(chat)), None)


def compute_run(store, name: str, text: str, dtype: str, chat: bool, holder: ModelHolder,
                progress: Progress | None = None, config: engine.ProbeConfig | None = None,
                on_result: Callable | None = None, reuse=None, extra_meta: dict | None = None):
    """Look up a run; on a miss take the model's turn (``holder.lease``), run the probes and store it.

    The cache is checked first with keys computed without the model, and again once the turn comes
    (another session may have computed the same input meanwhile). The store is checked for
    writability before any work, so a result is never computed only to be lost; a stopped run keeps
    the probes that had finished (``effdepth.compute``: one flow for the CLI, the API and the app).
    ``on_result`` hears the run after each probe (progressive pages); ``reuse``: a run whose probes are
    taken instead of computed (the remaining probes of a stopped run).
    """
    text = check_prompt(text)
    _, cached = find_cached(store, name, text, dtype, chat, config)
    if cached is not None:
        return cached
    request = Request(text, dtype, chat, config or config_for(), extra_meta)
    result, _ = compute(store, request, lambda notify: holder.lease(name, dtype, notify), progress=progress,
                        keep_partial=True, on_result=on_result, reuse=reuse)
    _clear_stopped(name, text, dtype, chat)
    return result


