"""Altair (Vega-Lite) specs built from a run's long tables — no Streamlit here.

Conventions shared by every chart, so a person reads them all the same way:

- Layers run **bottom → top** (layer 0 at the bottom) on every layer axis of a heatmap, and left →
  right on every curve. Rows of the logit-lens heatmaps are the residual *entering* layer l
  (docs/SPEC.md §12.3; row 0 = the embeddings), hence the axis title "layer (input of)".
- Token axes show one label per position, ``"{pos}:{token}"`` with spaces as ``·`` and newlines as
  ``↵`` (see :func:`token_labels`); long prompts show every k-th label only.
- Colour: cosines are diverging (``blueorange``) on a fixed domain [-1, 1] centred at 0; everything
  else is sequential (``viridis``). KL uses a symlog scale; relative contributions are clipped at a
  high quantile (the tooltip always shows the raw value). The skip matrix uses P2's fixed [0, 1].
- The Effective Depth (ED) is a rule mark whose position is a ``datum`` in the spec (the ED layer
  itself), solid for P1's rule and dashed for the guarded rule.
- Widths are ``"container"``; heatmap heights are ``PX_PER_LAYER`` per layer (at least ``MIN_HEIGHT``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from effdepth import depth
from effdepth.contract import SPLIT_MAX

PX_PER_LAYER = 14
MIN_HEIGHT = 250
CURVE_HEIGHT = 230
MAX_TOKEN_LABELS = 48  # beyond this many positions, label every k-th token only
LABEL_CHARS = 12

COS_SCHEME = "blueorange"
SEQ_SCHEME = "viridis"
DELTA_SCHEME = "redblue"
RULE_COLOURS = {"p1": "#d62728", "guarded": "#222222", "proposed": "#d62728"}
RULE_DASH = {"p1": [], "guarded": [6, 4], "proposed": []}
MODEL_COLOURS = ["#1f77b4", "#ff7f0e"]

#: width fits the container, height is the plot area's (axes and titles come on top of it)
FIT_X = alt.AutoSizeParams(type="fit-x", contains="padding")

LAYER_TITLE = "layer"
LENS_LAYER_TITLE = "layer (input of)"

#: metric -> (display title, colour-scale kind, which ED probe is drawn on its heatmap)
METRICS: dict[str, tuple[str, str, str | None]] = {
    "cos_att": ("cosine(attention out, residual in)", "cosine", "cosine"),
    "cos_mlp": ("cosine(MLP out, residual after attention)", "cosine", "cosine"),
    "cos_layer": ("cosine(layer contribution, residual in)", "cosine", "cosine"),
    "cos_io": ("cosine(layer output, layer input)", "cosine", "cosine"),
    "rc_att": ("relative contribution ‖attention‖ / ‖residual‖", "ratio", "cosine"),
    "rc_mlp": ("relative contribution ‖MLP‖ / ‖residual‖", "ratio", "cosine"),
    "rc_layer": ("relative contribution ‖layer‖ / ‖residual‖", "ratio", "cosine"),
    "kl": ("logit-lens KL(layer ‖ final) [nats]", "kl", "kl"),
    "overlap": ("logit-lens top-5 overlap with the final top-5", "unit", "overlap"),
    "entropy": ("logit-lens entropy [nats]", "entropy", "kl"),
    "rank": ("rank of the final top-1 token in the layer's distribution", "rank", "kl"),
    "erasure": ("residual erasure: max ‖Δp‖₂ over the answer positions", "seq", "cosine"),
    "ig_layer": ("integrated gradients, layer output", "diverging", "cosine"),
    "ig_attn": ("integrated gradients, attention output", "diverging", "cosine"),
    "ig_mlp": ("integrated gradients, MLP output", "diverging", "cosine"),
}
#: y-axis titles of heatmaps whose rows are not "layer"
ROW_TITLES = {"kl": LENS_LAYER_TITLE, "overlap": LENS_LAYER_TITLE, "entropy": LENS_LAYER_TITLE,
              "rank": LENS_LAYER_TITLE, "erasure": "depth k (h_k erased; 0 = embeddings)"}

PROBE_TITLES = {"cosine": "cosine μ", "kl": "logit-lens KL", "overlap": "top-5 overlap",
                "skip": "layer-skip effect"}


# --------------------------------------------------------------------------------------------------
# Token labels
# --------------------------------------------------------------------------------------------------


def visible_token(text: str, max_chars: int = LABEL_CHARS) -> str:
    """A token made readable on an axis: spaces → ``·``, newlines → ``↵``, tabs → ``⇥``, empty → ``∅``."""
    if text is None:
        return "∅"
    shown = (str(text).replace("\r\n", "↵").replace("\n", "↵").replace("\r", "↵")
             .replace("\t", "⇥").replace(" ", "·"))
    shown = "".join(ch if ch.isprintable() else "�" for ch in shown)
    if not shown:
        return "∅"
    return shown if len(shown) <= max_chars else shown[: max_chars - 1] + "…"


def token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"{pos}:{visible token}"`` (position first so duplicates never merge)."""
    return [f"{pos}:{visible_token(tok)}" for pos, tok in enumerate(tokens)]


def label_stride(n_tokens: int, max_labels: int = MAX_TOKEN_LABELS) -> int:
    """Show every k-th token label so that at most ``max_labels`` are drawn."""
    return max(1, math.ceil(n_tokens / max_labels))


def heatmap_height(n_layers: int) -> int:
    return max(MIN_HEIGHT, PX_PER_LAYER * int(n_layers))


# --------------------------------------------------------------------------------------------------
# ED helpers
# --------------------------------------------------------------------------------------------------


def ed_rows(ed: pd.DataFrame | None, probe: str) -> list[dict]:
    """The ED rows of one probe that found a transition: [{rule, ed, edr, description}, ...]."""
    if ed is None or not len(ed):
        return []
    rows = ed[(ed["probe"] == probe) & ed["ed"].notna()]
    return [{"rule": r["rule"], "ed": int(r["ed"]), "edr": float(r["edr"]),
             "description": r.get("description", "")} for _, r in rows.iterrows()]


def _rule_label(rule: str, ed_value: int) -> str:
    name = {"p1": "ED P1", "guarded": "ED guarded", "proposed": "ED"}.get(rule, f"ED {rule}")
    return f"{name} = {ed_value}"


def _ed_rules(rows: list[dict], channel: str, field_type: str = "quantitative",
              scale_to: float | None = None, label: bool = True, colour: str | None = None,
              suffix: str = "", halo: str | None = None, extent: float | None = None) -> list[alt.Chart]:
    """Rule (+ text) layers at the ED positions. ``channel`` is "x" (vertical) or "y" (horizontal).

    The rule position is a ``datum`` (the ED layer itself, or ED / L when ``scale_to`` = L), so the
    spec alone says where the marker sits. Rules of different rules at the same layer share a label.
    """
    layers: list[alt.Chart] = []
    base = alt.Chart(pd.DataFrame({"_": [0]}))
    by_value: dict[int, list[dict]] = {}
    for row in rows:
        by_value.setdefault(row["ed"], []).append(row)
    for k, (ed_value, group) in enumerate(sorted(by_value.items())):
        value = ed_value / scale_to if scale_to else ed_value
        enc_value = alt.datum(value, type=field_type)
        rules = [r["rule"] for r in group]
        if rules == ["proposed"]:
            text_label = f"ED = {ed_value}{suffix}"
        else:
            text_label = f"ED ({', '.join('P1' if r == 'p1' else r for r in rules)}) = {ed_value}{suffix}"
        tip = f"{text_label} (EDR {group[0]['edr']:.2f})"
        for row in group:
            colour_value = colour or RULE_COLOURS.get(row["rule"], "#d62728")
            dash = RULE_DASH.get(row["rule"], [])
            if halo:
                layers.append(base.mark_rule(color=halo, strokeWidth=4, opacity=0.8).encode(
                    **{channel: enc_value}))
            rule = base.mark_rule(color=colour_value, strokeWidth=2, strokeDash=dash, opacity=0.9).encode(
                **{channel: enc_value}, tooltip=alt.value(tip))
            layers.append(rule)
        if label:
            colour_value = colour or RULE_COLOURS.get(group[0]["rule"], "#d62728")
            text_kwargs = dict(color=colour_value, fontSize=11, fontWeight="bold")
            if channel == "x":
                flip = extent is not None and value > 0.6 * extent  # keep labels near the right edge inside
                text = base.mark_text(align="right" if flip else "left", baseline="top", dx=-4 if flip else 4,
                                      dy=4 + 14 * k, **text_kwargs).encode(x=enc_value, y=alt.value(0))
            else:
                text = base.mark_text(align="right", baseline="bottom", dx=-4, dy=-3, **text_kwargs).encode(
                    y=enc_value, x=alt.value("width"))
            if halo:
                layers.append(text.mark_text(align=text.mark.align, baseline=text.mark.baseline, dx=text.mark.dx,
                                             dy=text.mark.dy, stroke=halo, strokeWidth=3, fontSize=11,
                                             fontWeight="bold", color=halo).encode(text=alt.value(text_label)))
            layers.append(text.encode(text=alt.value(text_label)))
    return layers


# --------------------------------------------------------------------------------------------------
# Colour scales
# --------------------------------------------------------------------------------------------------


def colour_scale(metric: str, values: pd.Series | np.ndarray | None = None,
                 domain: Sequence[float] | None = None) -> alt.Scale:
    """The colour scale of a metric; ``domain`` overrides the data-driven one (shared in Compare)."""
    kind = METRICS.get(metric, (metric, "seq", None))[1]
    if kind == "cosine":
        return alt.Scale(scheme=COS_SCHEME, domain=list(domain or [-1.0, 1.0]), domainMid=0, clamp=True)
    if kind == "unit":
        return alt.Scale(scheme=SEQ_SCHEME, domain=list(domain or [0.0, 1.0]), clamp=True)
    if domain is None:
        domain = default_domain(metric, values)
    if kind == "diverging":
        return alt.Scale(scheme=DELTA_SCHEME, domain=list(domain), domainMid=0, clamp=True)
    if kind == "kl":
        return alt.Scale(scheme=SEQ_SCHEME, type="symlog", constant=0.1, domain=list(domain), clamp=True)
    if kind == "rank":
        return alt.Scale(scheme=SEQ_SCHEME, type="log", domain=list(domain), clamp=True, reverse=True)
    if kind == "ratio":
        return alt.Scale(scheme=SEQ_SCHEME, type="log", domain=list(domain), clamp=True)
    return alt.Scale(scheme=SEQ_SCHEME, domain=list(domain), clamp=True)


def default_domain(metric: str, *values_list) -> list[float]:
    """A data-driven domain for a sequential metric over one or more value arrays (for sharing)."""
    kind = METRICS.get(metric, (metric, "seq", None))[1]
    if kind == "cosine":
        return [-1.0, 1.0]
    if kind == "unit":
        return [0.0, 1.0]
    arrays = [np.asarray(v, dtype=float) for v in values_list if v is not None and len(v)]
    data = np.concatenate(arrays) if arrays else np.array([1.0])
    data = data[np.isfinite(data)]
    if not len(data):
        data = np.array([1.0])
    if kind == "ratio":  # spans decades (layer 0, attention sinks): log scale over the 2nd-98th percentile
        positive = data[data > 0]
        if not len(positive):
            return [1e-3, 1.0]
        low, high = (float(np.quantile(positive, q)) for q in (0.02, 0.98))
        return [low, high if high > low else low * 10]
    if kind == "rank":
        return [1.0, max(2.0, float(data.max()))]
    if kind == "diverging":
        top = float(np.abs(data).max())
        return [-top, top] if top > 0 else [-1.0, 1.0]
    else:
        top = float(data.max())
    return [0.0, top if top > 0 else 1.0]


# --------------------------------------------------------------------------------------------------
# Layer × token heatmaps
# --------------------------------------------------------------------------------------------------


def _token_frame(layer_token: pd.DataFrame, tokens: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = layer_token[layer_token["metric"] == metric][["layer", "pos", "value"]].copy()
    toks = tokens.sort_values("pos")
    labels = dict(zip(toks["pos"], token_labels(toks["token"].tolist())))
    visible = dict(zip(toks["pos"], [visible_token(t, 40) for t in toks["token"]]))
    rows["layer"] = rows["layer"].astype(int)
    rows["pos"] = rows["pos"].astype(int)
    rows["label"] = rows["pos"].map(labels)
    rows["token"] = rows["pos"].map(visible)
    rows["value"] = rows["value"].astype(float)
    return rows.reset_index(drop=True)


def _token_axis(labels: list[str], title: str = "token", max_labels: int = MAX_TOKEN_LABELS) -> alt.Axis:
    stride = label_stride(len(labels), max_labels)
    shown = labels[::stride]
    return alt.Axis(title=title if stride == 1 else f"{title} (1 label in {stride} shown)",
                    labelAngle=-55, labelAlign="right", labelBaseline="middle", labelFontSize=10,
                    labelLimit=110, values=shown, ticks=False, domain=False, labelOverlap=False)


def layer_token_heatmap(layer_token: pd.DataFrame, tokens: pd.DataFrame, metric: str,
                        ed: pd.DataFrame | None = None, domain: Sequence[float] | None = None,
                        title: str | None = None, width: int | str = "container",
                        select: bool = True, selected_pos: int | None = None,
                        ed_probe: str | None = None, max_labels: int = MAX_TOKEN_LABELS) -> alt.LayerChart:
    """Rect heatmap layer (y, bottom → top) × token (x) of one metric, with the ED as horizontal rules.

    ``select`` adds a click selection named ``cell`` over the ``pos`` field (Streamlit returns it with
    ``on_select="rerun"``); ``selected_pos`` outlines that token's column.
    """
    frame = _token_frame(layer_token, tokens, metric)
    labels = token_labels(tokens.sort_values("pos")["token"].tolist())
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    name, kind, default_probe = METRICS.get(metric, (metric, "seq", None))
    probe = ed_probe or default_probe
    scale = colour_scale(metric, frame["value"], domain)
    legend = alt.Legend(title=None, orient="right", type="gradient",
                        gradientLength=max(120, min(300, heatmap_height(n_layers) - 40)))
    base = alt.Chart(frame)
    rect = base.mark_rect().encode(
        x=alt.X("label:O", sort=labels, axis=_token_axis(labels, max_labels=max_labels),
                scale=alt.Scale(paddingInner=0)),
        y=alt.Y("layer:O", sort="descending", title=ROW_TITLES.get(metric, LAYER_TITLE),
                axis=alt.Axis(values=_layer_ticks(n_layers), labelFontSize=10, ticks=False, domain=False,
                              labelOverlap=False),
                scale=alt.Scale(paddingInner=0)),
        color=alt.Color("value:Q", scale=scale, legend=legend),
        tooltip=[alt.Tooltip("layer:O", title="layer"), alt.Tooltip("pos:O", title="position"),
                 alt.Tooltip("token:N", title="token"), alt.Tooltip("value:Q", title="value", format=".4g")],
    )
    if select:
        rect = rect.add_params(alt.selection_point(name="cell", fields=["pos"], on="click",
                                                   clear="dblclick", empty=False))
    layers: list[alt.Chart] = [rect]
    if selected_pos is not None and selected_pos in set(frame["pos"]):
        sel = frame[frame["pos"] == selected_pos].head(1)
        layers.append(alt.Chart(sel).mark_rect(fill=None, stroke="#111", strokeWidth=1.5).encode(
            x=alt.X("label:O", sort=labels), y=alt.value(0), y2=alt.value("height")))
    if probe:
        dark = kind in ("kl", "entropy", "rank", "ratio", "unit", "seq")
        layers += _ed_rules(ed_rows(ed, probe), "y", field_type="ordinal", label=True,
                            colour="#ffffff" if dark else "#111111", halo="#111111" if dark else "#ffffff")
    chart = alt.layer(*layers).properties(
        autosize=FIT_X,
        width=width, height=heatmap_height(n_layers),
        title=alt.Title(title or name, anchor="start", fontSize=13),
    )
    return chart


def _layer_ticks(n_layers: int, height: int | None = None) -> list[int]:
    """Layer tick values from 0, every layer when rows are tall enough for a 10 px label, else every k-th."""
    row = (height or heatmap_height(n_layers)) / max(1, n_layers)
    step = max(1, math.ceil(16 / row))
    return list(range(0, n_layers, step))


# --------------------------------------------------------------------------------------------------
# Skip matrix and output change
# --------------------------------------------------------------------------------------------------


def noise_floor(skip: pd.DataFrame, variant: str) -> float | None:
    """The largest relative change an edit that changes nothing produced (the batching noise floor)."""
    noise_name = "noise_" + variant
    rows = skip[skip["variant"] == noise_name]
    if not len(rows):
        return None
    return float(rows["value"].max())


def skip_matrix_frame(skip: pd.DataFrame, variant: str) -> pd.DataFrame:
    rows = skip[(skip["variant"] == variant) & (skip["split"] == SPLIT_MAX) & (skip["skipped"] >= 0)]
    rows = rows[["skipped", "affected", "value"]].copy()
    for col in ("skipped", "affected"):
        rows[col] = rows[col].astype(int)
    rows["value"] = rows["value"].astype(float)
    return rows.reset_index(drop=True)


def skip_chart(skip: pd.DataFrame, skip_output: pd.DataFrame, variant: str = "future",
               ed: pd.DataFrame | None = None, vmax: float = 1.0, width: int | str = "container",
               bar_width: int = 160, title: str | None = None) -> alt.HConcatChart:
    """P2-style skip matrix (skipped layer, bottom → top × affected layer, viridis [0, vmax]) with the
    output change O(s) as horizontal bars beside it, sharing the skipped-layer axis."""
    frame = skip_matrix_frame(skip, variant)
    n_layers = int(max(frame["skipped"].max(), frame["affected"].max())) + 1 if len(frame) else 1
    layer_values = list(range(n_layers))
    y = alt.Y("skipped:O", sort="descending", title="skipped layer",
              scale=alt.Scale(domain=layer_values[::-1], paddingInner=0),
              axis=alt.Axis(values=_layer_ticks(n_layers), labelFontSize=10, ticks=False, domain=False,
                              labelOverlap=False))
    rect = alt.Chart(frame).mark_rect().encode(
        x=alt.X("affected:O", title="affected layer", scale=alt.Scale(domain=layer_values, paddingInner=0),
                axis=alt.Axis(values=_layer_ticks(n_layers), labelAngle=0, labelFontSize=10, ticks=False,
                              domain=False)),
        y=y,
        color=alt.Color("value:Q", scale=alt.Scale(scheme=SEQ_SCHEME, domain=[0.0, vmax], clamp=True),
                        legend=alt.Legend(title=None, orient="left", gradientLength=120)),
        tooltip=[alt.Tooltip("skipped:O", title="skipped layer"), alt.Tooltip("affected:O", title="affected layer"),
                 alt.Tooltip("value:Q", title="relative change", format=".4g")],
    )
    layers: list[alt.Chart] = [rect]
    layers += _ed_rules(ed_rows(ed, "skip"), "y", field_type="ordinal", colour="#ffffff", halo="#111111")
    height = heatmap_height(n_layers)
    matrix = alt.layer(*layers).properties(
        width=height if width == "container" else width, height=height,
        title=alt.Title(title or f"max relative change of later layers' contributions ({variant})",
                        anchor="start", fontSize=13))
    out = skip_output[(skip_output["variant"] == variant) & (skip_output["split"] == SPLIT_MAX)
                      & (skip_output["skipped"] >= 0)][["skipped", "value"]].copy()
    out["skipped"] = out["skipped"].astype(int)
    out["value"] = out["value"].astype(float)
    bars = alt.Chart(out).mark_bar(color="#4c78a8").encode(
        y=alt.Y("skipped:O", sort="descending", scale=alt.Scale(domain=layer_values[::-1]), axis=None),
        x=alt.X("value:Q", title="output change ‖Δp‖₂",
                scale=alt.Scale(domain=[0, max(0.05, float(out["value"].max()) if len(out) else 1.0)])),
        tooltip=[alt.Tooltip("skipped:O", title="skipped layer"),
                 alt.Tooltip("value:Q", title="output change", format=".4g")],
    ).properties(width=bar_width, height=height, title=alt.Title("output change", anchor="start", fontSize=13))
    return alt.hconcat(matrix, bars, spacing=8).resolve_scale(y="shared").properties(
        autosize=alt.AutoSizeParams(type="pad"))


# --------------------------------------------------------------------------------------------------
# Per-layer curves
# --------------------------------------------------------------------------------------------------

#: probe -> (curve metrics from the ``layer`` table, y title, threshold drawn as a horizontal rule)
CURVES: dict[str, tuple[tuple[str, ...], str]] = {
    "cosine": (("cos_mu", "cos_att", "cos_mlp", "cos_layer"), "cosine (token mean)"),
    "kl": (("kl",), "KL(layer ‖ final) [nats]"),
    "overlap": (("overlap",), "top-5 overlap"),
    "skip": (("skip_layer_effect",), "mean effect on later layers e(s)"),
}


def probe_curve_frame(layer: pd.DataFrame, probe: str) -> pd.DataFrame:
    """The curve(s) of one probe as DataFrame[metric, layer, value] (adds μ = mean of the 3 cosines)."""
    metrics, _ = CURVES[probe]
    layer = depth.with_cosine_mean(layer) if probe == "cosine" else layer
    rows = layer[layer["metric"].isin(metrics)][["metric", "layer", "value"]].copy()
    rows["layer"] = rows["layer"].astype(int)
    rows["value"] = rows["value"].astype(float)
    return rows.reset_index(drop=True)


CURVE_NAMES = {"cos_mu": "μ (mean)", "cos_att": "attention", "cos_mlp": "MLP",
               "cos_layer": "layer", "kl": "KL", "overlap": "overlap", "skip_layer_effect": "e(s)"}


def probe_curve(layer: pd.DataFrame, probe: str, ed: pd.DataFrame | None = None,
                width: int | str = "container", height: int = CURVE_HEIGHT,
                title: str | None = None) -> alt.LayerChart:
    """Per-layer curve of one probe (line + points) with its ED rules (vertical, at the ED layer)."""
    frame = probe_curve_frame(layer, probe)
    metrics, y_title = CURVES[probe]
    frame["series"] = frame["metric"].map(CURVE_NAMES)
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    x = alt.X("layer:Q", title=LENS_LAYER_TITLE if probe in ("kl", "overlap") else
              ("skipped layer" if probe == "skip" else LAYER_TITLE),
              scale=alt.Scale(domain=[0, max(1, n_layers - 1)], nice=False),
              axis=alt.Axis(values=_layer_ticks(n_layers), labelFontSize=10, grid=False))
    tooltip = [alt.Tooltip("layer:Q", title="layer"), alt.Tooltip("series:N", title="curve"),
               alt.Tooltip("value:Q", title="value", format=".4g")]
    layers: list[alt.Chart] = []
    if probe == "cosine":
        layers.append(alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#999", strokeDash=[2, 2]).encode(y="y:Q"))
        thin = frame[frame["metric"] != "cos_mu"]
        layers.append(alt.Chart(thin).mark_line(strokeWidth=1.2, opacity=0.75).encode(
            x=x, y=alt.Y("value:Q", title=y_title),
            color=alt.Color("series:N", title=None, scale=alt.Scale(
                domain=["μ (mean)", "attention", "MLP", "layer"],
                range=["#111111", "#4c78a8", "#f58518", "#54a24b"]),
                            legend=alt.Legend(orient="top", direction="horizontal", labelLimit=160)),
            tooltip=tooltip))
        main = frame[frame["metric"] == "cos_mu"]
        layers.append(alt.Chart(main).mark_line(
            strokeWidth=2.5, color="#111", point=alt.OverlayMarkDef(size=18, color="#111")).encode(
            x=x, y=alt.Y("value:Q"), color=alt.Color("series:N"), tooltip=tooltip))
    else:
        y_scale = alt.Scale(domain=[0, 1]) if probe == "overlap" else alt.Scale(zero=True)
        layers.append(alt.Chart(frame).mark_line(strokeWidth=2.5, color="#4c78a8",
                                                 point=alt.OverlayMarkDef(size=18, color="#4c78a8")).encode(
            x=x, y=alt.Y("value:Q", title=y_title, scale=y_scale), tooltip=tooltip))
        threshold = _threshold(ed, probe)
        if threshold is not None:
            layers.append(alt.Chart(pd.DataFrame({"y": [threshold]})).mark_rule(
                color="#999", strokeDash=[2, 2]).encode(
                y="y:Q", tooltip=[alt.Tooltip("y:Q", title="threshold", format=".4g")]))
    layers += _ed_rules(ed_rows(ed, probe), "x", label=True, extent=max(1, n_layers - 1))
    return alt.layer(*layers).properties(
        autosize=FIT_X,
        width=width, height=height,
        title=alt.Title(title or PROBE_TITLES.get(probe, probe), anchor="start", fontSize=13))


def _threshold(ed: pd.DataFrame | None, probe: str) -> float | None:
    if ed is None or not len(ed) or "threshold" not in ed:
        return None
    rows = ed[(ed["probe"] == probe) & ed["threshold"].notna()]
    if not len(rows):
        return None
    p1 = rows[rows["rule"].isin(["p1", "proposed"])]
    return float((p1 if len(p1) else rows)["threshold"].iloc[0])


# --------------------------------------------------------------------------------------------------
# Logit-lens top-k for one position
# --------------------------------------------------------------------------------------------------


def lens_topk_frame(lens_topk: pd.DataFrame, pos: int) -> pd.DataFrame:
    rows = lens_topk[lens_topk["pos"] == pos][["layer", "rank", "token", "prob"]].copy()
    rows["layer"] = rows["layer"].astype(int)
    rows["rank"] = rows["rank"].astype(int)
    rows["shown"] = rows["token"].map(lambda t: visible_token(t, 14))
    rows["prob"] = rows["prob"].astype(float)
    return rows.sort_values(["layer", "rank"]).reset_index(drop=True)


def lens_topk_chart(lens_topk: pd.DataFrame, pos: int, label: str | None = None,
                    width: int | str = "container", ed: pd.DataFrame | None = None) -> alt.LayerChart:
    """Top-5 tokens of the logit lens at one position, per layer: cells coloured by probability."""
    frame = lens_topk_frame(lens_topk, pos)
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    y = alt.Y("layer:O", sort="descending", title=LENS_LAYER_TITLE,
              axis=alt.Axis(values=_layer_ticks(n_layers, 18 * n_layers), labelFontSize=10, ticks=False, domain=False,
                              labelOverlap=False))
    x = alt.X("rank:O", title="rank", axis=alt.Axis(labelAngle=0, orient="top"))
    base = alt.Chart(frame)
    rect = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=x, y=y, color=alt.Color("prob:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                                  legend=alt.Legend(title="p", orient="right", gradientLength=120)),
        tooltip=[alt.Tooltip("layer:O"), alt.Tooltip("rank:O"), alt.Tooltip("token:N"),
                 alt.Tooltip("prob:Q", format=".3f")])
    text = base.mark_text(fontSize=12, limit=150).encode(
        x=x, y=y, text="shown:N",
        color=alt.condition(alt.datum.prob > 0.5, alt.value("white"), alt.value("#111")))
    layers: list[alt.Chart] = [rect, text]
    layers += _ed_rules(ed_rows(ed, "kl"), "y", field_type="ordinal", label=False, colour="#d62728")
    shown = label if label is not None else str(pos)
    return alt.layer(*layers).properties(
        autosize=FIT_X,
        width=width, height=max(MIN_HEIGHT, 18 * n_layers),  # taller rows: the cells carry text
        title=alt.Title(f"logit lens at position {shown}: top-5 tokens per layer (dashed/solid red: KL ED)",
                        anchor="start", fontSize=13))


# --------------------------------------------------------------------------------------------------
# Compare: two runs
# --------------------------------------------------------------------------------------------------


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
    toks = token_labels(tokens.sort_values("pos")["token"].tolist())
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    rect = alt.Chart(frame).mark_rect().encode(
        x=alt.X("label:O", sort=toks, axis=_token_axis(toks, max_labels=max_labels), scale=alt.Scale(paddingInner=0)),
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


# --------------------------------------------------------------------------------------------------
# Spec inspection helpers (tests, exports)
# --------------------------------------------------------------------------------------------------


def iter_views(spec: dict):
    """Every (sub)view of a Vega-Lite spec dict: layers, concatenations, the spec itself."""
    yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []) or []:
            yield from iter_views(sub)
    if isinstance(spec.get("spec"), dict):
        yield from iter_views(spec["spec"])


def mark_type(view: dict) -> str | None:
    mark = view.get("mark")
    if isinstance(mark, dict):
        return mark.get("type")
    return mark


def rule_positions(spec: dict, channel: str | None = None) -> list[float]:
    """The datum positions of every rule mark in a spec (the ED markers and fixed guides)."""
    out = []
    for view in iter_views(spec):
        if mark_type(view) != "rule":
            continue
        enc = view.get("encoding", {})
        for ch in ([channel] if channel else ["x", "y"]):
            if ch in enc and "datum" in enc[ch]:
                out.append(enc[ch]["datum"])
    return out


def with_width(chart: alt.TopLevelMixin, width: int) -> alt.TopLevelMixin:
    """A copy of ``chart`` with every ``"container"`` width replaced by ``width`` (for PNG/SVG export)."""
    spec = chart.to_dict()

    def fix(node):
        if isinstance(node, dict):
            return {k: (width if k == "width" and v == "container" else fix(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(spec)
