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

The room: ``style`` (what every chart shares) <- ``run`` (one run) <- ``compare`` (two runs), ``sweep``
(aggregates over items: the Difficulty page, Compare's items mode), ``linear`` (the linear maps and the
shortcut lens's fit), ``trace`` (a long trace: ED per segment, the overview strip), ``export`` (PNG / SVG files).
Callers use the names below from ``effdepth.charts``.
"""

from effdepth.charts.compare import compare_curves, delta_heatmap, shared_domain
from effdepth.charts.export import EXPORT_WIDTH, chart_png, chart_svg, projector_spec
from effdepth.charts.linear import lens_fit_chart, lens_fit_frame, linear_map_frame, linear_map_heatmap
from effdepth.charts.run import (
    CURVE_NAMES,
    CURVES,
    continuation_rule,
    layer_token_heatmap,
    lens_topk_chart,
    lens_topk_frame,
    noise_floor,
    probe_curve,
    probe_curve_frame,
    skip_chart,
    skip_matrix_frame,
    token_depth_histogram,
    token_depth_strip,
    unmeasured_band,
)
from effdepth.charts.style import (
    COS_SCHEME,
    CURVE_HEIGHT,
    DELTA_SCHEME,
    FIT_X,
    LABEL_CHARS,
    LAYER_TITLE,
    LENS_LAYER_TITLE,
    MAX_TOKEN_LABELS,
    METRICS,
    MIN_HEIGHT,
    MODEL_COLOURS,
    PROBE_TITLES,
    PX_PER_LAYER,
    ROW_TITLES,
    RULE_COLOURS,
    RULE_DASH,
    SEQ_SCHEME,
    colour_scale,
    default_domain,
    ed_rows,
    heatmap_height,
    iter_views,
    label_stride,
    mark_type,
    rule_positions,
    selected_value,
    token_axis,
    token_labels,
    visible_token,
    with_width,
)
from effdepth.charts.sweep import (
    EFFECT_COLOURS,
    EFFECT_NAMES,
    GROUP_COLOURS,
    GROUP_CURVE_HEIGHT,
    PROBE_COLOURS,
    PROBE_ORDER,
    ROW_HEIGHT,
    ROW_STRIP,
    RULE_NAMES,
    depth_score_bars,
    ed_legend_labels,
    edr_ci_chart,
    effect_profiles,
    group_colours,
    group_curves,
    item_ed_strip,
    selected_item,
)
from effdepth.charts.trace import overview_frame, segment_chart, segment_frame, trace_overview

__all__ = [
    "overview_frame", "segment_chart", "segment_frame", "trace_overview",
    "projector_spec",
    "lens_fit_chart",
    "lens_fit_frame",
    "linear_map_frame",
    "linear_map_heatmap",
    "unmeasured_band",
    "continuation_rule",
    "selected_value",
    "token_axis",
    "PX_PER_LAYER",
    "MIN_HEIGHT",
    "CURVE_HEIGHT",
    "MAX_TOKEN_LABELS",
    "LABEL_CHARS",
    "COS_SCHEME",
    "SEQ_SCHEME",
    "DELTA_SCHEME",
    "RULE_COLOURS",
    "RULE_DASH",
    "MODEL_COLOURS",
    "FIT_X",
    "LAYER_TITLE",
    "LENS_LAYER_TITLE",
    "METRICS",
    "ROW_TITLES",
    "PROBE_TITLES",
    "visible_token",
    "token_labels",
    "label_stride",
    "heatmap_height",
    "ed_rows",
    "colour_scale",
    "default_domain",
    "iter_views",
    "mark_type",
    "rule_positions",
    "with_width",
    "layer_token_heatmap",
    "token_depth_histogram",
    "token_depth_strip",
    "noise_floor",
    "skip_matrix_frame",
    "skip_chart",
    "CURVES",
    "probe_curve_frame",
    "CURVE_NAMES",
    "probe_curve",
    "lens_topk_frame",
    "lens_topk_chart",
    "shared_domain",
    "compare_curves",
    "delta_heatmap",
    "GROUP_COLOURS",
    "PROBE_COLOURS",
    "PROBE_ORDER",
    "RULE_NAMES",
    "EFFECT_NAMES",
    "EFFECT_COLOURS",
    "GROUP_CURVE_HEIGHT",
    "ROW_HEIGHT",
    "ROW_STRIP",
    "group_colours",
    "ed_legend_labels",
    "group_curves",
    "edr_ci_chart",
    "depth_score_bars",
    "effect_profiles",
    "item_ed_strip",
    "selected_item",
    "EXPORT_WIDTH",
    "chart_png",
    "chart_svg",
]
