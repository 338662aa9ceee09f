"""Measured positions: which positions of a text the per-position probes read (docs/SPEC.md §14).

The forward pass always covers the whole text (every position sees its full context); the per-position
probes (contributions and cosines, the logit lens and its top-k, residual erasure's columns) and the
per-layer means read only the measured positions, so their cost is in proportion to them. Forms:

- ``all``: every position (the papers);
- ``last:N``: the last N positions;
- ``A:B``: positions A … B-1 (a segment of a long trace, re-run on its own);
- ``from:A``: positions A … T-1;
- ``stride:K``: positions 0, K, 2K, …;
- ``answer``: the answer span at the end of the text (a benchmark item's gold answer, or ``--answer``).
"""

from __future__ import annotations

import re

from effdepth.errors import PromptError

ALL = "all"
#: the largest text position a URL may name (no model reads more than a million tokens); clamped to a run's T
MAX_POSITION = (1 << 20) - 1
FORMS = "all, last:N, A:B, from:A, stride:K or answer"
_FORM = re.compile(r"^(all|answer|last:(\d+)|from:(\d+)|stride:(\d+)|(\d+):(\d+))$")


def check(spec: str | None) -> str:
    """The spec, normalised (PromptError when it is not one of the forms)."""
    text = (spec or ALL).strip().lower().replace(" ", "")
    found = _FORM.match(text)
    if found is None:
        raise PromptError(f"Measured positions {spec!r} are not one of {FORMS}.")
    if found.group(5) is not None:  # A:B
        first, stop = int(found.group(5)), int(found.group(6))
        if stop <= first:
            raise PromptError(f"Measured positions {spec!r} are an empty range: A:B means positions A … B−1, "
                              "so B must be larger than A.")
        return f"{first}:{stop}"
    number = next((int(g) for g in found.groups()[1:4] if g is not None), None)
    if number is not None and number < 1 and not text.startswith("from:"):
        raise PromptError(f"Measured positions {spec!r}: N and K must be at least 1.")
    return text


def span(spec: str) -> tuple[int, int] | None:
    """(A, B) of a range ``A:B`` (None for the other forms)."""
    kind, _, value = check(spec).partition(":")
    return (int(kind), int(value)) if kind.isdigit() else None


def select(spec: str, n_tokens: int, answer_len: int | None = None) -> list[int]:
    """The measured positions of a ``n_tokens``-token text, ascending (PromptError when none is left)."""
    spec = check(spec)
    kind, _, value = spec.partition(":")
    if kind.isdigit():
        first, stop = int(kind), int(value)
        if stop > n_tokens:
            raise PromptError(f"Measured positions {spec} reach past this {n_tokens:,}-token text (positions 0 … "
                              f"{n_tokens - 1}); use a range inside it, e.g. {min(first, n_tokens - 1)}:{n_tokens}.")
        chosen = list(range(first, stop))
    elif kind == "all":
        chosen = list(range(n_tokens))
    elif kind == "last":
        chosen = list(range(max(0, n_tokens - int(value)), n_tokens))
    elif kind == "from":
        chosen = list(range(int(value), n_tokens))
    elif kind == "stride":
        chosen = list(range(0, n_tokens, int(value)))
    else:
        if answer_len is None:
            raise PromptError("Measured positions 'answer' need an answer span (a benchmark item or --answer).")
        chosen = list(range(n_tokens - answer_len, n_tokens))
    if not chosen:
        raise PromptError(f"Measured positions {spec!r} leave no position of this {n_tokens}-token text.")
    return chosen


def describe(spec: str, measured: list[int], n_tokens: int) -> str:
    """"last:256: 256 of 1,946 positions (1690 … 1945)" — what the summary and the CLI say."""
    if check(spec) == ALL:
        return f"all {n_tokens} positions"
    return f"{spec}: {len(measured)} of {n_tokens:,} positions ({measured[0]} … {measured[-1]})"
