"""Charts of two runs side by side: shared colour domains, overlaid curves, and the difference heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from effdepth.charts.run import CURVES, _token_frame, probe_curve_frame
from effdepth.charts.style import (
    CURVE_HEIGHT,
    DELTA_SCHEME,
    FIT_X,
    LAYER_TITLE,
    MAX_TOKEN_LABELS,
    METRICS,
    MODEL_COLOURS,
    PROBE_TITLES,
    _ed_rules,
    _layer_ticks,
    default_domain,
    ed_rows,
    first_position,
    heatmap_height,
    token_axis,
    token_labels,
)


def shared_domain(metric: str, *layer_tokens: pd.DataFrame) -> list[float]:
    """One colour domain for a metric across several runs (so side-by-side heatmaps are comparable)."""
    values = [lt[lt["metric"] == metric]["value"].to_numpy() for lt in layer_tokens if lt is not None]
    return default_domain(metric, *values)


def compare_curves(runs: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]], probe: str,
                   rule: str = "p1", width: int | str = "container",
                   height: int = CURVE_HEIGHT) -> alt.LayerChart:
    """Per-layer curves of several runs on a depth-normalised x axis (layer / L), each with its ED.

    ``runs``: [(label, layer table, ed table), ...]. The ED rule of run k sits at ED_k / L_k.
    """
    frames, rules = [], []
    labels = [label for label, _, _ in runs]
    colours = MODEL_COLOURS[: len(labels)] if len(labels) <= len(MODEL_COLOURS) else None
    for k, (label, layer, ed) in enumerate(runs):
        frame = probe_curve_frame(layer, probe)
        main = "cos_mu" if probe == "cosine" else CURVES[probe][0][0]
        frame = frame[frame["metric"] == main].copy()
        n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
        frame["depth"] = frame["layer"] / n_layers
        frame["model"] = label
        frame["L"] = n_layers
        frames.append(frame)
        colour = colours[k] if colours else None
        rows = [r for r in ed_rows(ed, probe) if r["rule"] in (rule, "proposed")]
        rules += _ed_rules(rows, "x", scale_to=n_layers, label=False, colour=colour, suffix=f" · {label}")
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["metric", "layer", "value", "depth", "model", "L"])
    colour_scale_ = alt.Scale(domain=labels, range=colours) if colours else alt.Scale(domain=labels)
    line = alt.Chart(data).mark_line(strokeWidth=2.5, point=alt.OverlayMarkDef(size=16)).encode(
        x=alt.X("depth:Q", title="relative depth  layer / L", scale=alt.Scale(domain=[0, 1], nice=False),
                axis=alt.Axis(format=".1f", grid=False)),
        y=alt.Y("value:Q", title=CURVES[probe][1]),
        color=alt.Color("model:N", title=None, scale=colour_scale_, legend=alt.Legend(orient="bottom", labelLimit=400)),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("layer:Q"), alt.Tooltip("L:Q"),
                 alt.Tooltip("depth:Q", title="layer / L", format=".3f"), alt.Tooltip("value:Q", format=".4g")],
    )
    layers: list[alt.Chart] = []
    if probe == "cosine":
        layers.append(alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#999", strokeDash=[2, 2]).encode(y="y:Q"))
    layers.append(line)
    layers += rules
    return alt.layer(*layers).properties(
        autosize=FIT_X,
        width=width, height=height,
        title=alt.Title(f"{PROBE_TITLES.get(probe, probe)} vs relative depth", anchor="start", fontSize=13))


def delta_heatmap(layer_token_a: pd.DataFrame, layer_token_b: pd.DataFrame, tokens: pd.DataFrame,
                  metric: str, labels: tuple[str, str] = ("A", "B"),
                  width: int | str = "container", max_labels: int = MAX_TOKEN_LABELS) -> alt.LayerChart:
    """B − A per (layer, token) for two runs with the same L and tokenisation (diverging, centred at 0)."""
    a = layer_token_a[layer_token_a["metric"] == metric].set_index(["layer", "pos"])["value"]
    b = layer_token_b[layer_token_b["metric"] == metric].set_index(["layer", "pos"])["value"]
    diff = (b - a).dropna().rename("value").reset_index().assign(metric=metric)
    bound = float(np.nanmax(np.abs(diff["value"]))) if len(diff) else 1.0
    if METRICS.get(metric, ("", "", None))[1] in ("ratio", "kl", "entropy"):
        bound = float(np.quantile(np.abs(diff["value"]), 0.98)) if len(diff) else 1.0
    bound = bound if bound > 0 else 1.0
    frame = _token_frame(diff, tokens, metric)
    toks = token_labels(tokens.sort_values("pos")["token"].tolist(), first_position(tokens))
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    rect = alt.Chart(frame).mark_rect().encode(
        x=alt.X("label:O", sort=toks, axis=token_axis(toks, max_labels=max_labels), scale=alt.Scale(paddingInner=0)),
        y=alt.Y("layer:O", sort="descending", title=LAYER_TITLE,
                axis=alt.Axis(values=_layer_ticks(n_layers), labelFontSize=10, ticks=False, domain=False,
                              labelOverlap=False),
                scale=alt.Scale(paddingInner=0)),
        color=alt.Color("value:Q", scale=alt.Scale(scheme=DELTA_SCHEME, domain=[-bound, bound], domainMid=0,
                                                   clamp=True, reverse=True),
                        legend=alt.Legend(title=None, gradientLength=120)),
        tooltip=[alt.Tooltip("layer:O"), alt.Tooltip("pos:O", title="position"), alt.Tooltip("token:N"),
                 alt.Tooltip("value:Q", title=f"{labels[1]} − {labels[0]}", format=".4g")],
    )
    name = METRICS.get(metric, (metric,))[0]
    return alt.layer(rect).properties(
        autosize=FIT_X,
        width=width, height=heatmap_height(n_layers),
        title=alt.Title(f"Δ {name}: {labels[1]} − {labels[0]}", anchor="start", fontSize=13))
