"""Altair specs for aggregates over benchmark items (Difficulty page, Compare's items mode).

Same conventions as ``effdepth.charts``: layers run left → right; an ED is a rule mark whose
position is a ``datum`` in the spec (the ED layer, or ED / L on a relative-depth axis), solid for
P1's rule and dashed for the guarded rule, in the colour of its bin (or model); bootstrap bands are
translucent areas between the 2.5 % and 97.5 % percentiles. Widths are ``"container"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

from effdepth.charts.run import CURVES
from effdepth.charts.style import (
    FIT_X,
    LAYER_TITLE,
    LENS_LAYER_TITLE,
    PROBE_TITLES,
    RULE_DASH,
    _layer_ticks,
    selected_value,
)

GROUP_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d", "#eeca3b"]
PROBE_COLOURS = {"cosine": "#4c78a8", "kl": "#e45756", "overlap": "#54a24b", "shortcut_kl": "#f58518",
                 "shortcut_overlap": "#72b7b2"}
PROBE_ORDER = ("cosine", "kl", "overlap", "shortcut_kl", "shortcut_overlap")
RULE_NAMES = {"p1": "P1", "guarded": "guarded"}
EFFECT_NAMES = {"layer": "layer effect", "logit": "logit effect"}
EFFECT_COLOURS = ["#3b3b3b", "#a6a6a6"]  # greys: the bin colours stay the bins' own
GROUP_CURVE_HEIGHT = 260
ROW_HEIGHT = 64  # per bin in the EDR charts
ROW_STRIP = 90  # per bin in the per-item strip plot


def group_colours(groups: Sequence[str], colours: Sequence[str] | None = None) -> dict[str, str]:
    """A fixed colour per group (bin or model), in the given order."""
    palette = list(colours or GROUP_COLOURS)
    return {g: palette[k % len(palette)] for k, g in enumerate(groups)}


def _title(text: str) -> alt.Title:
    return alt.Title(text, anchor="start", fontSize=13)


# --------------------------------------------------------------------------------------------------
# Aggregate curves per group with bands and ED rules
# --------------------------------------------------------------------------------------------------


def ed_legend_labels(eds: pd.DataFrame, order: Sequence[str]) -> dict[str, str]:
    """Legend label per group naming its ED(s): "gsm8k — ED 13", "aime — ED 12 (P1), 15 (guarded)"."""
    labels = {}
    for group in order:
        rows = eds[eds["group"] == group]
        found = {RULE_NAMES.get(r.rule, r.rule): int(r.ed) for r in rows.itertuples() if not pd.isna(r.ed)}
        if not found:
            text = "no transition"
        elif len(set(found.values())) == 1 and len(found) == len(rows):
            text = f"ED {next(iter(found.values()))}"
        else:
            text = "ED " + ", ".join(f"{ed} ({name})" for name, ed in found.items())
        labels[group] = f"{group} — {text}"
    return labels


def _ed_marks(eds: pd.DataFrame, order: Sequence[str], colours: Mapping[str, str],
              relative: bool) -> list[alt.Chart]:
    """Rules at each group's ED (datum = ED, or ED / L), solid P1 / dashed guarded, in its colour."""
    layers: list[alt.Chart] = []
    base = alt.Chart(pd.DataFrame({"_": [0]}))
    for group in order:
        rows = eds[(eds["group"] == group) & eds["ed"].notna()]
        drawn: set[int] = set()
        for rule in ("p1", "guarded"):
            sel = rows[rows["rule"] == rule]
            if not len(sel) or int(sel["ed"].iloc[0]) in drawn:  # guarded = P1: one solid rule
                continue
            ed = int(sel["ed"].iloc[0])
            drawn.add(ed)
            n_layers = int(sel["n_layers"].iloc[0])
            value = ed / n_layers if relative else ed
            tip = (f"{group}: ED {RULE_NAMES.get(rule, rule)} = {ed}, EDR {float(sel['edr'].iloc[0]):.2f} "
                   f"(95% CI {float(sel['edr_lo'].iloc[0]):.2f}–{float(sel['edr_hi'].iloc[0]):.2f})")
            layers.append(base.mark_rule(color=colours[group], strokeWidth=2, opacity=0.9,
                                         strokeDash=RULE_DASH.get(rule, [])).encode(
                x=alt.datum(value, type="quantitative"), tooltip=alt.value(tip)))
    return layers


def group_curves(curves: pd.DataFrame, eds: pd.DataFrame, probe: str, order: Sequence[str] | None = None,
                 relative: bool = False, colours: Sequence[str] | None = None, group_title: str = "bin",
                 title: str | None = None, width: int | str = "container",
                 height: int = GROUP_CURVE_HEIGHT) -> alt.LayerChart:
    """The aggregate curve of one probe per group (bin or model) with its 95 % bootstrap band and its
    ED rules. ``curves``: ``difficulty.probe_curves`` (group, layer, depth, value, lo, hi, n_layers,
    n_items); ``eds``: ``difficulty.probe_eds``. ``relative``: x = layer / L (models of different depth)."""
    order = list(order or dict.fromkeys(curves["group"]))
    colour_of = group_colours(order, colours)
    legend = ed_legend_labels(eds, order)
    data = curves.copy()
    data["layer"] = data["layer"].astype(int)
    data["series"] = data["group"].map(legend)
    n_layers = int(data["n_layers"].max()) if len(data) else 1
    if relative:
        x = alt.X("depth:Q", title="relative depth  layer / L", scale=alt.Scale(domain=[0, 1], nice=False),
                  axis=alt.Axis(format=".1f", grid=False))
    else:
        title_x = LENS_LAYER_TITLE if probe in ("kl", "overlap") else LAYER_TITLE
        x = alt.X("layer:Q", title=title_x, scale=alt.Scale(domain=[0, max(1, n_layers - 1)], nice=False),
                  axis=alt.Axis(values=_layer_ticks(n_layers, 2 * height), labelFontSize=10, grid=False,
                                format="d"))
    y_title = CURVES[probe][1].replace("(token mean)", "μ (aggregate)")
    y_scale = alt.Scale(domain=[0, 1]) if probe == "overlap" else alt.Scale(zero=probe == "kl")
    colour = alt.Color("series:N", title=None, scale=alt.Scale(domain=[legend[g] for g in order],
                                                               range=[colour_of[g] for g in order]),
                       legend=alt.Legend(orient="top", direction="vertical", labelLimit=400, symbolType="stroke",
                                         symbolStrokeWidth=3, symbolOpacity=1, labelFontSize=12,
                                         labelColor="#333"))
    tooltip = [alt.Tooltip("group:N", title=group_title), alt.Tooltip("layer:Q", title="layer"),
               alt.Tooltip("n_layers:Q", title="L"), alt.Tooltip("depth:Q", title="layer / L", format=".3f"),
               alt.Tooltip("value:Q", title="aggregate", format=".4g"),
               alt.Tooltip("lo:Q", title="95% CI low", format=".4g"),
               alt.Tooltip("hi:Q", title="95% CI high", format=".4g"), alt.Tooltip("n_items:Q", title="items")]
    base = alt.Chart(data)
    layers: list[alt.Chart] = []
    if probe == "cosine":
        layers.append(alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#999", strokeDash=[2, 2]).encode(
            y="y:Q"))
    if probe == "overlap":
        from effdepth.depth import OVERLAP_TAU

        layers.append(alt.Chart(pd.DataFrame({"y": [OVERLAP_TAU]})).mark_rule(color="#999", strokeDash=[2, 2]).encode(
            y="y:Q", tooltip=[alt.Tooltip("y:Q", title="P1 threshold")]))
    layers.append(base.mark_area(opacity=0.18).encode(x=x, y=alt.Y("lo:Q", title=y_title, scale=y_scale),
                                                      y2="hi:Q", color=colour))
    layers.append(base.mark_line(strokeWidth=2.2, point=alt.OverlayMarkDef(size=14)).encode(
        x=x, y=alt.Y("value:Q", title=y_title, scale=y_scale), color=colour, tooltip=tooltip))
    layers += _ed_marks(eds, order, colour_of, relative)
    axis_name = "layer / L" if relative else "layer"
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=height,
        title=_title(title or f"{PROBE_TITLES.get(probe, probe)} per {group_title} vs {axis_name}"))


# --------------------------------------------------------------------------------------------------
# EDR with CIs
# --------------------------------------------------------------------------------------------------


def edr_ci_chart(eds: pd.DataFrame, rule: str = "p1", order: Sequence[str] | None = None,
                 group_title: str = "bin", title: str | None = None,
                 width: int | str = "container") -> alt.LayerChart:
    """EDR of the aggregate curve per group (rows) and probe (colour), point + 95 % CI bar, one rule."""
    data = eds[(eds["rule"] == rule) & eds["probe"].isin(PROBE_ORDER)].copy()
    data["probe_title"] = data["probe"].map(lambda p: PROBE_TITLES.get(p, p))
    data["ci"] = [("no transition" if pd.isna(e) else f"{lo:.2f}–{hi:.2f}")
                  for e, lo, hi in zip(data["ed"], data["edr_lo"], data["edr_hi"])]
    data["ed"] = data["ed"].astype("Float64").astype(float)
    data = data[data["edr"].notna()]
    order = list(order or dict.fromkeys(eds["group"]))
    shown = [p for p in PROBE_ORDER if p in set(data["probe"])] or list(PROBE_ORDER[:3])  # the shortcut lens: opt-in
    probes = [PROBE_TITLES[p] for p in shown]
    y = alt.Y("group:N", title=None, sort=order, axis=alt.Axis(labelFontSize=11, labelLimit=220))
    y_offset = alt.YOffset("probe_title:N", sort=probes, scale=alt.Scale(domain=probes, paddingOuter=0.3))
    colour = alt.Color("probe_title:N", title=None, scale=alt.Scale(
        domain=probes, range=[PROBE_COLOURS[p] for p in shown]),
        legend=alt.Legend(orient="top", direction="horizontal"))
    x_scale = alt.Scale(domain=[0, 1], nice=False)
    tooltip = [alt.Tooltip("group:N", title=group_title), alt.Tooltip("probe_title:N", title="probe"),
               alt.Tooltip("ed:Q", title="ED"), alt.Tooltip("edr:Q", title="EDR", format=".3f"),
               alt.Tooltip("ci:N", title="EDR 95% CI"), alt.Tooltip("n_items:Q", title="items"),
               alt.Tooltip("frac_none:Q", title="no transition (share of resamples)", format=".0%")]
    base = alt.Chart(data)
    bars = base.mark_rule(strokeWidth=2.5, opacity=0.8).encode(
        x=alt.X("edr_lo:Q", title="EDR = (ED + 1) / L", scale=x_scale), x2="edr_hi:Q", y=y, yOffset=y_offset,
        color=colour, tooltip=tooltip)
    points = base.mark_point(filled=True, size=70, opacity=1).encode(
        x=alt.X("edr:Q", scale=x_scale), y=y, yOffset=y_offset, color=colour, tooltip=tooltip)
    n_rows = max(1, len(order))
    return alt.layer(bars, points).properties(
        autosize=FIT_X, width=width, height=max(110, ROW_HEIGHT * n_rows),
        title=_title(title or f"EDR with 95% bootstrap CI — {RULE_NAMES.get(rule, rule)} rule"))


# --------------------------------------------------------------------------------------------------
# Depth score (P2 §7.1)
# --------------------------------------------------------------------------------------------------


def depth_score_bars(scores: pd.DataFrame, reduce: str = "max", order: Sequence[str] | None = None,
                     n_layers: int | None = None, title: str | None = None,
                     width: int | str = "container", height: int = 230) -> alt.LayerChart:
    """P2's depth score per bin: layer-effect and logit-effect bars side by side (one reduction)."""
    data = scores[scores["reduce"] == reduce].copy()
    data["effect_name"] = data["effect"].map(EFFECT_NAMES)
    data["depth_score"] = data["depth_score"].astype(float)
    order = list(order or dict.fromkeys(scores["bin"]))
    effects = list(EFFECT_NAMES.values())
    scored = data["depth_score"].dropna()
    top = float(n_layers - 1) if n_layers else max(1.0, float(scored.max()) if len(scored) else 1.0)
    x = alt.X("bin:N", title=None, sort=order, axis=alt.Axis(labelAngle=0, labelFontSize=11, labelLimit=200))
    offset = alt.XOffset("effect_name:N", sort=effects, scale=alt.Scale(domain=effects))
    y_title, y_scale = "depth score  Σ s·e(s) / Σ e(s)", alt.Scale(domain=[0, top], nice=False)
    y = alt.Y("depth_score:Q", title=y_title, scale=y_scale)
    colour = alt.Color("effect_name:N", title=None, scale=alt.Scale(domain=effects, range=EFFECT_COLOURS),
                       legend=alt.Legend(orient="top", direction="horizontal"))
    tooltip = [alt.Tooltip("bin:N"), alt.Tooltip("effect_name:N", title="effect"),
               alt.Tooltip("depth_score:Q", title="depth score", format=".2f"),
               alt.Tooltip("n_items:Q", title="items"), alt.Tooltip("reduce:N", title="reduced by")]
    base = alt.Chart(data)
    bars = base.mark_bar(width=alt.RelativeBandSize(0.9)).encode(x=x, xOffset=offset, y=y, color=colour,
                                                                 tooltip=tooltip)
    labels = base.mark_text(baseline="bottom", dy=-3, fontSize=11).encode(
        x=x, xOffset=offset, y=y, text=alt.Text("depth_score:Q", format=".1f"))
    layers = [bars, labels]
    missing = data[data["depth_score"].isna()]
    if len(missing):  # a bin whose items were all left out (too short for the future skip) reads "n/a"
        missing = missing.assign(na="n/a", zero=0.0)
        n_left = ([alt.Tooltip("n_left_out:Q", title="items left out")] if "n_left_out" in missing else [])
        layers.append(alt.Chart(missing).mark_text(baseline="bottom", dy=-3, fontSize=11, color="#888").encode(
            x=x, xOffset=offset, y=alt.Y("zero:Q", title=y_title, scale=y_scale), text="na:N",
            tooltip=[alt.Tooltip("bin:N"), alt.Tooltip("effect_name:N", title="effect")] + n_left))
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=height,
        title=_title(title or f"Depth score per bin — {reduce} over items"))


def effect_profiles(profiles: pd.DataFrame, scores: pd.DataFrame, reduce: str = "max", effect: str = "layer",
                    order: Sequence[str] | None = None, width: int | str = "container",
                    height: int = 230) -> alt.LayerChart:
    """The effect profile e(s) per bin behind the depth score, with each bin's depth score as a rule."""
    data = profiles[(profiles["reduce"] == reduce) & (profiles["effect"] == effect)].copy()
    order = list(order or dict.fromkeys(profiles["bin"]))
    colour_of = group_colours(order)
    n_layers = int(data["layer"].max()) + 1 if len(data) else 1
    colour = alt.Color("bin:N", title=None, scale=alt.Scale(domain=order, range=[colour_of[b] for b in order]),
                       legend=alt.Legend(orient="top", direction="horizontal", labelLimit=200))
    x = alt.X("layer:Q", title="skipped layer s", scale=alt.Scale(domain=[0, max(1, n_layers - 1)], nice=False),
              axis=alt.Axis(values=_layer_ticks(n_layers, 2 * height), labelFontSize=10, grid=False,
                            format="d"))
    y_title = "mean effect on later layers e(s)" if effect == "layer" else "output change ‖Δp‖₂ O(s)"
    layers: list[alt.Chart] = [alt.Chart(data).mark_line(strokeWidth=2, point=alt.OverlayMarkDef(size=14)).encode(
        x=x, y=alt.Y("value:Q", title=y_title), color=colour,
        tooltip=[alt.Tooltip("bin:N"), alt.Tooltip("layer:Q", title="skipped layer"),
                 alt.Tooltip("value:Q", title="effect", format=".4g")])]
    base = alt.Chart(pd.DataFrame({"_": [0]}))
    sel = scores[(scores["reduce"] == reduce) & (scores["effect"] == effect)]
    for row in sel.itertuples():
        if row.depth_score is None or pd.isna(row.depth_score):
            continue
        layers.append(base.mark_rule(color=colour_of.get(row.bin, "#333"), strokeWidth=2, strokeDash=[4, 3]).encode(
            x=alt.datum(float(row.depth_score), type="quantitative"),
            tooltip=alt.value(f"{row.bin}: depth score {float(row.depth_score):.2f}")))
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=height,
        title=_title(f"{EFFECT_NAMES[effect].capitalize()} profile per bin ({reduce} over items); "
                     "dashed: depth score"))


# --------------------------------------------------------------------------------------------------
# Per-item ED distribution
# --------------------------------------------------------------------------------------------------


def _jitter(index: pd.Series) -> pd.Series:
    """A deterministic spread in [-0.8, 0.8] (golden-ratio sequence over the item index)."""
    return ((index.astype(float) * 0.618034) % 1.0 - 0.5) * 1.6


def item_ed_strip(per_item: pd.DataFrame, probe: str = "cosine", rule: str = "p1",
                  order: Sequence[str] | None = None, n_layers: int | None = None,
                  aggregate: pd.DataFrame | None = None, selected: str | None = None,
                  select: bool = True, width: int | str = "container") -> alt.LayerChart:
    """The ED of every item (points, jittered), a box per bin, and the aggregate curve's ED (red tick).

    ``per_item``: ``difficulty.item_eds``; ``aggregate``: ``difficulty.probe_eds`` (group = bin).
    ``select`` adds a click selection named ``item`` over ``item_id`` (Streamlit returns it with
    ``on_select``); ``selected`` outlines that item.
    """
    data = per_item[(per_item["probe"] == probe) & (per_item["rule"] == rule) & per_item["ed"].notna()].copy()
    data["ed"] = data["ed"].astype(float)
    data["edr"] = data["edr"].astype(float)
    data["jitter"] = _jitter(data["item_index"])
    data["label"] = data["dataset"] + " #" + data["item_index"].astype(str)
    data["is_selected"] = data["item_id"] == (selected or "")
    order = list(order or dict.fromkeys(per_item["bin"]))
    colour_of = group_colours(order)
    top = int((n_layers or (int(data["ed"].max()) + 2 if len(data) else 2)) - 1)
    ticks = list(range(0, top + 1, max(1, -(-(top + 1) // 32))))
    x = alt.X("ed:Q", title=f"ED of each item ({PROBE_TITLES.get(probe, probe)}, "
                            f"{RULE_NAMES.get(rule, rule)} rule)", scale=alt.Scale(domain=[0, top], nice=False),
              axis=alt.Axis(values=ticks, format="d", labelFontSize=10))
    y = alt.Y("bin:N", title=None, sort=order, axis=alt.Axis(labelFontSize=11, labelLimit=200))
    colour = alt.Color("bin:N", scale=alt.Scale(domain=order, range=[colour_of[b] for b in order]), legend=None)
    base = alt.Chart(data)
    box = base.mark_boxplot(extent="min-max", size=34, opacity=0.3, median=alt.MarkConfig(color="#333"),
                            outliers=False).encode(x=x, y=y, color=colour)
    tooltip = [alt.Tooltip("label:N", title="item"), alt.Tooltip("bin:N"), alt.Tooltip("ed:Q", title="ED"),
               alt.Tooltip("edr:Q", title="EDR", format=".3f"), alt.Tooltip("n_tokens:Q", title="tokens"),
               alt.Tooltip("run_id:N", title="run")]
    points = base.mark_circle(opacity=0.8, stroke="#111").encode(
        x=x, y=y, yOffset=alt.YOffset("jitter:Q", scale=alt.Scale(domain=[-1, 1])), color=colour,
        size=alt.condition("datum.is_selected", alt.value(150), alt.value(55)),
        strokeWidth=alt.condition("datum.is_selected", alt.value(2.5), alt.value(0)),
        tooltip=tooltip)
    if select:
        points = points.add_params(alt.selection_point(name="item", fields=["item_id"], on="click",
                                                       clear="dblclick", empty=False))
    layers: list[alt.Chart] = [box]
    if aggregate is not None and len(aggregate):  # under the points (they stay clickable), taller than them
        agg = aggregate[(aggregate["rule"] == rule) & aggregate["ed"].notna()].copy()
        agg["bin"] = agg["group"]
        agg["ed"] = agg["ed"].astype(float)
        layers.append(alt.Chart(agg).mark_tick(color="#d62728", thickness=3, size=ROW_STRIP - 4).encode(
            x=alt.X("ed:Q"), y=y, tooltip=[alt.Tooltip("bin:N"), alt.Tooltip("ed:Q", title="ED of the aggregate")]))
    layers.append(points)
    return alt.layer(*layers).properties(
        autosize=FIT_X, width=width, height=max(120, ROW_STRIP * max(1, len(order))),
        title=_title("ED per item (click a point to pick the item; red tick: ED of the aggregate curve)"))


def selected_item(selection: Mapping | None, name: str = "item") -> str | None:
    """The ``item_id`` clicked in the strip plot, from the state Streamlit returns for ``on_select``."""
    value = selected_value(selection, name, "item_id")
    return None if value is None else str(value)
