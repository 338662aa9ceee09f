"""What every chart shares: sizes, colour schemes and scales, metric and axis titles, token labels, the
ED rule marks, and helpers that read a spec back (tests, exports).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

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
    "shortcut_kl": ("shortcut-lens KL(layer ‖ final) [nats]", "kl", "shortcut_kl"),
    "shortcut_overlap": ("shortcut-lens top-5 overlap with the final top-5", "unit", "shortcut_overlap"),
    "shortcut_entropy": ("shortcut-lens entropy [nats]", "entropy", "shortcut_kl"),
    "shortcut_rank": ("rank of the final top-1 token under the shortcut lens", "rank", "shortcut_kl"),
    "erasure": ("residual erasure: max ‖Δp‖₂ over the answer positions", "seq", "cosine"),
    "ig_layer": ("integrated gradients, layer output", "diverging", "cosine"),
    "ig_attn": ("integrated gradients, attention output", "diverging", "cosine"),
    "ig_mlp": ("integrated gradients, MLP output", "diverging", "cosine"),
}


#: y-axis titles of heatmaps whose rows are not "layer"
ROW_TITLES = {"kl": LENS_LAYER_TITLE, "overlap": LENS_LAYER_TITLE, "entropy": LENS_LAYER_TITLE,
              "rank": LENS_LAYER_TITLE, **{f"shortcut_{m}": LENS_LAYER_TITLE for m in ("kl", "overlap", "entropy",
                                                                                       "rank")},
              "erasure": "depth k (h_k erased; 0 = embeddings)"}


PROBE_TITLES = {"cosine": "cosine μ", "kl": "logit-lens KL", "overlap": "top-5 overlap",
                "skip": "layer-skip effect", "shortcut_kl": "shortcut-lens KL", "shortcut_overlap": "shortcut overlap"}


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


def token_labels(tokens: Sequence[str], first: int = 0) -> list[str]:
    """Unique axis labels ``"{pos}:{visible token}"`` (position first so duplicates never merge); ``first``:
    the position of the first token (a window of a long trace)."""
    return [f"{first + i}:{visible_token(tok)}" for i, tok in enumerate(tokens)]


def first_position(tokens: pd.DataFrame) -> int:
    """The first position of a tokens table (0 unless it is a window of the text)."""
    return int(tokens["pos"].min()) if len(tokens) else 0


def label_stride(n_tokens: int, max_labels: int = MAX_TOKEN_LABELS) -> int:
    """Show every k-th token label so that at most ``max_labels`` are drawn."""
    return max(1, math.ceil(n_tokens / max_labels))


def heatmap_height(n_layers: int) -> int:
    return max(MIN_HEIGHT, PX_PER_LAYER * int(n_layers))


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


def token_axis(labels: list[str], title: str = "token", max_labels: int = MAX_TOKEN_LABELS) -> alt.Axis:
    stride = label_stride(len(labels), max_labels)
    shown = labels[::stride]
    return alt.Axis(title=title if stride == 1 else f"{title} (1 label in {stride} shown)",
                    labelAngle=-55, labelAlign="right", labelBaseline="middle", labelFontSize=10,
                    labelLimit=110, values=shown, ticks=False, domain=False, labelOverlap=False)


def _layer_ticks(n_layers: int, height: int | None = None) -> list[int]:
    """Layer tick values from 0, every layer when rows are tall enough for a 10 px label, else every k-th."""
    row = (height or heatmap_height(n_layers)) / max(1, n_layers)
    step = max(1, math.ceil(16 / row))
    return list(range(0, n_layers, step))


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


def selected_value(selection, name: str, field: str):
    """The ``field`` of the first point of selection ``name`` in the state Streamlit returns for a chart with
    ``on_select="rerun"`` (both its {"field": [v]} and [{"field": v}] forms); None when nothing is selected."""
    if not selection or not isinstance(selection, Mapping):
        return None
    sel = selection.get("selection", selection)
    points = sel.get(name) if isinstance(sel, Mapping) else None
    if isinstance(points, Mapping):
        values = points.get(field)
        values = values if isinstance(values, list) else [values]
        return values[0] if values else None
    if isinstance(points, list) and points and isinstance(points[0], Mapping):
        return points[0].get(field)
    return None
