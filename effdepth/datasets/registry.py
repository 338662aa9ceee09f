"""Datasets by name: each name gives a description, a source, its records and how to make item i; and
the token-length filter the papers apply (<= 400 tokens for AIME).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from effdepth.datasets.formats import (
    _OPS,
    ARITHMETIC_DIGITS,
    ARITHMETIC_SEED,
    ARITHMETIC_SIZE,
    MANUAL_PROMPTS,
    DatasetInfo,
    Item,
    _arith_item,
    _arith_operands,
    aime_item,
    gsm8k_item,
)
from effdepth.datasets.hops import HOPS_SEED, MAX_HOPS, PER_BIN, hop_records, hops_item
from effdepth.datasets.packaged import _DIST, _GSM8K_FILE, _PKG, _aime_records, _dist_version, _gsm8k_records
from effdepth.errors import PromptError


@dataclass(frozen=True)
class _Spec:
    description: str
    source: Callable[[], str]
    records: Callable[[], Sequence[Any]]
    make: Callable[[int, Any], Item]


_REGISTRY: dict[str, _Spec] = {
    "gsm8k": _Spec(
        description=(
            "GSM8K test split, all 1,319 items in file order. P1's LM-eval-harness-style prompt, "
            "teacher-forced on the gold rationale (calculator annotations <<…>> kept) followed by "
            "'The final answer is N'. Easy end of the difficulty axis."
        ),
        source=lambda: f"{_DIST} {_dist_version()}: {_PKG}/data/{_GSM8K_FILE} (= openai/gsm8k main, test)",
        records=_gsm8k_records,
        make=lambda i, r: gsm8k_item(r[0], r[1], index=i),
    ),
    "aime2025": _Spec(
        description=(
            "AIME 2025 I then II, 30 problems. P1's AIME24 prompt format, but this data has NO worked "
            "solutions, only final answers: the teacher-forced part is just \\boxed{answer} (P1 used "
            "AIME 2024 with full solutions). P1's <=400-token filter: filter_by_tokens(). "
            "Hard end of the difficulty axis."
        ),
        source=lambda: (
            f"{_DIST} {_dist_version()}: {_PKG}/data/AIME2025/aime2025-I.jsonl + aime2025-II.jsonl"
        ),
        records=_aime_records,
        make=lambda i, r: aime_item(r[0], r[1], index=i, part=r[2], problem=r[3]),
    ),
    "manual": _Spec(
        description=(
            "P2's two fixed prompts for residual erasure and integrated gradients: "
            "'5 + 7 + 5 + 3 + 1 + 7 = ' -> '28' and 'The spouse of the performer of Imagine is' -> ' Yoko Ono'."
        ),
        source=lambda: "built in (P2 analysis/analyze_token_skip.py)",
        records=lambda: MANUAL_PROMPTS,
        make=lambda i, r: Item(dataset="manual", index=i, prompt=r[1], answer=r[2], bin="manual",
                               meta={"name": r[0]}),
    ),
}


_REGISTRY["hops"] = _Spec(
    description=(
        f"Chains of letter bindings ('A = 7. K = A. …') beside a distractor chain, asking for the chain's last "
        f"letter: 1 to {MAX_HOPS} composition steps, {PER_BIN} items per hop count, bin = hop count. The digit "
        "answer is teacher-forced after the question. A hop-count axis for P2's multi-hop question, built "
        "offline (no multi-hop data installs)."
    ),
    source=lambda: f"generated (effdepth.datasets.hops, random.Random({HOPS_SEED}))",
    records=hop_records,
    make=hops_item,
)


for _op, (_sym, _fn) in _OPS.items():
    _REGISTRY[_op] = _Spec(
        description=(
            f"P1's synthetic {_op} task: 'Give the answer directly: a {_sym} b = ' -> the exact result, "
            f"{ARITHMETIC_DIGITS}-digit operands from random.Random({ARITHMETIC_SEED}) (a then b), "
            f"{ARITHMETIC_SIZE} items; item 0 is P1's single erasure/IG example."
        ),
        source=lambda: "generated (P1 dataset.py, seed 42)",
        records=functools.partial(_arith_operands, ARITHMETIC_SIZE, ARITHMETIC_DIGITS, ARITHMETIC_SEED),
        make=functools.partial(lambda op, i, r: _arith_item(op, i, r[0], r[1], ARITHMETIC_DIGITS), _op),
    )


del _op, _sym, _fn


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def _spec(dataset: str) -> tuple[str, _Spec]:
    name = dataset.strip().lower() if isinstance(dataset, str) else dataset
    if not isinstance(name, str) or name not in _REGISTRY:
        raise PromptError(f"Unknown dataset {dataset!r}. Known datasets: {', '.join(_REGISTRY)}.")
    return name, _REGISTRY[name]


def list_datasets() -> list[DatasetInfo]:
    """All built-in datasets. Raises PromptError if the benchmark data package is missing."""
    return [
        DatasetInfo(name=name, description=s.description, size=len(s.records()), source=s.source())
        for name, s in _REGISTRY.items()
    ]


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PromptError(f"{what} must be an integer (got {value!r}).")
    try:
        return operator.index(value)
    except TypeError:
        raise PromptError(f"{what} must be an integer (got {value!r}).") from None


def get_item(dataset: str, index: int) -> Item:
    """Item ``index`` (0-based) of a built-in dataset."""
    name, s = _spec(dataset)
    i = _as_int(index, "index")
    recs = s.records()
    if not 0 <= i < len(recs):
        raise PromptError(
            f"Index {i} is out of range for dataset {name!r}: valid indices are 0..{len(recs) - 1} "
            f"({len(recs):,} items)."
        )
    return s.make(i, recs[i])


def items(dataset: str, n: int | None = None, start: int = 0) -> list[Item]:
    """Items ``start .. start+n-1`` of a built-in dataset (all from ``start`` if ``n`` is None).

    Fewer than ``n`` items are returned if the dataset ends first.
    """
    name, s = _spec(dataset)
    start = _as_int(start, "start")
    recs = s.records()
    if not 0 <= start < len(recs):
        raise PromptError(
            f"Start {start} is out of range for dataset {name!r}: valid indices are 0..{len(recs) - 1} "
            f"({len(recs):,} items)."
        )
    if n is None:
        stop = len(recs)
    else:
        n = _as_int(n, "n")
        if n < 0:
            raise PromptError(f"n must be >= 0 (got {n}).")
        stop = min(len(recs), start + n)
    return [s.make(i, recs[i]) for i in range(start, stop)]


def _n_tokens(tokenizer: Any, text: str) -> int:
    enc = tokenizer(text, add_special_tokens=True)
    try:
        ids = enc["input_ids"]
    except (TypeError, KeyError):
        ids = enc.input_ids
    return len(ids)


#: P1's token limit on AIME items (prompt + answer), the default of every sweep of an AIME dataset
AIME_MAX_TOKENS = 400


def token_limit(dataset: str) -> int | None:
    """The token filter a sweep of ``dataset`` applies unless told otherwise: P1's 400 for AIME, else none."""
    return AIME_MAX_TOKENS if (dataset or "").startswith("aime") else None


def sweep_filter(items: Sequence[Item], tokenizer: Any, dataset: str | None, max_tokens: int | None = None,
                 context: int | None = None) -> tuple[list[Item], int, int | None]:
    """The one token filter of a sweep (the CLI, the Difficulty page, the API, ``effdepth demo``): at most
    ``max_tokens`` if given, else the dataset's own (``token_limit``: P1's 400 for AIME), and never past the
    model's ``context``. Returns (kept items, dropped count, the limit applied or None)."""
    limit = max_tokens if max_tokens is not None else token_limit(dataset or "")
    if context is not None:
        limit = min(int(limit), int(context)) if limit else int(context)
    if not limit:
        return list(items), 0, None
    kept, dropped = filter_by_tokens(items, tokenizer, limit)
    return kept, dropped, int(limit)


def filter_by_tokens(items: Sequence[Item], tokenizer: Any,
                     max_tokens: int = AIME_MAX_TOKENS) -> tuple[list[Item], int]:
    """Keep the items whose ``text`` (prompt + answer) is at most ``max_tokens`` tokens.

    Tokens are counted as ``len(tokenizer(text, add_special_tokens=True)["input_ids"])``, like P1's
    AIME24 filter (``len(tokenizer(res).input_ids) > 400`` drops; P1 used the Qwen2.5-1.5B-Instruct
    tokenizer). Returns ``(kept_items, n_dropped)``; order is preserved.
    """
    max_tokens = _as_int(max_tokens, "max_tokens")
    if max_tokens < 1:
        raise PromptError(f"max_tokens must be >= 1 (got {max_tokens}).")
    kept = [it for it in items if _n_tokens(tokenizer, it.text) <= max_tokens]
    return kept, len(items) - len(kept)
