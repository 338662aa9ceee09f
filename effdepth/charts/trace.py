"""Charts of one long trace: the ED / EDR per segment along it (line and bootstrap band per probe, the
boundaries and the heatmaps' window marked), and an overview strip of the whole trace at a bounded size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from effdepth.charts.style import FIT_X, METRICS, PROBE_TITLES, colour_scale

SEGMENT_PROBES = ("cosine", "kl", "overlap", "shortcut_kl", "shortcut_overlap")
PROBE_COLOURS = {"cosine": "#1f77b4", "kl": "#ff7f0e", "overlap": "#2ca02c", "shortcut_kl": "#9467bd",
                 "shortcut_overlap": "#8c564b"}
OVERVIEW_BINS = 600  # the overview strip's columns at most: (L+1) × 600 cells whatever the trace's length
TRACE_HEIGHT = 220


def segment_frame(segments: pd.DataFrame, rule: str = "p1", probes: Sequence[str] = SEGMENT_PROBES) -> pd.DataFrame:
    """One row per (segment, probe) of ``sweeps.segments``: where it sits on the trace and its EDR with CI."""
    rows = segments[(segments["rule"] == rule) & segments["probe"].isin(probes)].copy()
    rows["mid"] = (rows["start"] + rows["stop"] - 1) / 2
    rows["series"] = rows["probe"].map(lambda p: PROBE_TITLES.get(p, p))
    rows["ed"] = rows["ed"].astype("Float64")
    for column in ("edr", "edr_lo", "edr_hi"):
        rows[column] = rows[column].astype(float)
    return rows.reset_index(drop=True)


def _marks(boundaries: Mapping[str, int], window: tuple[int, int] | None) -> list[alt.Chart]:
    """Dashed rules at the boundaries, a grey band over the heatmaps' window."""
    layers = []
    if window is not None:
        band = pd.DataFrame({"start": [window[0]], "stop": [window[1] - 1], "what": ["the heatmaps' window"]})
        layers.append(alt.Chart(band).mark_rect(color="#000", opacity=0.07).encode(
            x="start:Q", x2="stop:Q", tooltip=[alt.Tooltip("what:N", title="")]))
    if boundaries:
        marks = pd.DataFrame({"pos": list(boundaries.values()), "what": list(boundaries)})
        layers.append(alt.Chart(marks).mark_rule(color="#d62728", strokeWidth=2, strokeDash=[5, 3]).encode(
            x="pos:Q", tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("pos:Q", title="position")]))
        layers.append(alt.Chart(marks).mark_text(align="left", dx=4, dy=-6, color="#d62728", fontSize=11).encode(
            x="pos:Q", y=alt.value(8), text="what:N"))
    return layers


def segment_chart(segments: pd.DataFrame, rule: str = "p1", boundaries: Mapping[str, int] | None = None,
                  window: tuple[int, int] | None = None, n_tokens: int | None = None,
                  probes: Sequence[str] = SEGMENT_PROBES, width: int | str = "container") -> alt.LayerChart:
    """EDR per segment along the trace, one line per probe with its 95 % bootstrap band over the segment's
    positions; ``boundaries`` {label: position} as dashed rules, ``window`` (start, stop) shaded."""
    frame = segment_frame(segments, rule, probes)
    order = [PROBE_TITLES.get(p, p) for p in probes if p in set(frame["probe"])]
    colour = alt.Color("series:N", title=None, sort=order,
                       scale=alt.Scale(domain=order, range=[PROBE_COLOURS[p] for p in probes
                                                            if PROBE_TITLES.get(p, p) in order]),
                       legend=alt.Legend(orient="top"))
    last = n_tokens if n_tokens is not None else int(frame["stop"].max()) if len(frame) else 1
    x = alt.X("mid:Q", title="position in the trace (segment centre)", scale=alt.Scale(domain=[0, last], nice=False))
    y_title = f"EDR ({'P1' if rule == 'p1' else 'guarded'} rule)"
    y = alt.Y("edr:Q", title=y_title, scale=alt.Scale(domain=[0, 1]))
    tooltip = [alt.Tooltip("series:N", title="probe"), alt.Tooltip("start:Q", title="from"),
               alt.Tooltip("stop:Q", title="to (excl.)"), alt.Tooltip("ed:Q", title="ED"),
               alt.Tooltip("edr:Q", title="EDR", format=".3f"), alt.Tooltip("edr_lo:Q", title="95% low", format=".3f"),
               alt.Tooltip("edr_hi:Q", title="95% high", format=".3f")]
    base = alt.Chart(frame)
    band = base.mark_area(opacity=0.15).encode(
        x=x, y=alt.Y("edr_lo:Q", title=y_title, scale=alt.Scale(domain=[0, 1])), y2="edr_hi:Q", color=colour)
    line = base.mark_line(strokeWidth=2, point=alt.OverlayMarkDef(size=24)).encode(x=x, y=y, color=colour,
                                                                                   tooltip=tooltip)
    layers = [*_marks(boundaries or {}, window), band, line]
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=TRACE_HEIGHT,
        title=alt.Title("effective depth along the trace: EDR per segment", anchor="start", fontSize=13))


def overview_frame(layer_token: pd.DataFrame, metric: str, bins: int = OVERVIEW_BINS) -> pd.DataFrame:
    """The metric's layer × position values averaged into at most ``bins`` position bins [layer, start, stop,
    value]: the overview of a whole trace at a size that does not grow with it."""
    rows = layer_token[layer_token["metric"] == metric]
    if not len(rows):
        return pd.DataFrame(columns=["layer", "start", "stop", "value"])
    pos = rows["pos"].astype(int).to_numpy()
    first, last = int(pos.min()), int(pos.max())
    width = max(1, int(np.ceil((last - first + 1) / bins)))
    binned = rows.assign(bin=(pos - first) // width)
    frame = binned.groupby(["layer", "bin"], as_index=False)["value"].mean()
    frame["start"] = first + frame["bin"] * width
    frame["stop"] = frame["start"] + width
    frame["layer"] = frame["layer"].astype(int)
    return frame[["layer", "start", "stop", "value"]]


def trace_overview(layer_token: pd.DataFrame, metric: str = "cos_layer", boundaries: Mapping[str, int] | None = None,
                   window: tuple[int, int] | None = None, bins: int = OVERVIEW_BINS,
                   width: int | str = "container") -> alt.LayerChart:
    """The whole trace as one strip (layer × position, averaged into bins), the heatmaps' window outlined."""
    frame = overview_frame(layer_token, metric, bins)
    name = METRICS.get(metric, (metric,))[0]
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    cells = alt.Chart(frame).mark_rect().encode(
        x=alt.X("start:Q", title="position", scale=alt.Scale(nice=False)), x2="stop:Q",
        y=alt.Y("layer:Q", title="layer", scale=alt.Scale(domain=[0, n_layers], nice=False)),
        y2=alt.Y2("layer_top:Q"), color=alt.Color("value:Q", scale=colour_scale(metric, frame["value"]), legend=None),
        tooltip=[alt.Tooltip("layer:Q"), alt.Tooltip("start:Q", title="from"), alt.Tooltip("stop:Q", title="to"),
                 alt.Tooltip("value:Q", title="mean", format=".3g")],
    ).transform_calculate(layer_top="datum.layer + 1")
    layers: list[alt.Chart] = [cells]
    if window is not None:
        outline = pd.DataFrame({"start": [window[0]], "stop": [window[1]]})
        layers.append(alt.Chart(outline).mark_rect(fill=None, stroke="#d62728", strokeWidth=2).encode(
            x="start:Q", x2="stop:Q", y=alt.value(0), y2=alt.value(90)))
    if boundaries:
        marks = pd.DataFrame({"pos": list(boundaries.values()), "what": list(boundaries)})
        layers.append(alt.Chart(marks).mark_rule(color="#d62728", strokeDash=[5, 3]).encode(
            x="pos:Q", tooltip=[alt.Tooltip("what:N", title="")]))
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=90,
        title=alt.Title(f"the whole trace: {name} (averaged over position bins); the red box is the heatmaps' window",
                        anchor="start", fontSize=13))
