"""User-supplied text made safe for Streamlit markdown: shown as text, never rendered or linked."""

from __future__ import annotations

import re
import string


def md(text) -> str:
    """``text`` for a Streamlit markdown slot, shown as typed: never a link, an image or formatting.

    Every ASCII punctuation mark is backslash-escaped (``[x](…)``, ``![i](…)``, ``**``, ``:red[…]``).
    Streamlit's markdown also turns bare ``http://…``, ``www.…`` and e-mail addresses into links *after*
    escapes are read (GFM autolink literals), so an invisible word joiner (U+2060) goes where those
    patterns start: between ``:`` and ``/``, after ``www`` before ``.``, before ``@``.
    """
    text = _MD_AUTOLINK_WWW.sub("\\1" + _WORD_JOINER, str(text))
    text = text.replace(":/", ":" + _WORD_JOINER + "/").replace("@", _WORD_JOINER + "@")
    return "".join("\\" + ch if ch in _MD_PUNCTUATION else ch for ch in text)


_MD_PUNCTUATION = frozenset(string.punctuation)


_MD_AUTOLINK_WWW = re.compile(r"(www)(?=\.)", re.IGNORECASE)


_WORD_JOINER = "\u2060"


def _one_line(text, limit: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ↵ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))
    return keep.strip("_")[:60] or "chart"
