"""Charts as files: PNG and SVG rendered from their Vega-Lite specs (vl-convert), at one export width."""

from __future__ import annotations

from effdepth.charts.style import with_width

EXPORT_WIDTH = 1000


def chart_png(chart, width: int = EXPORT_WIDTH, scale: float = 2) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(with_width(chart, width), scale=scale)


def chart_svg(chart, width: int = EXPORT_WIDTH) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(with_width(chart, width))


#: spec keys that are font sizes (in marks, axes, legends, titles)
_FONT_KEYS = ("fontSize", "labelFontSize", "titleFontSize")


def projector_spec(chart, scale: float = 1.5) -> dict:
    """The chart's Vega-Lite spec for a room: every font size and every fixed height ``scale`` times larger,
    and axis / legend / title fonts set where the chart left them at Vega's defaults (the presenter view)."""
    spec = chart.to_dict()

    def grow(node, key: str | None = None):
        if isinstance(node, dict):
            return {k: grow(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [grow(v, key) for v in node]
        if (key in _FONT_KEYS or key == "height") and isinstance(node, (int, float)) and not isinstance(node, bool):
            return node * scale
        return node

    spec = grow(spec)
    config = spec.setdefault("config", {})
    for part, sizes in (("axis", {"labelFontSize": 11 * scale, "titleFontSize": 12 * scale}),
                        ("legend", {"labelFontSize": 11 * scale, "titleFontSize": 12 * scale}),
                        ("title", {"fontSize": 13 * scale}), ("text", {"fontSize": 11 * scale})):
        config[part] = sizes | config.get(part, {})
    return spec
