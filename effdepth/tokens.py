"""Readable labels of single tokens (heatmap axes, logit-lens top-k tables).

A token decoded on its own can be a fragment of a UTF-8 character (an emoji or a Hebrew letter split
over byte-level BPE tokens); ``tokenizer.decode`` then shows U+FFFD. Such a token is labelled with its
bytes instead: the valid part as text, the fragment as ``\\xNN`` escapes. Kept free of effdepth imports
so that the engine and the probes can both use it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

__all__ = ["token_label", "token_labels", "token_bytes"]

_REPLACEMENT = "\ufffd"
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode`` (byte-level BPE maps each byte to a printable char).

    Built here because transformers 5 no longer exports the table from its GPT-2 tokenizer module.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes of one token, or None when its vocabulary string is neither byte-level BPE nor a
    SentencePiece byte-fallback piece such as ``<0xF0>``."""
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:  # noqa: BLE001 - an id the tokenizer does not know
        return None
    if not isinstance(piece, str) or not piece:
        return None
    match = _BYTE_FALLBACK.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    table = _unicode_to_byte()
    if all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    return None


def token_label(tokenizer, token_id: int) -> str:
    """One token decoded on its own; a UTF-8 fragment shows its bytes (``\\xf0\\x9f``) instead of U+FFFD."""
    text = tokenizer.decode([int(token_id)])
    if _REPLACEMENT not in text:
        return text
    raw = token_bytes(tokenizer, token_id)
    if raw is not None:
        return raw.decode("utf-8", errors="backslashreplace")
    try:
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
    except Exception:  # noqa: BLE001
        piece = None
    return piece if isinstance(piece, str) and piece else text


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """:func:`token_label` of each id, in order."""
    return [token_label(tokenizer, i) for i in ids]
