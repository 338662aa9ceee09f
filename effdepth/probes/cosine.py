"""Probe A (docs/SPEC.md §4): relative contribution norms and cosines of each sublayer with its residual."""

from __future__ import annotations

import pandas as pd
import torch

from effdepth.capture import Trace
from effdepth.probes._tables import layer_token_frame

EPS = 1e-6  # the spec's denominator clamp


def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine over the last dim with each norm clamped at EPS. [..., d] -> [...]"""
    return (x * y).sum(-1) / (x.norm(dim=-1).clamp_min(EPS) * y.norm(dim=-1).clamp_min(EPS))


def _rel(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1) / ref.norm(dim=-1).clamp_min(EPS)


#: the metrics of the layer_token table this probe writes (contribution_metrics' keys)
METRICS = ("rc_att", "rc_mlp", "rc_layer", "cos_att", "cos_mlp", "cos_layer", "cos_io", "norm_resid", "norm_att",
           "norm_mlp")


def contribution_metrics(trace: Trace) -> dict[str, torch.Tensor]:
    """Per layer and token: {metric: [L, T]} for every §4 quantity, fp32."""
    h = trace.resid[:-1]  # h_l      [L, T, d]
    h_next = trace.resid[1:]  # h_{l+1}  [L, T, d]
    a, m = trace.attn, trace.mlp  # a_l, m_l [L, T, d]
    h_mid = h + a  # ĥ_l, the MLP's accumulation point
    c = h_next - h  # whole-layer contribution
    return {
        "rc_att": _rel(a, h),
        "rc_mlp": _rel(m, h_mid),
        "rc_layer": _rel(c, h),
        "cos_att": _cos(a, h),
        "cos_mlp": _cos(m, h_mid),
        "cos_layer": _cos(c, h),
        "cos_io": _cos(h_next, h),
        "norm_resid": h.norm(dim=-1),
        "norm_att": a.norm(dim=-1),
        "norm_mlp": m.norm(dim=-1),
    }


def contributions(trace: Trace) -> pd.DataFrame:
    """DataFrame[metric, layer, pos, value] of every §4 quantity."""
    return layer_token_frame(contribution_metrics(trace))
