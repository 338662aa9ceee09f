"""A user's own items from a JSONL file: every line checked, each problem said in a sentence.

A malformed line (bad JSON, missing key, wrong type) rejects the whole file; an item whose text is
unusable (invalid UTF-8 bytes, a lone surrogate, an empty prompt) is skipped and reported
(``JsonlItems.skipped``), so one bad item does not stop a sweep.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from effdepth.datasets.formats import Item
from effdepth.errors import PromptError

_PROMPT_KEYS = ("prompt", "question")


_MAX_REPORTED_ERRORS = 3


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, str):
        return "a string"
    return type(v).__name__


def _check_record(rec: Any) -> tuple[str, str, str | None, dict[str, Any]] | str:
    """Returns (prompt, answer, bin, extra) or an error description."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {_type_name(rec)}"
    present = [k for k in _PROMPT_KEYS if k in rec]
    if len(present) == 2:
        return 'has both "prompt" and "question"; use one of them'
    if not present:
        missing = ['"prompt" (or "question")'] + (['"answer"'] if "answer" not in rec else [])
        return "missing " + " and ".join(missing)
    pkey = present[0]
    if "answer" not in rec:
        return 'missing "answer"'
    prompt, answer = rec[pkey], rec["answer"]
    if not isinstance(prompt, str):
        return f'"{pkey}" must be a string, got {_type_name(prompt)}'
    if not isinstance(answer, str):
        hint = ' (write numbers in quotes: "answer": "42")' if _type_name(answer) == "a number" else ""
        return f'"answer" must be a string, got {_type_name(answer)}{hint}'
    bin_ = rec.get("bin")
    if bin_ is not None and not isinstance(bin_, str):
        return f'"bin" must be a string, got {_type_name(bin_)}'
    if bin_ is not None and not bin_.strip():
        return '"bin" is empty (leave it out to use the dataset name)'
    extra = {k: v for k, v in rec.items() if k not in (pkey, "answer", "bin")}
    return prompt, answer, (bin_.strip() if bin_ is not None else None), extra


def _too_big(label: str, size: int, max_bytes: int) -> str:
    return f"{label} is {size:,} bytes; the limit is {max_bytes:,} bytes. Split it into smaller files."


class BadItem(NamedTuple):
    """One JSONL item left out: its 1-based line, the item number it would have had, and why."""

    line: int
    index: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}; skipped"


class JsonlItems(NamedTuple):
    """What ``load_jsonl`` read: the usable items and the skipped ones, both in file order."""

    items: list[Item]
    skipped: list[BadItem]


def _unencodable(value: str) -> str | None:
    """Why ``value`` cannot be written as UTF-8 (a lone surrogate from a JSON escape), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        char = e.object[e.start]
        if 0xD800 <= ord(char) <= 0xDFFF:
            return f"a lone surrogate (\\u{ord(char):04x}) that is not valid Unicode"
        return f"a character that cannot be encoded as UTF-8 ({e.reason})"
    return None


def _text_problem(pkey: str, prompt: str, answer: str, bin_: str | None) -> str | None:
    """Why an item with a well-formed record still cannot be probed, or None."""
    if not prompt.strip():
        return f'"{pkey}" is empty'
    problem = _unencodable(prompt + answer)
    if problem:
        return f"the text contains {problem}"
    problem = _unencodable(bin_) if bin_ is not None else None
    if problem:
        return f'"bin" contains {problem}'
    return None


def load_jsonl(path_or_bytes: str | os.PathLike | bytes | bytearray, name: str = "custom",  # noqa: C901 - one pass over the lines, each check a sentence for the user
               max_bytes: int = 5_000_000, max_items: int = 10_000) -> JsonlItems:
    """Parse user JSONL into Items -> ``JsonlItems(items, skipped)``.

    Each non-blank line is an object ``{"prompt": str, "answer": str}`` or
    ``{"question": str, "answer": str}`` with an optional ``"bin": str`` (default: ``name``). Other
    keys are kept in ``meta["extra"]``. ``text = prompt + answer`` verbatim (nothing is inserted
    between them). Blank lines are skipped; a UTF-8 BOM is tolerated; lines are split on ``"\\n"``
    only (``"\\r\\n"`` works), so U+2028 inside JSON strings is safe.

    Every line is validated before anything is returned. A malformed line (bad JSON, not an object,
    missing key, non-string value) means a wrong format, so it rejects the file: PromptError naming the
    1-based line number(s) and the problem. An item that is well formed but unusable — invalid UTF-8
    bytes, a lone surrogate such as ``"\\ud800"`` (``str.encode`` would fail on it later), an empty
    prompt — is left out and listed in ``skipped`` (line, item number, reason), so the other items can
    still run. PromptError too for input over ``max_bytes`` bytes or ``max_items`` items and for input
    with no usable item. ``Item.index`` is the 0-based number of the item's line among the non-blank
    lines (a skipped line keeps its number, so fixing it later does not renumber the others);
    ``meta["line"]`` is the line number.
    """
    if not isinstance(name, str) or not name.strip():
        raise PromptError("The dataset name must be a non-empty string.")
    name = name.strip()
    if _unencodable(name):
        raise PromptError(f"The dataset name {name!r} contains {_unencodable(name)}; rename the file.")
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        label = name
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        path = Path(path_or_bytes)
        label = path.name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise PromptError(_too_big(label, size, max_bytes))
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as e:
            raise PromptError(f"Cannot read {path}: {e.strerror or e}.") from e
    else:
        raise TypeError(f"load_jsonl expects a path or bytes, got {type(path_or_bytes).__name__}")

    if len(data) > max_bytes:
        raise PromptError(_too_big(label, len(data), max_bytes))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]

    # Decoded line by line ("\n" never occurs inside a UTF-8 sequence), so one bad byte costs one item.
    lines: list[tuple[int, str | None, str | None]] = []  # (line number, text, decoding problem)
    for no, raw in enumerate(data.split(b"\n"), 1):
        try:
            ln = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            lines.append((no, None, f"the line is not valid UTF-8 text (byte 0x{raw[e.start]:02x} at "
                                    f"position {e.start + 1})"))
            continue
        if ln.strip():
            lines.append((no, ln, None))
    if len(lines) > max_items:
        raise PromptError(
            f"{label} has {len(lines):,} items; the limit is {max_items:,} items. Split it into smaller files."
        )
    if not lines:
        raise PromptError(
            f'{label} contains no items. Expected one JSON object per line, e.g. {{"prompt": "…", "answer": "…"}}.'
        )

    errors: list[str] = []
    skipped: list[BadItem] = []
    out: list[Item] = []
    for index, (no, ln, undecodable) in enumerate(lines):
        if undecodable:
            skipped.append(BadItem(no, index, undecodable))
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            errors.append(f"line {no}: invalid JSON ({e.msg} at column {e.colno})")
            continue
        res = _check_record(rec)
        if isinstance(res, str):
            errors.append(f"line {no}: {res}")
            continue
        prompt, answer, bin_, extra = res
        problem = _text_problem(next(k for k in _PROMPT_KEYS if k in rec), prompt, answer, bin_)
        if problem:
            skipped.append(BadItem(no, index, problem))
            continue
        meta: dict[str, Any] = {"line": no}
        if extra:
            meta["extra"] = extra
        out.append(Item(dataset=name, index=index, prompt=prompt, answer=answer, bin=bin_ or name, meta=meta))
    if errors:
        shown = "; ".join(errors[:_MAX_REPORTED_ERRORS])
        more = len(errors) - _MAX_REPORTED_ERRORS
        suffix = f"; and {more} more malformed line{'s' if more > 1 else ''}" if more > 0 else ""
        raise PromptError(
            f"{label}: {shown}{suffix}. Nothing was imported; fix the line(s) and load it again."
        )
    if not out:
        shown = "; ".join(f"line {b.line}: {b.reason}" for b in skipped[:_MAX_REPORTED_ERRORS])
        more = len(skipped) - _MAX_REPORTED_ERRORS
        suffix = f"; and {more} more" if more > 0 else ""
        raise PromptError(f"{label} has no usable item: {shown}{suffix}. Fix the line(s) and load it again.")
    return JsonlItems(out, skipped)
