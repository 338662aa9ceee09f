"""Drawing: the summary strip, charts (memoised specs, selections) and their downloads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import streamlit as st

try:  # Streamlit's own Altair → Vega-Lite conversion (Arrow datasets); private, so optional
    from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec as _to_vega_lite
except ImportError:  # pragma: no cover - another Streamlit: st.altair_chart converts on every rerun
    _to_vega_lite = None

from effdepth import app, charts
from effdepth.memo import Memo


def summary_strip(items: Sequence[tuple[str, str, str | None, str]], per_row: int = 6) -> None:
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (label, value, delta, help_text) in zip(cols, items[start:start + per_row]):
            col.metric(label, value, delta=delta, delta_color="off", delta_arrow="off",
                       help=app.md(help_text) if help_text else None)  # help quotes model-supplied tokens


def downloads(chart, name: str, key: str) -> None:
    """PNG and SVG download buttons under a chart (rendered lazily by vl-convert on click)."""
    base = app.safe_name(name)
    row = st.container(horizontal=True, gap="small")
    row.download_button("PNG", data=lambda: charts.chart_png(chart), file_name=f"{base}.png", mime="image/png",
                         key=f"png_{key}", on_click="ignore", icon=":material/download:", type="tertiary")
    row.download_button("SVG", data=lambda: charts.chart_svg(chart), file_name=f"{base}.svg",
                          mime="image/svg+xml", key=f"svg_{key}", on_click="ignore", icon=":material/download:",
                          type="tertiary")


_SPECS = Memo(size=128)  # id(chart) -> (chart, spec): holding the chart keeps its id unique


def _vega_lite_spec(chart_obj) -> dict | None:
    """The chart's Vega-Lite spec, converted once per chart object.

    Converting (Altair's schema validation) is over half of a cached view's script time, and the
    pages reuse memoised chart objects (app.memo_chart), so a rerun sends the stored spec.
    """
    if _to_vega_lite is None:
        return None
    _, spec = _SPECS.get(id(chart_obj), lambda: (chart_obj, _to_vega_lite(chart_obj)))
    return copy.deepcopy(spec)  # Streamlit moves the datasets out of the spec it is given


def preview(chart_obj) -> None:
    """A chart of a run still in progress: at container width, no selection, no downloads (no widgets, so it
    can be drawn again as the run goes on)."""
    st.altair_chart(chart_obj, width="stretch")


def chart(chart_obj, name: str, key: str, on_select: str | Callable | None = None, download: bool = True):
    """The chart at container width + its downloads; returns the selection state if selectable."""
    spec = _vega_lite_spec(chart_obj)
    select = dict(on_select=on_select, selection_mode=["cell"]) if on_select else {}
    if spec is None:
        event = st.altair_chart(chart_obj, width="stretch", key=key, **select)
    else:
        event = st.vega_lite_chart(spec=spec, width="stretch", key=key, **select)
    if download:
        downloads(chart_obj, name, key)
    return event
