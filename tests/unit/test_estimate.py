"""Cost estimates before slow work (issue 11 §2, §6): weight FLOPs per probe, counted by hand on a tiny
shape, in proportion to the measured positions, and said by the CLI and the page before a run starts."""

from __future__ import annotations

import pytest

from effdepth import cli, estimate
from tests.unit.test_store import TEXT


def test_the_counts_by_hand():
    shape = estimate.Shape(n_layers=2, d_model=4, vocab=10, n_tokens=8, layer_weights=100)
    assert estimate.flops(shape, "forward") == 8 * (2 * 200 + 80)
    assert estimate.flops(shape, "logit_lens") == 2 * 8 * 80
    assert estimate.flops(shape, "cosine") == 0
    # L(L+1)/2 = 3 start layers, 8 erased positions, each replayed to the end (4 positions on average),
    # 3 depths x 8 positions x 1 answer position decoded
    assert estimate.flops(shape, "erasure") == 3 * 8 * 4 * 200 + 3 * 8 * 1 * 80
    assert estimate.flops(shape, "igrad", ig_steps=4) == 3 * 4 * 3 * 8 * 200
    with pytest.raises(ValueError):
        estimate.flops(shape, "unknown")


def test_a_window_costs_in_proportion():
    full = estimate.Shape(30, 576, 49152, 4096)
    window = estimate.Shape(30, 576, 49152, 4096, measured=256)
    assert estimate.flops(window, "logit_lens") == estimate.flops(full, "logit_lens") * 256 / 4096
    assert estimate.flops(window, "forward") == estimate.flops(full, "forward")  # the forward covers the text
    tail = estimate.Shape(30, 576, 49152, 4096, measured=256, first_measured=4096 - 256)
    assert estimate.flops(tail, "skip") < estimate.flops(full, "skip") / 2  # splits and decode in the window


def test_the_description_names_the_rate():
    text = estimate.describe(estimate.Shape(30, 576, 49152, 176), ("cosine", "logit_lens", "erasure"))
    assert text.startswith("logit_lens ~") and "erasure ~" in text and text.endswith("at 100 GFLOP/s")
    assert "cosine" not in text


def test_the_cli_says_the_cost_of_erasure_before_it_starts(word_model_dir, tmp_path, capsys):
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--probes", "erasure",
                     "--answer", "w19", "--cache", str(tmp_path / "c.duckdb")]) == 0
    err = capsys.readouterr().err
    assert "estimate  erasure ~" in err and "GFLOP/s" in err
