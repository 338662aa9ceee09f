"""Probe F (docs/SPEC.md §7.3): integrated gradients of the gold-answer probability w.r.t. each layer.

Target scalar. With the answer = the last ``alen`` tokens of the prompt and A = T-alen-1 … T-2 (the
positions that predict them),  F = Σ_{i in A} softmax(z[i])[ids[i+1]]  — the teacher-forced
probabilities of the gold answer tokens (``softmax(logits[:, :-1])`` gathered at ``input_ids[1:]``,
summed over the answer span). Logits include the family's final soft-cap, like the model's own.

What is interpolated (``part``), always a clean [T, d] activation x of one prompt:

- ``layer``: x = h_{l+1}, the residual OUTPUT of layer l (``Trace.resid[l+1]``). x_α replaces the whole
  residual stream after layer l; layers l+1..L-1 then run on it (for l = L-1 only the final norm and
  unembedding). This is P2's "layer" and P1's only part.
- ``attn``:  x = a_l, the attention contribution as added to the residual (the ``arch`` attn tap).
  Layer l runs on its clean input h_l with the attn tap's output replaced by x_α, so its MLP sees
  h_l + x_α and is re-run; then layers l+1..L-1.
- ``mlp``:   x = m_l, the MLP contribution (the ``arch`` mlp tap); layer l's output is
  h_l + a_l + x_α, then layers l+1..L-1.

(The replacement is a forward hook on the tap module that ``effdepth.arch.taps`` names, so
post-norm families — Gemma 3, OLMo 2 — interpolate the post-norm output, which is what is added.)

Interpolation: x_α = b + α (x − b) at all positions, α_k = k/N, k = 0..N-1 (a left Riemann sum that
never reaches α = 1; N = 256 as in P2), processed in blocks of ``block`` = 16 steps as one batch:

    IG_l[t] = (1/N) Σ_k Σ_d ∂F/∂x_{α_k}[t, d] · (x[t, d] − b[t, d])

Completeness: Σ_t IG_l[t] → F(x) − F(b) as N grows (error O(1/N)); P2's optional normalisation by
that difference is off, as in P2. Output: DataFrame[part, layer, pos, value].

Baselines (``baseline``):

- ``"p2"`` (default): b = mean of x over token positions (position 0 included), one d-vector broadcast
  to every position.
- ``"p1"``: P1's ``orig_output.mean(dim=1)`` evaluated on a [T, d] tensor (docs/SPEC.md §9, §12.1): the mean
  over the *hidden* dimension per token, a scalar per token broadcast over d. This is very likely an
  unintended consequence of the transformers tuple→tensor change; it is offered only for replication.
  (How P1's code broadcast a [T] vector against [T, d] is [unverified]; effdepth uses keepdim.)
- a callable ``x [T, d] -> b`` ([d] or [T, d]), e.g. ``lambda x: x`` (which gives all zeros).

Autograd runs under ``torch.enable_grad()``; the model's parameters are frozen for the duration
(``requires_grad_(False)``) and their flags restored afterwards, even on error. Layers are replayed
with the clean pass's call arguments (the ``Replayer``'s recorded calls), so layers < l are never
recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from effdepth import contract
from effdepth.arch import first_tensor
from effdepth.capture import Replayer
from effdepth.probes.erasure import answer_positions

PARTS = ("layer", "attn", "mlp")
N_STEPS = contract.DEFAULT_IG_STEPS  # P2
BLOCK = 16

Baseline = str | Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block; the original flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def make_baseline(x: torch.Tensor, baseline: Baseline = "p2", text_mean: torch.Tensor | None = None) -> torch.Tensor:
    """The IG baseline for a clean activation x [T, d], returned broadcast to [T, d].

    ``text_mean`` [d]: the token mean of the activation over the whole text, when x holds a window of it
    only (the p2 baseline is the text's mean, not the window's)."""
    if callable(baseline):
        b = torch.as_tensor(baseline(x), dtype=x.dtype)
    elif baseline == "p2":
        b = x.mean(dim=0, keepdim=True) if text_mean is None else text_mean.to(x.dtype)[None]  # one d-vector
    elif baseline == "p1":
        b = x.mean(dim=-1, keepdim=True)  # mean over hidden dims: one scalar per token (P1, §9)
    else:
        raise ValueError(f"unknown IG baseline {baseline!r}; use 'p2', 'p1' or a callable")
    return b.expand_as(x).clone()


def clean_activation(replayer: Replayer, part: str, layer: int) -> torch.Tensor:
    """The [T, d] activation that ``part`` of ``layer`` interpolates (see the module docstring)."""
    trace = replayer.trace
    if part == "layer":
        return trace.resid[layer + 1]
    if part == "attn":
        return trace.attn[layer]
    if part == "mlp":
        return trace.mlp[layer]
    raise ValueError(f"unknown IG part {part!r}; choose from {', '.join(PARTS)}")


def text_mean(replayer: Replayer, part: str, layer: int) -> torch.Tensor | None:
    """The token mean over the whole text of ``part``'s activation [d], where the replay holds a window of
    the text only (None where it holds the whole text: the mean of the activation itself)."""
    trace = replayer.trace
    if getattr(replayer, "n_text", trace.n_tokens) == trace.n_tokens or not trace.token_mean:
        return None
    name, row = ("resid", layer + 1) if part == "layer" else (part, layer)
    return trace.token_mean[name][row]


def _layer_call(replayer: Replayer, layer: int, hidden: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``layer`` on [B, T, d] with the clean call's arguments, differentiably."""
    call = replayer._calls[layer]  # Replayer.run_layer is no_grad; IG needs the same call with grad
    out = replayer.taps.layers[layer](hidden.to(replayer.device, replayer.dtype), *call.args, **call.kwargs)
    return first_tensor(out).float()


@contextmanager
def _replace_output(module: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """``module``'s output (first tensor if a tuple) is ``value`` [B, T, d] inside the block."""

    def hook(_module, _args, output):
        new = value.to(first_tensor(output).dtype)
        return (new, *output[1:]) if isinstance(output, (tuple, list)) else new

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def patched_target(replayer: Replayer, part: str, layer: int, values: torch.Tensor,
                   answer_len: int) -> torch.Tensor:
    """F for each row of ``values`` [B, T, d] put in place of ``part``'s activation of ``layer`` -> [B].

    Differentiable w.r.t. ``values`` when grad is enabled.
    """
    trace = replayer.trace
    n_layers = trace.n_layers
    answer = _answer_rows(replayer, answer_len)
    gold = trace.input_ids[answer + 1].to(replayer.device)  # [A]
    batch = values.shape[0]
    if part == "layer":
        hidden, first = values, layer + 1
    else:
        module = (replayer.taps.attn_modules if part == "attn" else replayer.taps.mlp_modules)[layer]
        clean_in = trace.resid[layer][None].expand(batch, -1, -1)
        with _replace_output(module, values):
            hidden = _layer_call(replayer, layer, clean_in)
        first = layer + 1
    for next_layer in range(first, n_layers):
        hidden = _layer_call(replayer, next_layer, hidden)
    logits = replayer.taps.to_logits(hidden[:, answer].to(replayer.device))  # [B, A, V] fp32
    probs = torch.softmax(logits, dim=-1)
    return probs.gather(-1, gold[None, :, None].expand(batch, -1, 1))[..., 0].sum(-1).cpu()


def _answer_rows(replayer: Replayer, answer_len: int) -> torch.Tensor:
    """The rows of the replay that predict the answer tokens (positions T-alen-1 … T-2 of the text)."""
    offset, n_rows = getattr(replayer, "offset", 0), replayer.trace.n_tokens
    rows = answer_positions(getattr(replayer, "n_text", n_rows), answer_len) - offset
    if int(rows[0]) < 0 or int(rows[-1]) + 1 >= n_rows:
        raise ValueError(f"the replayed window {offset}…{offset + n_rows - 1} does not hold the answer span")
    return rows


def ig_one(replayer: Replayer, part: str, layer: int, answer_len: int, n_steps: int = N_STEPS,
           block: int = BLOCK, baseline: Baseline = "p2", first: int = 0) -> torch.Tensor:
    """IG_l[t] for one (part, layer) -> fp32 [T] over the replay's rows.

    ``first``: the first row interpolated; the rows before it keep their clean value (their IG is 0)."""
    if n_steps < 1 or block < 1:
        raise ValueError("n_steps and block must be >= 1")
    x = clean_activation(replayer, part, layer).float()
    b = make_baseline(x, baseline, text_mean(replayer, part, layer))
    delta = x - b
    delta[:first] = 0.0  # x_alpha = x there: not interpolated
    clean_part = x - delta  # b where interpolated, x elsewhere
    grad_sum = torch.zeros_like(x, dtype=torch.float64)
    with frozen(replayer.model), torch.enable_grad():
        for start in range(0, n_steps, block):
            alphas = torch.arange(start, min(start + block, n_steps), dtype=torch.float32) / n_steps
            values = (clean_part[None] + alphas[:, None, None] * delta[None]).requires_grad_(True)
            target = patched_target(replayer, part, layer, values, answer_len)
            (grad,) = torch.autograd.grad(target.sum(), values)
            grad_sum += grad.double().sum(dim=0)
    return ((grad_sum / n_steps) * delta.double()).sum(dim=-1).float()


def integrated_gradients(replayer: Replayer, answer_len: int, parts: Sequence[str] = PARTS,
                         layers: Sequence[int] | None = None, n_steps: int = N_STEPS,
                         block: int = BLOCK, baseline: Baseline = "p2",
                         progress: Callable[[str, float], None] | None = None,
                         positions: Sequence[int] | None = None) -> pd.DataFrame:
    """IG for every requested part and layer -> DataFrame[part, layer, pos, value].

    P2 computes all three parts; P1 only ``parts=("layer",)`` (with ``baseline="p1"``).
    ``positions`` (text positions; None: every row of the replay): where IG is reported; the activation is
    interpolated from the first of them to the end (earlier positions stay clean, and by causality a
    Replayer over a window from there on is exact), against the p2 baseline of the whole text.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown IG parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    n_layers, n_rows = replayer.trace.n_layers, replayer.trace.n_tokens
    offset = getattr(replayer, "offset", 0)
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are outside 0..{n_layers - 1}")
    _answer_rows(replayer, answer_len)  # validate early
    rows = torch.arange(n_rows) if positions is None else torch.as_tensor(sorted(positions), dtype=torch.long) - offset
    if len(rows) == 0 or int(rows[0]) < 0 or int(rows[-1]) >= n_rows:
        raise ValueError(f"IG positions must lie in the replayed window {offset}…{offset + n_rows - 1}")
    frames = []
    jobs = [(part, layer) for part in parts for layer in layers]
    for done, (part, layer) in enumerate(jobs, 1):
        values = ig_one(replayer, part, layer, answer_len, n_steps, block, baseline, first=int(rows[0]))
        frames.append(pd.DataFrame({"part": part, "layer": layer, "pos": (rows + offset).numpy(),
                                    "value": values[rows].double().numpy()}))
        if progress:
            progress(f"integrated gradients {part} layer {layer}", done / len(jobs))
    return pd.concat(frames, ignore_index=True)


def gold_probability(logits: torch.Tensor, input_ids: torch.Tensor, answer_len: int) -> float:
    """F from full logits [T, V] and ids [T]: Σ over the answer span of p(gold next token)."""
    answer = answer_positions(input_ids.shape[-1], answer_len)
    probs = torch.softmax(logits[answer].float(), dim=-1)
    return float(probs.gather(-1, input_ids[answer + 1][:, None].to(probs.device)).sum())
