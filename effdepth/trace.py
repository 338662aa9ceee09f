"""The Trace of one clean forward pass, and the hooks that write it as the layers run.

A Trace holds the residual stream h_l, the attention and MLP contributions a_l / m_l and the model's own
logits of one text, fp32 on CPU, at every position or at the kept ones only. ``effdepth.capture`` runs
the pass; this module is what it records into.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from effdepth.arch import Taps, first_tensor


@dataclass
class Trace:
    """Activations of one clean forward pass of one prompt (batch size 1), all fp32 on CPU.

    resid[l] is h_l, the residual entering layer l (resid[0] = embeddings); resid[L] is the output of
    the last layer, *before* the final norm. attn[l] / mlp[l] are the contributions a_l / m_l added to
    the residual. Rows are the text's positions, or on a long text only the kept ones (``positions``:
    what the probes read; [L+1, T, d] of a 16k-token text is gigabytes). logits are the model's own
    output logits: at every row, or only at ``logit_positions`` (a 150k vocabulary's [T, V] logits are
    2.5 GB at 4,096 tokens).
    """

    input_ids: torch.Tensor  # [N] int64, the rows' tokens
    resid: torch.Tensor  # [L+1, N, d]
    attn: torch.Tensor  # [L, N, d]
    mlp: torch.Tensor  # [L, N, d]
    logits: torch.Tensor  # [N, V], or [P, V] at logit_positions
    logit_positions: torch.Tensor | None = None  # [P] text positions, ascending; None: every row
    positions: torch.Tensor | None = None  # [N] the rows' text positions, ascending; None: row i is position i
    n_text: int | None = None  # tokens of the text the pass covered (None: N)
    closure: float | None = None  # max residual closure over every position of the pass (None: from the rows)
    token_mean: dict[str, torch.Tensor] | None = None  # resid [L+1, d], attn / mlp [L, d]: means over the text

    def __post_init__(self) -> None:
        n_tokens = self.input_ids.shape[0]
        n_layers = self.attn.shape[0]
        d_model = self.resid.shape[-1]
        if self.resid.shape != (n_layers + 1, n_tokens, d_model):
            raise ValueError(f"resid has shape {tuple(self.resid.shape)}, expected "
                             f"{(n_layers + 1, n_tokens, d_model)}")
        for name in ("attn", "mlp"):
            if getattr(self, name).shape != (n_layers, n_tokens, d_model):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected "
                                 f"{(n_layers, n_tokens, d_model)}")
        rows = n_tokens if self.logit_positions is None else len(self.logit_positions)
        if self.logits.dim() != 2 or self.logits.shape[0] != rows:
            raise ValueError(f"logits has shape {tuple(self.logits.shape)}, expected [{rows}, V]")
        if self.positions is not None and self.positions.shape != (n_tokens,):
            raise ValueError(f"positions has shape {tuple(self.positions.shape)}, expected ({n_tokens},)")

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]

    @property
    def n_tokens(self) -> int:
        """The rows of the trace (the text's tokens unless it kept some positions only)."""
        return self.input_ids.shape[0]

    @property
    def text_length(self) -> int:
        return self.n_tokens if self.n_text is None else self.n_text

    @property
    def full_logits(self) -> torch.Tensor:
        """The logits of every position [T, V] (a trace that kept only some says so)."""
        if self.logit_positions is not None or self.positions is not None:
            kept = self.logits.shape[0]
            raise ValueError(f"this trace kept the logits of {kept} of its {self.text_length} positions only")
        return self.logits

    def rows(self, positions) -> torch.Tensor:
        """The rows of text ``positions`` (each must be one the trace kept)."""
        index = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        if self.positions is None:
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= self.n_tokens):
                raise ValueError(f"positions outside 0..{self.n_tokens - 1}")
            return index
        return _find(self.positions, index, "kept no activations")

    def logits_at(self, positions) -> torch.Tensor:
        """The model's logits at clean ``positions`` -> [P, V] (each must be one the trace kept)."""
        index = torch.as_tensor(positions, dtype=torch.long).reshape(-1)
        if self.logit_positions is None:
            return self.logits[self.rows(index)]
        return self.logits[_find(self.logit_positions, index, "kept no logits")]

    def at(self, positions) -> Trace:
        """The same pass read at some positions only (their activations and logits; each still saw its
        whole context): what the per-position probes of a run with measured positions read."""
        rows = self.rows(positions)
        return Trace(input_ids=self.input_ids[rows], resid=self.resid[:, rows], attn=self.attn[:, rows],
                     mlp=self.mlp[:, rows], logits=self.logits_at(positions))

    def window(self, start: int, stop: int) -> Trace:
        """Positions ``start .. stop-1`` (all kept) as a trace of their own, row i = position start + i, with
        the logits it kept there: what a Replayer over that window reads."""
        rows = self.rows(range(start, stop))
        if self.logit_positions is None:
            logits, kept = self.logits[rows], None
        else:
            inside = (self.logit_positions >= start) & (self.logit_positions < stop)
            logits, kept = self.logits[inside], self.logit_positions[inside] - start
            if len(kept) == stop - start:
                kept = None
        return Trace(input_ids=self.input_ids[rows], resid=self.resid[:, rows], attn=self.attn[:, rows],
                     mlp=self.mlp[:, rows], logits=logits, logit_positions=kept, token_mean=self.token_mean)

    @property
    def contrib(self) -> torch.Tensor:
        """c_l = h_{l+1} - h_l, the whole layer's contribution. [L, T, d]"""
        return self.resid[1:] - self.resid[:-1]


def _find(sorted_positions: torch.Tensor, index: torch.Tensor, what: str) -> torch.Tensor:
    """Rows of ``index`` in the ascending ``sorted_positions`` (ValueError naming the missing ones)."""
    rows = torch.searchsorted(sorted_positions, index)
    inside = rows.clamp_max(max(len(sorted_positions) - 1, 0))
    found = (rows < len(sorted_positions)) & (sorted_positions[inside] == index) if len(sorted_positions) \
        else torch.zeros_like(index, dtype=torch.bool)
    if not bool(found.all()):
        raise ValueError(f"the trace {what} at positions {index[~found].tolist()[:5]}")
    return rows


@dataclass
class _LayerCall:
    args: tuple  # positional args after hidden_states
    kwargs: dict


@contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hidden_from_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    """Split a decoder layer call into (hidden_states, other args, other kwargs)."""
    if args:
        return args[0], tuple(args[1:]), dict(kwargs)
    rest = dict(kwargs)
    return rest.pop("hidden_states"), (), rest


class _TapWriter:
    """Hooks on every tap point that write the kept rows into [L+1, N, d] / [L, N, d] fp32 buffers as the
    layers run, chunk by chunk (allocated at the first tap, when d is known), so the trace is never held
    twice. They also measure the residual closure at every position and sum every activation over the
    text (its token means), so that neither needs the rows that are not kept."""

    def __init__(self, model_taps: Taps, n_tokens: int, rows: torch.Tensor | None) -> None:
        self.taps, self.n_tokens, self.rows = model_taps, n_tokens, rows
        self.n_rows = n_tokens if rows is None else len(rows)
        self.buffers: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.seen: dict[str, set[int]] = {"resid": set(), "attn": set(), "mlp": set()}
        self.calls: list[_LayerCall | None] = [None] * model_taps.n_layers
        self.keep_calls = False
        self.closure = 0.0
        self._current: dict[str, torch.Tensor] = {}
        self.begin(0, n_tokens, False)

    def begin(self, start: int, stop: int, keep_calls: bool) -> None:
        """The next forward call covers positions ``start .. stop-1``; ``keep_calls``: record its layer calls."""
        self.keep_calls = keep_calls
        if self.rows is None:
            self.source, self.target = slice(None), slice(start, stop)
            return
        inside = ((self.rows >= start) & (self.rows < stop)).nonzero()[:, 0]
        self.source, self.target = self.rows[inside] - start, inside

    def write(self, name: str, row: int, value: torch.Tensor) -> None:
        if not self.buffers:
            n_layers, d_model = self.taps.n_layers, value.shape[-1]
            self.buffers.update(resid=torch.empty(n_layers + 1, self.n_rows, d_model),
                                attn=torch.empty(n_layers, self.n_rows, d_model),
                                mlp=torch.empty(n_layers, self.n_rows, d_model))
            self.sums.update({k: torch.zeros(v.shape[0], d_model, dtype=torch.float64)
                              for k, v in self.buffers.items()})
        self.buffers[name][row, self.target] = value[0, self.source].float().cpu()
        self.sums[name][row] += value[0].double().sum(dim=0).cpu()
        self.seen[name].add(row)

    def _pre_hook(self, index: int):
        def hook(_module, args, kwargs):
            hidden, rest_args, rest_kwargs = _hidden_from_call(args, kwargs)
            self.write("resid", index, hidden)
            self._current["in"] = hidden
            if self.keep_calls:
                self.calls[index] = _LayerCall(rest_args, rest_kwargs)
        return hook

    def _post_hook(self, name: str, row: int):
        def hook(_module, _args, output):
            value = first_tensor(output)
            self.write(name, row, value)
            self._current[name] = value
        return hook

    def _closure_hook(self, _module, _args, output) -> None:
        """max over this call's positions of ||h_{l+1} - (h_l + a_l + m_l)|| / ||h_{l+1}|| (fp32)."""
        out = first_tensor(output)[0].float()
        parts = self._current
        gap = (out - (parts["in"][0].float() + parts["attn"][0].float() + parts["mlp"][0].float())).norm(dim=-1)
        self.closure = max(self.closure, float((gap / out.norm(dim=-1).clamp_min(1e-30)).max()))
        self._current = {}

    def register(self) -> list:
        handles = []
        for index, layer in enumerate(self.taps.layers):
            handles.append(layer.register_forward_pre_hook(self._pre_hook(index), with_kwargs=True))
            handles.append(self.taps.attn_modules[index].register_forward_hook(self._post_hook("attn", index)))
            handles.append(self.taps.mlp_modules[index].register_forward_hook(self._post_hook("mlp", index)))
            handles.append(layer.register_forward_hook(self._closure_hook))
        handles.append(self.taps.layers[-1].register_forward_hook(self._post_hook("resid", self.taps.n_layers)))
        return handles

    def check_complete(self) -> None:
        n_layers = self.taps.n_layers
        missing = [i for i in range(n_layers + 1) if i not in self.seen["resid"]
                   or (i < n_layers and (i not in self.seen["attn"] or i not in self.seen["mlp"]))]
        if missing:
            raise RuntimeError(f"tap points did not fire for layers {missing[:5]}")

    def token_mean(self) -> dict[str, torch.Tensor]:
        return {name: (total / self.n_tokens).float() for name, total in self.sums.items()}


