"""Probe B' (docs/SPEC.md §15.2): the logit lens read through the linear shortcut lens.

Layer l's residual is first mapped to the fitted guess of the final residual (``linear.lens``), then
decoded as the logit lens does; the metrics are the logit lens's, named ``shortcut_<metric>``.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from effdepth.arch import Taps
from effdepth.capture import Trace
from effdepth.contract import Progress
from effdepth.probes._tables import layer_token_frame
from effdepth.probes.logit_lens import METRICS as LENS_METRICS
from effdepth.probes.logit_lens import lens_metrics

PREFIX = "shortcut_"
#: the metrics of the layer_token table this probe writes
METRICS = tuple(PREFIX + name for name in LENS_METRICS)
STAGE = "shortcut lens"


def shortcut_lens(trace: Trace, model_taps: Taps, transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  progress: Progress | None = None) -> pd.DataFrame:
    """DataFrame[metric, layer, pos, value] of KL, overlap, entropy and rank under the shortcut lens."""
    metrics, _ = lens_metrics(trace, model_taps, keep_top=1, progress=progress, transform=transform, stage=STAGE)
    return layer_token_frame({PREFIX + name: values for name, values in metrics.items()})
