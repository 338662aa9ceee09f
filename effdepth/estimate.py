"""What a run will cost before it starts: FLOPs per probe, the seconds they take at this machine's measured
rate, and the run's peak memory.

FLOPs: 2 per weight per token (a layer's weights are ``12 d²`` unless the caller knows better: attention
4 d², a 4×-wide MLP 8 d²) plus the attention scores, 4·d per (query, key) pair (QKᵀ and the weighted sum):
on a long text those dominate the replays, whose queries attend to every earlier clean key. The rate is
measured once per process, dtype and device with a short matmul (``rate``), so a bfloat16 run on this
CPU's AMX units or on a GPU is not quoted at float32's rate; attention runs slower than a large matmul, so
the seconds are a lower bound. Memory (``peak_bytes``): the weights, the kept trace rows, the KV cache of a
chunked pass, the logits kept and the largest working set of one stage, on top of the process itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

#: the process before any model (Python, torch, transformers, a tokenizer), measured here: ~0.6 GB
PROCESS_BYTES = 600 * 2**20
#: the clean pass's forward call size (effdepth.capture.CHUNK_TOKENS) and the probes' working budgets
CHUNK_TOKENS = 1024
LENS_BUDGET_BYTES = 256 * 2**20
REPLAY_BATCH_TOKENS = 8192
#: characters per token when no tokenizer is at hand: English text with these tokenizers runs 3.5–4.5
CHARS_PER_TOKEN = 4.0


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
    first_measured: int = 0  # the first measured position (the window starts there)
    last_measured: int | None = None  # the last measured position (None: the last token)
    kv_dim: int | None = None  # keys per layer and token (None: d; grouped-query attention has fewer)
    weight_bytes: int | None = None  # the model's parameters in bytes (None: from the sizes, fp32)

    @property
    def per_layer(self) -> float:
        return 2.0 * (self.layer_weights or 12 * self.d_model ** 2)  # weight FLOPs per token per layer

    @property
    def unembed(self) -> float:
        return 2.0 * self.vocab * self.d_model  # FLOPs per decoded position

    @property
    def span(self) -> int:
        """The measured window's width (first … last measured position)."""
        last = self.n_tokens - 1 if self.last_measured is None else self.last_measured
        return max(1, last - self.first_measured + 1)

    def attention(self, queries: float, keys: float) -> float:
        """FLOPs of the attention scores of ``queries`` queries over ``keys`` keys each, in one layer."""
        return 4.0 * self.d_model * queries * keys

    @classmethod
    def of(cls, model, n_tokens: int, **kwargs) -> Shape:
        """The shape of a loaded ``effdepth.models.LoadedModel`` (its config and parameters) on ``n_tokens``."""
        config = getattr(model.model.config, "text_config", None) or model.model.config
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or (model.d_model // heads if heads else None)
        params = list(model.model.parameters())
        weights = sum(p.numel() for p in params)
        per_layer = (weights - 2 * model.vocab_size * model.d_model) // max(model.n_layers, 1)
        return cls(model.n_layers, model.d_model, model.vocab_size, n_tokens,
                   layer_weights=per_layer if per_layer > 0 else None,
                   kv_dim=kv_heads * head_dim if kv_heads and head_dim else None,
                   weight_bytes=sum(p.numel() * p.element_size() for p in params), **kwargs)


def flops(shape: Shape, probe: str, ig_steps: int = 256, n_splits: int = 4) -> float:
    """FLOPs of one probe (``forward`` for the clean pass) on ``shape``."""
    L, T = shape.n_layers, shape.n_tokens
    M = shape.measured or T
    A = min(shape.answer_len, T - 1)  # answer-predicting positions, decoded per erasure variant
    W = shape.span if shape.measured else T  # the replayed window
    before = shape.first_measured if shape.measured else 0  # clean keys before the window
    if probe == "forward":
        return T * (L * shape.per_layer + shape.unembed) + L * shape.attention(T, T / 2)
    if probe == "cosine":
        return 0.0  # reductions over the trace, no weights
    if probe == "logit_lens":
        return L * M * shape.unembed
    if probe == "shortcut_lens":  # a d×d map per row, then the lens (the one-off fit on a model is not counted)
        return L * M * (2.0 * shape.d_model * shape.d_model + shape.unembed)
    if probe == "skip":  # per skipped layer its later layers on the packed window: W + the splits' suffixes
        slots = W + n_splits * W / 2
        per_slot = shape.per_layer + shape.attention(1, before + W / 2)
        decoded = n_splits * M / 2  # the outputs are decoded at the measured positions only
        return 2 * (L * (L + 1) / 2) * slots * per_slot + 2 * (L + 1) * decoded * shape.unembed
    if probe == "erasure":  # (k, t): layers k.. on positions t.. (the clean prefix is reused), every measured t
        mean_suffix = W / 2
        per_slot = shape.per_layer + shape.attention(1, before + W / 2)
        return (L * (L + 1) / 2) * M * mean_suffix * per_slot + (L + 1) * M * A * shape.unembed
    if probe == "igrad":  # per layer l: steps x (forward + backward ~ 3x) of layers l..L-1 on the window
        return 3 * ig_steps * (L * (L + 1) / 2) * W * (shape.per_layer + shape.attention(1, before + W / 2))
    raise ValueError(f"no estimate for {probe!r}")


_RATES: dict[tuple[str, str], float] = {}


def rate(dtype: str = "float32", device: str = "cpu") -> float:
    """FLOP/s of a large matmul in ``dtype`` on ``device``, measured once per process (~0.1 s)."""
    key = (str(dtype), str(device))
    if key not in _RATES:
        import torch

        torch_dtype = torch.bfloat16 if "bf" in key[0] else torch.float32
        a = torch.randn(512, 1024, dtype=torch_dtype, device=key[1])
        b = torch.randn(1024, 2048, dtype=torch_dtype, device=key[1])
        (a @ b).sum().item()  # warm-up (and the kernel choice)
        best = float("inf")
        for _ in range(3):
            clock = time.perf_counter()
            (a @ b).sum().item()
            best = min(best, time.perf_counter() - clock)
        _RATES[key] = 2.0 * 512 * 1024 * 2048 / max(best, 1e-9)
    return _RATES[key]


def seconds(total_flops: float, at: float | None = None) -> float:
    return total_flops / (at or rate())


def peak_bytes(shape: Shape, probes: Iterable[str], dtype: str = "float32", chunk: int = CHUNK_TOKENS) -> float:
    """The run's estimated peak memory in bytes (the process, the weights, the trace rows it keeps, the KV
    cache of a chunked pass, the kept logits and the largest stage's working set)."""
    probes = set(probes)
    act = 2 if "bf" in dtype else 4
    L, T, d, V = shape.n_layers, shape.n_tokens, shape.d_model, shape.vocab
    weights = shape.weight_bytes or (L * (shape.layer_weights or 12 * d * d) + 2 * V * d) * act
    replays = probes & {"skip", "erasure", "igrad"}
    W = shape.span if shape.measured else T
    rows = T if not shape.measured else min(T, shape.measured + (W if replays else 0))
    trace = rows * (3 * L + 1) * d * 4.0
    logits = (shape.measured or T) * V * 4.0  # the model's own logits at the measured positions
    kv = 2.0 * L * T * (shape.kv_dim or d) * act if (T > chunk or shape.measured) else 0.0
    step = min(T, chunk) if shape.measured or T > chunk else T
    forward = step * 12 * d * act * 4 + step * V * 4.0  # activations of one call and its logits
    stage = LENS_BUDGET_BYTES if probes & {"logit_lens", "shortcut_lens"} else 0.0
    if "skip" in probes:
        stage = max(stage, REPLAY_BATCH_TOKENS * d * 4.0 * 12 + logits  # the clean probabilities, the batch
                    + (REPLAY_BATCH_TOKENS / max(W, 1)) * (T - W) * (shape.kv_dim or d) * act * 2)
    if "igrad" in probes:
        stage = max(stage, 16 * W * d * 4.0 * 3 * L)  # a block of 16 steps, with autograd's saved activations
    return PROCESS_BYTES + weights + trace + logits + kv + max(forward, stage)


def describe(shape: Shape, probes, ig_steps: int = 256, at: float | None = None, dtype: str = "float32",
             memory: bool = False) -> str:
    """"erasure ~1.9 TFLOP (~19 s), igrad ~… — at 95 GFLOP/s (float32, measured here)" for the probes asked
    for; ``memory``: with the forward pass and the estimated peak memory."""
    at = at or rate(dtype)
    parts = [f"forward pass ~{_fmt_seconds(seconds(flops(shape, 'forward'), at))}"] if memory else []
    for probe in probes:
        if probe == "cosine":
            continue
        f = flops(shape, probe, ig_steps)
        parts.append(f"{probe} ~{_fmt_flops(f)} (~{_fmt_seconds(seconds(f, at))})")
    if memory:
        parts.append(f"peak memory ~{peak_bytes(shape, probes, dtype) / 2**30:.1f} GB")
    return ", ".join(parts) + f" — at {at / 1e9:.0f} GFLOP/s ({dtype}, measured here)"


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
