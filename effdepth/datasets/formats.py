"""Benchmark items and the prompt formats of the papers (docs/SPEC.md §2): GSM8K and AIME with P1's
instruction, P1's arithmetic, P2's manual prompts.

``str.format`` only interprets braces in the template itself, so a question or answer containing
braces is inserted verbatim.
"""

from __future__ import annotations

import functools
import operator
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from effdepth.errors import PromptError

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
