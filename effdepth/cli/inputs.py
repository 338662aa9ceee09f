"""Reading a command's inputs: the text (argument, file or stdin, strict UTF-8), a benchmark item, its
answer span, number and name lists, and the cache file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effdepth.errors import PromptError


def _item(args):
    """The benchmark item of ``--item DATASET:INDEX``, or None."""
    if not getattr(args, "item", None):
        return None
    from effdepth import datasets

    name, _, index = args.item.partition(":")
    if not index.strip().lstrip("-").isdigit():
        raise PromptError(f"--item takes DATASET:INDEX, e.g. gsm8k:0, not {args.item!r}.")
    return datasets.get_item(name.strip(), int(index))


def _answer(args, text: str) -> str | None:
    """The answer span for erasure / IG: --answer, else the item's gold answer, else the last word."""
    from effdepth import engine

    if not any(p in args.probes for p in engine.ANSWER_PROBES):
        return None
    item = _item(args) if not getattr(args, "answer", None) else None
    return engine.answer_span(getattr(args, "answer", None), item.answer if item is not None else None, text)


def _read_text(args) -> str:
    if args.text is not None:
        return args.text
    item = _item(args)
    if item is not None:
        return item.text
    if args.text_file == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        if isinstance(data, str):
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(f"The text on standard input is not UTF-8 ({exc.reason} at byte {exc.start}).") from exc
    path = Path(args.text_file).expanduser()
    if not path.is_file():
        raise PromptError(f"The text file {path} does not exist (or is not a file).")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"The text file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise PromptError(f"The text file {path} cannot be read ({exc.strerror or exc}).") from exc


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one split point")
    return values


def _segment_size(text: str) -> int:
    """--segments N: a whole number of positions, at least 2 (an ED of one position has no interval)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of positions like 256, not {text!r}") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"a segment needs at least 2 positions, not {value}")
    return value


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.replace(" ", "").split(",") if part)


def _store(args):
    from effdepth.store import Store

    return Store(args.cache)
