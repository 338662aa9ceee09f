"""Streamlit glue shared by the pages: state <-> widgets <-> URL, the error boundary, the model
holder, the compute-with-progress call, summary strip and chart downloads.

Pages call these and ``effdepth.app`` / ``effdepth.charts``; nothing here touches a tensor.

The room: ``state`` (session state <-> URL, bound widgets, nav), ``inputs`` (model, prompt, item),
``errors`` (the error boundary), ``running`` (the held model, progress, Stop), ``render`` (charts,
downloads), ``sweep`` (the benchmark-item sections of Difficulty and Compare). Pages use the names
below from ``effdepth.ui``, and ``effdepth.ui.sweep`` for the benchmark-item sections.
"""

from effdepth.ui.errors import guard, show_error, store
from effdepth.ui.inputs import demo_toggle, item_picker, model_input, positions_input, prompt_input
from effdepth.ui.render import chart, downloads, preview, summary_strip
from effdepth.ui.running import compute, continue_and_compute, model_holder, stopped_notice
from effdepth.ui.state import (
    OTHER,
    PAGES,
    RUN_IN_FLIGHT,
    STATE,
    URL,
    bind,
    compare_defaults,
    nav,
    page_setup,
    set_view,
    state,
    sync_url,
)

__all__ = [
    "continue_and_compute",
    "preview",
    "compare_defaults",
    "STATE",
    "URL",
    "PAGES",
    "OTHER",
    "page_setup",
    "RUN_IN_FLIGHT",
    "state",
    "sync_url",
    "bind",
    "set_view",
    "nav",
    "model_input",
    "prompt_input",
    "item_picker",
    "positions_input",
    "demo_toggle",
    "show_error",
    "guard",
    "store",
    "model_holder",
    "stopped_notice",
    "compute",
    "summary_strip",
    "downloads",
    "chart",
]
