"""The plain text effdepth ships for fitting linear maps (docs/SPEC.md §15): documents of varied prose,
code and numbers in ``datasets/corpus/``, written for the project, split by document into a fit part and
a held-out part.

Every fifth document (the 5th, 10th, …) is held out, so that no sentence of the held-out part was seen
in the fit. ``corpus_id`` names the text (a hash of every document), so that a fit on other text never
reads as this one.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
HELD_OUT_EVERY = 5  # documents 5, 10, 15, … (1-based) are held out


@dataclass(frozen=True)
class Document:
    """One document of the corpus: its file name, its text and its part (fit or held out)."""

    name: str
    text: str
    held_out: bool


@functools.lru_cache(maxsize=1)
def documents() -> tuple[Document, ...]:
    """Every document, in file-name order."""
    paths = sorted(CORPUS_DIR.glob("*.txt"))
    if not paths:
        raise FileNotFoundError(f"the shipped corpus is missing: no .txt file in {CORPUS_DIR}")
    return tuple(Document(name=p.stem, text=p.read_text(encoding="utf-8").strip() + "\n",
                          held_out=(index + 1) % HELD_OUT_EVERY == 0) for index, p in enumerate(paths))


def estimated_tokens(held_out: bool | None = None) -> int:
    """The corpus's size in tokens, estimated from its characters (no tokenizer at hand): the whole corpus,
    or its fit (``held_out=False``) or held-out part."""
    from effdepth.estimate import CHARS_PER_TOKEN

    docs = documents() if held_out is None else part(held_out)
    return round(sum(len(doc.text) for doc in docs) / CHARS_PER_TOKEN)


def part(held_out: bool) -> tuple[Document, ...]:
    """The fit part (``held_out=False``) or the held-out part."""
    return tuple(doc for doc in documents() if doc.held_out == held_out)


@functools.lru_cache(maxsize=1)
def corpus_id() -> str:
    """A short name of this text: ``corpus-<12 hex>`` over every document's name, part and text."""
    digest = hashlib.sha256()
    for doc in documents():
        digest.update(f"{doc.name}\0{int(doc.held_out)}\0{doc.text}\0".encode())
    return f"corpus-{digest.hexdigest()[:12]}"
