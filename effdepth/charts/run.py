"""Charts of one run: layer x token heatmaps, the skip matrix with its output change, per-layer probe
curves with the ED marked, and the logit-lens top-k of one position.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from effdepth import depth
from effdepth.charts.style import (
    CURVE_HEIGHT,
    FIT_X,
    LAYER_TITLE,
    LENS_LAYER_TITLE,
    MAX_TOKEN_LABELS,
    METRICS,
    MIN_HEIGHT,
    PROBE_TITLES,
    ROW_TITLES,
    SEQ_SCHEME,
    _ed_rules,
    _layer_ticks,
    colour_scale,
    ed_rows,
    first_position,
    heatmap_height,
    token_axis,
    token_labels,
    visible_token,
)
from effdepth.contract import reduced_rows


def _token_frame(layer_token: pd.DataFrame, tokens: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = layer_token[layer_token["metric"] == metric][["layer", "pos", "value"]].copy()
    toks = tokens.sort_values("pos")
    labels = dict(zip(toks["pos"], token_labels(toks["token"].tolist(), first_position(toks))))
    visible = dict(zip(toks["pos"], [visible_token(t, 40) for t in toks["token"]]))
    rows["layer"] = rows["layer"].astype(int)
    rows["pos"] = rows["pos"].astype(int)
    rows["label"] = rows["pos"].map(labels)
    rows["token"] = rows["pos"].map(visible)
    rows["value"] = rows["value"].astype(float)
    return rows.reset_index(drop=True)


def layer_token_heatmap(layer_token: pd.DataFrame, tokens: pd.DataFrame, metric: str,
                        ed: pd.DataFrame | None = None, domain: Sequence[float] | None = None,
                        title: str | None = None, width: int | str = "container",
                        select: bool = True, selected_pos: int | None = None,
                        ed_probe: str | None = None, max_labels: int = MAX_TOKEN_LABELS,
                        boundary: int | None = None) -> alt.LayerChart:
    """Rect heatmap layer (y, bottom → top) × token (x) of one metric, with the ED as horizontal rules.

    ``select`` adds a click selection named ``cell`` over the ``pos`` field (Streamlit returns it with
    ``on_select="rerun"``); ``selected_pos`` outlines that token's column; ``boundary``: the first position
    the model wrote itself (generate, then probe), marked by a vertical rule at its left edge.
    """
    frame = _token_frame(layer_token, tokens, metric)
    first = first_position(tokens)
    labels = token_labels(tokens.sort_values("pos")["token"].tolist(), first)
    n_layers = int(frame["layer"].max()) + 1 if len(frame) else 1
    name, kind, default_probe = METRICS.get(metric, (metric, "seq", None))
    probe = ed_probe or default_probe
    scale = colour_scale(metric, frame["value"], domain)
    legend = alt.Legend(title=None, orient="right", type="gradient",
                        gradientLength=max(120, min(300, heatmap_height(n_layers) - 40)))
    base = alt.Chart(frame)
    rect = base.mark_rect().encode(
        x=alt.X("label:O", sort=labels, axis=token_axis(labels, max_labels=max_labels),
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
    shade = unmeasured_band(tokens, frame, labels)
    if shade is not None:  # measured positions: the others are read by no per-position probe
        layers.insert(0, shade)
    if selected_pos is not None and selected_pos in set(frame["pos"]):
        sel = frame[frame["pos"] == selected_pos].head(1)
        layers.append(alt.Chart(sel).mark_rect(fill=None, stroke="#111", strokeWidth=1.5).encode(
            x=alt.X("label:O", sort=labels), y=alt.value(0), y2=alt.value("height")))
    if boundary is not None and first < boundary < first + len(labels):
        layers.append(continuation_rule(labels, boundary, first))
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


def unmeasured_band(tokens: pd.DataFrame, frame: pd.DataFrame, labels: list[str]) -> alt.Chart | None:
    """Grey columns over the positions a windowed run did not measure (None when every position has values)."""
    if not len(frame):
        return None
    missing = sorted(set(tokens["pos"].astype(int)) - set(frame["pos"].astype(int)))
    if not missing:
        return None
    first = first_position(tokens)
    band = pd.DataFrame({"label": [labels[p - first] for p in missing], "pos": missing,
                         "what": ["not measured (outside the measured positions)"] * len(missing)})
    return alt.Chart(band).mark_rect(color="#e8e8e8").encode(
        x=alt.X("label:O", sort=labels), y=alt.value(0), y2=alt.value("height"),
        tooltip=[alt.Tooltip("pos:O", title="position"), alt.Tooltip("what:N", title="")])


def continuation_rule(labels: list[str], boundary: int, first: int = 0) -> alt.Chart:
    """A vertical rule at the left edge of position ``boundary`` on a token axis (whose first label is
    position ``first``): where the model's own continuation starts."""
    frame = pd.DataFrame({"label": [labels[boundary - first]], "pos": [boundary], "what": ["model's continuation →"]})
    return alt.Chart(frame).mark_rule(color="#d62728", strokeWidth=2, strokeDash=[5, 3]).encode(
        x=alt.X("label:O", sort=labels, bandPosition=0), tooltip=[alt.Tooltip("what:N", title="")])


def noise_floor(skip: pd.DataFrame, variant: str) -> float | None:
    """The largest relative change an edit that changes nothing produced (the batching noise floor)."""
    noise_name = "noise_" + variant
    rows = skip[skip["variant"] == noise_name]
    if not len(rows):
        return None
    return float(rows["value"].max())


def skip_matrix_frame(skip: pd.DataFrame, variant: str) -> pd.DataFrame:
    rows = reduced_rows(skip, variant, noise=False)
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
    out = reduced_rows(skip_output, variant, noise=False)[["skipped", "value"]].copy()
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


def token_depth_strip(token_depth: pd.DataFrame, tokens: pd.DataFrame, n_layers: int,
                      boundary: int | None = None, max_labels: int = MAX_TOKEN_LABELS) -> alt.LayerChart:
    """The commitment depth c(i) per token as bars on the heatmaps' token axis (0..L, L = only the output)."""
    toks = tokens.sort_values("pos")
    first = first_position(toks)
    labels = token_labels(toks["token"].tolist(), first)
    by_pos = dict(zip(toks["pos"].astype(int), labels))
    shown = dict(zip(toks["pos"].astype(int), [visible_token(t, 40) for t in toks["token"]]))
    pos = token_depth["pos"].astype(int)
    frame = token_depth.assign(label=pos.map(by_pos), token=pos.map(shown))
    bars = alt.Chart(frame).mark_bar(color="#54a24b").encode(
        x=alt.X("label:O", sort=labels, axis=token_axis(labels, max_labels=max_labels),
                scale=alt.Scale(paddingInner=0.1)),
        y=alt.Y("value:Q", title="commits at layer", scale=alt.Scale(domain=[0, n_layers])),
        tooltip=[alt.Tooltip("pos:O", title="position"), alt.Tooltip("token:N", title="token"),
                 alt.Tooltip("value:Q", title="commitment depth c(i)")])
    layers: list[alt.Chart] = [bars]
    if boundary is not None and first < boundary < first + len(labels):
        layers.append(continuation_rule(labels, boundary, first))
    return alt.layer(*layers).properties(
        autosize=FIT_X, width="container", height=120,
        title=alt.Title("commitment depth c(i): from which layer on the lens's top-1 is the output's",
                        anchor="start", fontSize=13))


def token_depth_histogram(token_depth: pd.DataFrame, n_layers: int, width: int | str = "container") -> alt.Chart:
    """How many tokens commit at each depth 0..L."""
    counts = token_depth["value"].astype(int).value_counts().reindex(range(n_layers + 1), fill_value=0)
    frame = pd.DataFrame({"depth": counts.index.astype("int32"), "tokens": counts.to_numpy()})
    return alt.Chart(frame).mark_bar(color="#54a24b").encode(
        x=alt.X("depth:O", title="commitment depth (L = only the output)",
                axis=alt.Axis(values=_layer_ticks(n_layers + 1), labelAngle=0)),
        y=alt.Y("tokens:Q", title="tokens"),
        tooltip=[alt.Tooltip("depth:O", title="depth"), alt.Tooltip("tokens:Q", title="tokens")],
    ).properties(autosize=FIT_X, width=width, height=120,  # without fit-x, a stretched chart has no plot height
                 title=alt.Title("tokens per commitment depth", anchor="start", fontSize=13))
