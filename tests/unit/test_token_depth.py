"""Per-token depth over a sweep (issue 12 §3): the token classes, the mean per bin and class with its
bootstrap interval, the answer span each item's run records, and the CLI's table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from effdepth import cli
from effdepth.store import Store
from effdepth.sweeps import token_depth
from tests.app_support import build_tiny_dir
from tests.unit.test_cli_sweep import LONG


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_dir(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.mark.parametrize("token, kind", [(" 42", "digits"), ("x2", "digits"), (" Paris", "words"),
                                         ("ing", "words"), (" ", "other"), (".", "other"), ("<s>", "other"),
                                         ("<|im_end|>", "other"), ("<b", "words")])
def test_token_kinds(token, kind):
    assert token_depth.token_kind(token) == kind


def _lens_ranks(ranks: list[list[int]]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": "rank", "layer": layer, "pos": pos, "value": float(r)}
                         for pos, row in enumerate(ranks) for layer, r in enumerate(row)])


def test_an_items_tokens_by_part_and_kind():
    tokens = pd.DataFrame({"pos": [0, 1, 2, 3], "token": ["Q", ":", " 4", " 2"]})
    ranks = _lens_ranks([[2, 2], [1, 1], [3, 1], [2, 2]])  # depths 2, 0, 1, 2 (L = 2)
    rows = token_depth.item_rows("r", {"n_layers": 2, "n_tokens": 4, "answer_tokens": 2, "bin": "b"}, ranks, tokens)
    assert rows["depth"].tolist() == [2, 0, 1, 2]
    assert rows["part"].tolist() == ["question", "answer", "answer", "question"]  # positions 1, 2 predict it
    assert rows["kind"].tolist() == ["words", "other", "digits", "digits"]
    no_answer = token_depth.item_rows("r", {"n_layers": 2, "n_tokens": 4}, ranks, tokens)
    assert no_answer["part"].isna().all()
    assert token_depth.item_rows("r", {"n_layers": 2, "n_tokens": 4}, ranks[ranks.metric == "kl"], tokens).empty


def test_the_mean_per_class_weights_tokens_and_resamples_items():
    rows = pd.DataFrame({"run_id": ["a", "a", "a", "b"], "bin": "x", "pos": [0, 1, 2, 0], "depth": [1, 3, 5, 9],
                         "part": ["question", "answer", "answer", "answer"],
                         "kind": ["words", "digits", "digits", "words"]})
    table = token_depth.by_class(rows, n_boot=200).set_index("class")
    assert table.loc["answer", "mean"] == pytest.approx((3 + 5 + 9) / 3)  # token-weighted
    assert table.loc["answer", "n_items"] == 2 and table.loc["answer", "n_tokens"] == 3
    assert table.loc["answer", "lo"] <= table.loc["answer", "mean"] <= table.loc["answer", "hi"]
    assert table.loc["question", "mean"] == 1 and np.isnan(table.loc["question", "lo"])  # one item: no interval
    assert table.loc["words", "mean"] == pytest.approx(5.0) and table.loc["digits", "mean"] == pytest.approx(4.0)
    assert "other" not in table.index


def test_a_sweep_records_the_answer_span_and_prints_the_classes(tiny, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": t, "answer": " Yes.", "bin": "b"}) + "\n" for t in LONG))
    cache = tmp_path / "c.duckdb"
    doc_path = tmp_path / "sweep.json"
    assert cli.main(["sweep", "--model", tiny, "--jsonl", str(items), "--probes", "cosine,logit_lens,skip",
                     "--n-boot", "10", "--cache", str(cache), "-q", "--json", str(doc_path)]) == 0
    out = capsys.readouterr().out
    assert "commitment depth per token" in out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("b ")]
    assert {parts[1] for parts in lines} >= {"answer", "question"}
    store = Store(cache)
    metas = [store.meta(r) for r in store.runs()["run_id"]]
    assert all(m["answer"] == " Yes." and m["answer_tokens"] >= 1 for m in metas)
    rows = token_depth.sweep_rows(store, list(store.runs()["run_id"]))
    answer = rows[rows["part"] == "answer"].groupby("run_id").size()
    assert sorted(answer.to_dict().values()) == sorted(m["answer_tokens"] for m in metas)

    doc = json.loads(doc_path.read_text())  # the aggregate per bin
    assert doc["n_items"] == 2 and [b["bin"] for b in doc["bins"]] == ["b"]
    (only,) = doc["bins"]
    assert only["n_items"] == 2
    assert {(e["probe"], e["rule"]) for e in only["ed"]} >= {("cosine", "p1"), ("kl", "p1"), ("overlap", "p1")}
    assert all(e["edr"] is None or 0 < e["edr"] <= 1 for e in only["ed"])
    assert {(d["effect"], d["reduce"]) for d in only["depth_score"]} == {
        ("layer", "max"), ("layer", "mean"), ("logit", "max"), ("logit", "mean")}
    assert {c["class"] for c in only["token_depth"]} >= {"answer", "question"}
    classes = token_depth.by_class(rows, n_boot=10).set_index("class")
    for entry in only["token_depth"]:
        assert entry["mean"] == pytest.approx(classes.loc[entry["class"], "mean"])
