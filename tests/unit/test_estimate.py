"""Cost estimates before slow work (issue 11 §2, §6): weight FLOPs per probe, counted by hand on a tiny
shape, in proportion to the measured positions, and said by the CLI and the page before a run starts."""

from __future__ import annotations

import pytest

from effdepth import cli, estimate
from tests.unit.test_store import TEXT


def test_the_counts_by_hand():
    shape = estimate.Shape(n_layers=2, d_model=4, vocab=10, n_tokens=8, layer_weights=100)
    attention = 4 * 4  # FLOPs per (query, key) pair: 4 d
    # every position's weights and unembedding, and per layer 8 queries over 4 keys on average
    assert estimate.flops(shape, "forward") == 8 * (2 * 200 + 80) + 2 * attention * 8 * 4
    assert estimate.flops(shape, "logit_lens") == 2 * 8 * 80
    assert estimate.flops(shape, "cosine") == 0
    # L(L+1)/2 = 3 start layers, 8 erased positions, each replayed to the end (4 positions on average, each
    # attending to 4 keys on average), 3 depths x 8 positions x 1 answer position decoded
    assert estimate.flops(shape, "erasure") == 3 * 8 * 4 * (200 + attention * 4) + 3 * 8 * 1 * 80
    assert estimate.flops(shape, "igrad", ig_steps=4) == 3 * 4 * 3 * 8 * (200 + attention * 4)
    with pytest.raises(ValueError):
        estimate.flops(shape, "unknown")


def test_a_window_costs_in_proportion():
    full = estimate.Shape(30, 576, 49152, 4096)
    window = estimate.Shape(30, 576, 49152, 4096, measured=256)
    assert estimate.flops(window, "logit_lens") == estimate.flops(full, "logit_lens") * 256 / 4096
    assert estimate.flops(window, "forward") == estimate.flops(full, "forward")  # the forward covers the text
    tail = estimate.Shape(30, 576, 49152, 4096, measured=256, first_measured=4096 - 256)
    assert estimate.flops(tail, "skip") < estimate.flops(full, "skip") / 2  # splits and decode in the window


def test_the_description_names_the_measured_rate_and_the_memory():
    shape = estimate.Shape(30, 576, 49152, 176)
    text = estimate.describe(shape, ("cosine", "logit_lens", "erasure"))
    assert text.startswith("logit_lens ~") and "erasure ~" in text and text.endswith("(float32, measured here)")
    assert "cosine" not in text
    assert estimate.rate("float32") == estimate.rate("float32") > 1e8  # measured once per process
    with_memory = estimate.describe(shape, ("logit_lens",), dtype="bfloat16", memory=True)
    assert with_memory.startswith("forward pass ~") and "peak memory ~" in with_memory and "(bfloat16," in with_memory


def test_the_memory_of_a_long_text_is_bounded_by_its_window():
    """A window keeps the trace rows and logits of the window only: a 16k-token text on a 0.5B-sized model
    measured at last:256 needs a small part of what every position needs."""
    qwen = dict(n_layers=24, d_model=896, vocab=151936, n_tokens=16000, kv_dim=128, weight_bytes=int(0.99e9))
    every = estimate.peak_bytes(estimate.Shape(**qwen), ("cosine", "logit_lens", "skip"), "bfloat16")
    window = estimate.peak_bytes(estimate.Shape(**qwen, measured=256, first_measured=15744),
                                 ("cosine", "logit_lens", "skip"), "bfloat16")
    assert every > 10 * 2**30 and window < 2 * 0.99e9 + 2 * 2**30 and window > 0.99e9


def test_the_cli_says_the_cost_of_erasure_before_it_starts(word_model_dir, tmp_path, capsys):
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--probes", "erasure",
                     "--answer", "w19", "--cache", str(tmp_path / "c.duckdb")]) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "estimate  " in line)
    assert "erasure ~" in line and "GFLOP/s (float32, measured here)" in line and "peak memory ~" in line
