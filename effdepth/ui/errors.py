"""The error boundary: a user-facing error is shown as text in the page and loses nothing; the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from effdepth import app
from effdepth.errors import CacheError, EffdepthError
from effdepth.ui.state import STATE


def show_error(err: BaseException) -> None:
    """The one place where user-facing errors are shown (never a traceback; the message may quote the
    user's input, so it is shown as text, not markdown)."""
    st.error(app.md(str(err)), icon=":material/error:")
    view = st.session_state.get(STATE)
    if isinstance(err, CacheError) and app.error_kind(err) == "corrupt" and not (view and view.demo):
        if st.button("Move the broken cache aside", key=f"move_aside_{abs(hash(str(err))) % 10**8}",
                     type="primary"):
            try:
                moved = _move_aside()
                st.success(app.md(f"Moved the broken cache to {moved}. A fresh, empty cache is used from now on.")
                           if moved else "Moved the broken cache aside; a fresh, empty cache is used from now on.")
            except EffdepthError as again:
                st.error(app.md(str(again)))


def _move_aside():
    return app.open_store().move_aside()


@contextmanager
def guard() -> Iterator[None]:
    """Show an EffdepthError raised inside the block with st.error and carry on with the page."""
    try:
        yield
    except EffdepthError as err:
        show_error(err)


def store():
    """The result store, or None after showing why it cannot be opened."""
    try:
        return app.open_store()
    except EffdepthError as err:
        show_error(err)
        return None
