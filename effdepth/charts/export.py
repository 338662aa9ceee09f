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
