"""What a run will cost before it starts: weight-matmul FLOPs per probe, and seconds at a stated rate.

Counted as in ``bench/bench_skip.py``: 2 FLOPs per weight per token, attention scores left out, so the
figures are lower bounds that hold well while T is small next to d_model. A layer's weights are taken
as ``12 d²`` (attention 4 d², a 4×-wide MLP 8 d²) unless the caller knows better. The rate is what this
project's 2-core CPU does in float32 (``bench/RESULTS.md``: ~100 GFLOP/s for the lens and the replays); a
GPU is far faster, so the page and the CLI name the rate with every estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

#: FLOP/s of the project's CPU in float32 (bench/RESULTS.md), the rate the estimates are given at
CPU_RATE = 100e9


@dataclass(frozen=True)
class Shape:
    """The sizes an estimate needs: layers, width, vocabulary, tokens, measured positions, answer tokens."""

    n_layers: int
    d_model: int
    vocab: int
    n_tokens: int
    measured: int | None = None  # None: every position
    answer_len: int = 1
    layer_weights: int | None = None  # weights of one layer (None: 12 d²)
    first_measured: int = 0  # the first measured position (erasure replays from each one to the end)

    @property
    def per_layer(self) -> float:
        return 2.0 * (self.layer_weights or 12 * self.d_model ** 2)  # FLOPs per token per layer

    @property
    def unembed(self) -> float:
        return 2.0 * self.vocab * self.d_model  # FLOPs per decoded position


def flops(shape: Shape, probe: str, ig_steps: int = 256, n_splits: int = 4) -> float:
    """Weight FLOPs of one probe (``forward`` for the clean pass) on ``shape``."""
    L, T = shape.n_layers, shape.n_tokens
    M = shape.measured or T
    A = min(shape.answer_len, T - 1)  # answer-predicting positions, decoded per erasure variant
    if probe == "forward":
        return T * (L * shape.per_layer + shape.unembed)
    if probe == "cosine":
        return 0.0  # reductions over the trace, no weights
    if probe == "logit_lens":
        return L * M * shape.unembed
    if probe == "shortcut_lens":  # a d×d map per row, then the lens (the one-off fit on a model is not counted)
        return L * M * (2.0 * shape.d_model * shape.d_model + shape.unembed)
    if probe == "skip":  # each skipped layer's later layers on the split suffixes (packed), plus their outputs
        span = T - shape.first_measured  # the splits fall inside the measured window
        suffix = n_splits * span / 2
        slots = T / 2 + suffix
        decoded = n_splits * M / 2  # the outputs are decoded at the measured positions only
        return (L * (L + 1) / 2) * slots * shape.per_layer + (L + 1) * decoded * shape.unembed
    if probe == "erasure":  # (k, t): layers k.. on positions t.. (the clean prefix is reused), every measured t
        mean_suffix = (T - shape.first_measured) / 2
        return (L * (L + 1) / 2) * M * mean_suffix * shape.per_layer + (L + 1) * M * A * shape.unembed
    if probe == "igrad":  # per layer l: steps x (forward + backward ~ 3x) of layers l..L-1
        return 3 * ig_steps * (L * (L + 1) / 2) * T * shape.per_layer
    raise ValueError(f"no estimate for {probe!r}")


def seconds(total_flops: float, rate: float = CPU_RATE) -> float:
    return total_flops / rate


def describe(shape: Shape, probes, ig_steps: int = 256, rate: float = CPU_RATE) -> str:
    """"erasure ~1.9 TFLOP (~19 s), igrad ~… — at 100 GFLOP/s" for the probes asked for."""
    parts = []
    for probe in probes:
        if probe == "cosine":
            continue
        f = flops(shape, probe, ig_steps)
        parts.append(f"{probe} ~{_fmt_flops(f)} (~{_fmt_seconds(seconds(f, rate))})")
    return ", ".join(parts) + f" — at {rate / 1e9:.0f} GFLOP/s"


def _fmt_flops(value: float) -> str:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value / 1e9:.2f} GFLOP"


def _fmt_seconds(value: float) -> str:
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"
