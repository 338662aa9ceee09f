"""Charts of the linear fits (docs/SPEC.md §15): the shallow → deep map's error heatmap, and the held-out
KL of the logit lens and the linear shortcut lens per layer."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from effdepth.charts.style import FIT_X, LENS_LAYER_TITLE, PX_PER_LAYER
from effdepth.contract import LinearMap


def linear_map_frame(linear_map: LinearMap) -> pd.DataFrame:
    """DataFrame[source, target, error, best]: one row per (s, j); ``best``: j is the best target of s."""
    error = linear_map.error
    best = linear_map.best_target()
    s, j = np.meshgrid(np.arange(error.shape[0]), np.arange(error.shape[1]), indexing="ij")
    return pd.DataFrame({"source": s.ravel(), "target": j.ravel(), "error": error.ravel(),
                         "best": (j == best[:, None]).ravel()})


def linear_map_heatmap(linear_map: LinearMap) -> alt.LayerChart:
    """Held-out relative error over (source depth s, target depth j), the relative-depth diagonal
    s/L_A = j/L_B as a dashed line and each s's best j as a white dot."""
    meta = linear_map.meta
    frame = linear_map_frame(linear_map)
    n_b = linear_map.error.shape[1] - 1
    x = alt.X("source:O", title=f"source depth s ({meta['source_name']}, 0 = embeddings)")
    y = alt.Y("target:O", sort="descending", title=f"target depth j ({meta['target_name']})")
    tooltip = [alt.Tooltip("source:O", title="s"), alt.Tooltip("target:O", title="j"),
               alt.Tooltip("error:Q", title="relative error", format=".3f")]
    rect = alt.Chart(frame).mark_rect().encode(
        x=x, y=y, color=alt.Color("error:Q", title="relative error", scale=alt.Scale(scheme="viridis", reverse=True)),
        tooltip=tooltip)
    best = alt.Chart(frame[frame["best"]]).mark_point(shape="circle", filled=True, color="white", size=40,
                                                       stroke="black", strokeWidth=0.5).encode(
        x=x, y=y, tooltip=tooltip)
    diagonal = pd.DataFrame({"source": np.arange(linear_map.error.shape[0]), "target": linear_map.diagonal()})
    line = alt.Chart(diagonal).mark_line(color="#d62728", strokeDash=[5, 3], strokeWidth=1.5).encode(
        x=alt.X("source:Q", scale=alt.Scale(domain=[-0.5, linear_map.error.shape[0] - 0.5]), axis=None),
        y=alt.Y("target:Q", scale=alt.Scale(domain=[-0.5, n_b + 0.5]), axis=None))
    grid = (rect + best).properties(width="container", height=max(240, PX_PER_LAYER * (n_b + 1)))
    return alt.layer(grid, line).resolve_scale(x="independent", y="independent").properties(
        title=f"Linear map {meta['source_name']} → {meta['target_name']}: held-out relative error "
              f"(dots: best j per s; dashed: s/L_A = j/L_B)")


def lens_fit_frame(held_out_kl: dict[str, list[float]]) -> pd.DataFrame:
    """{"logit": [L], "shortcut": [L]} -> DataFrame[layer, lens, kl]."""
    names = {"logit": "logit lens", "shortcut": "linear shortcut lens"}
    return pd.DataFrame([{"layer": layer, "lens": names[lens], "kl": value}
                         for lens, values in held_out_kl.items() for layer, value in enumerate(values)])


def lens_fit_chart(held_out_kl: dict[str, list[float]]) -> alt.Chart:
    """The mean KL to the model's output per layer on the held-out text, under either lens (log scale)."""
    frame = lens_fit_frame(held_out_kl)
    frame["kl"] = frame["kl"].clip(lower=1e-6)
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("layer:Q", title=LENS_LAYER_TITLE, axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("kl:Q", title="held-out KL(lens ‖ final) [nats]", scale=alt.Scale(type="log")),
        color=alt.Color("lens:N", title=None, scale=alt.Scale(range=["#e45756", "#4c78a8"])),
        tooltip=["lens:N", "layer:Q", alt.Tooltip("kl:Q", format=".4f")],
    ).properties(width="container", height=220, autosize=FIT_X,
                 title="How well each lens reads the shipped held-out text")
