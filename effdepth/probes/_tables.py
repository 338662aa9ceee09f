"""Helpers that turn [L, T] tensors into long-format tables."""

from __future__ import annotations

import pandas as pd
import torch


def layer_token_frame(metrics: dict[str, torch.Tensor]) -> pd.DataFrame:
    """{metric: [L, T]} -> DataFrame[metric, layer, pos, value] (long format)."""
    frames = []
    for name, values in metrics.items():
        n_layers, n_tokens = values.shape
        frames.append(pd.DataFrame({
            "metric": name,
            "layer": torch.arange(n_layers).repeat_interleave(n_tokens).numpy(),
            "pos": torch.arange(n_tokens).repeat(n_layers).numpy(),
            "value": values.double().reshape(-1).numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def layer_means(layer_token: pd.DataFrame) -> pd.DataFrame:
    """Token mean per (metric, layer) over one prompt -> DataFrame[metric, layer, value]."""
    return (layer_token.groupby(["metric", "layer"], as_index=False, sort=True)["value"].mean())
