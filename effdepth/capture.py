"""One clean forward pass -> a Trace, and a Replayer that re-runs layers on modified residuals.

The Replayer is how every intervention runs (skips, local removals, erasure): it records the exact
keyword arguments each decoder layer received in the clean pass (rotary embeddings, masks, ...) and
calls the layers again on a *batch* of edited residual streams, starting at any layer. Layers below
the first edited one are never recomputed (their output is the clean trace), which is the main
saving over one full forward per variant. Nothing here names a module path: that is `arch`'s job.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from effdepth.arch import Taps, first_tensor
from effdepth.arch import taps as resolve_taps
from effdepth.trace import Trace, _hidden_from_call, _hooks, _LayerCall, _TapWriter

__all__ = ["CHUNK_TOKENS", "CleanPass", "Replayer", "Trace", "capture", "chunk_bounds", "clean_pass", "skip_layer",
           "trust_checks"]


#: Tokens per forward call of a long text's clean pass: activations, attention scores and the MLP's
#: intermediate stay in proportion to this, while a KV cache carries the earlier chunks' keys / values.
CHUNK_TOKENS = 1024


class _RecordingCache(DynamicCache):
    """The KV cache of a chunked clean pass; while ``recording`` is a dict it keeps, per layer, the keys /
    values each layer attended to (the earlier chunks' and its own): what a replay of that chunk reuses."""

    def __init__(self, config) -> None:
        super().__init__(config=config)
        self.recording: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if self.recording is not None:
            self.recording[layer_idx] = (keys, values)
        return keys, values


def chunk_bounds(n_tokens: int, window: tuple[int, int] | None, chunk: int) -> list[tuple[int, int]]:
    """The forward calls of a clean pass: [0, start) in ``chunk``-token pieces, the window as one call
    (its layer calls are what a replay of it reuses), then the rest in pieces."""
    start, stop = window or (n_tokens, n_tokens)

    def pieces(a: int, b: int) -> list[tuple[int, int]]:
        return [(c, min(c + chunk, b)) for c in range(a, b, chunk)]

    return [*pieces(0, start), *([(start, stop)] if window else []), *pieces(stop, n_tokens)]


@dataclass
class CleanPass:
    """One clean forward pass of a text: the kept rows (``trace``) and, for the replay ``window``
    [start, stop), that chunk's layer calls and the keys / values each layer attended to in it."""

    model: nn.Module
    taps: Taps
    trace: Trace
    window: tuple[int, int] | None = None
    calls: list[_LayerCall] | None = None
    keys_values: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # [1, H_kv, K, hd] each
    _replayer: Replayer | None = field(default=None, repr=False)

    def replayer(self) -> Replayer:
        """The Replayer over this pass's window (no second forward; made once)."""
        if self.window is None:
            raise ValueError("this clean pass recorded no replay window")
        if self._replayer is None:
            self._replayer = Replayer.over(self)
        return self._replayer


@torch.no_grad()
def clean_pass(model: nn.Module, input_ids: torch.Tensor, model_taps: Taps | None = None,
               rows: Sequence[int] | None = None, window: tuple[int, int] | None = None,
               logit_positions: Sequence[int] | None = None, chunk: int | None = None) -> CleanPass:
    """Run one clean forward pass of ``input_ids`` ([1, T] or [T]) and record every tap point.

    ``rows``: the positions whose activations are kept (None: every position; the window and the logit
    positions are always kept). ``logit_positions``: keep the model's logits only there (None: at every
    kept row). ``window`` (start, stop): the span a Replayer will replay, run as one forward call whose
    layer calls and attended keys / values are kept. A text longer than ``chunk`` tokens (default
    ``CHUNK_TOKENS``) runs in several calls with a KV cache: exact up to float rounding, with activations
    in proportion to the chunk.
    """
    model_taps = model_taps or resolve_taps(model)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError("capture runs one prompt at a time (batch size 1, no padding; docs/SPEC.md §1)")
    n_tokens = input_ids.shape[1]
    if window is not None and not 0 <= window[0] < window[1] <= n_tokens:
        raise ValueError(f"window {window} is outside 0..{n_tokens}")
    logit_kept = None if logit_positions is None else torch.as_tensor(sorted(set(logit_positions)), dtype=torch.long)
    kept_rows = _kept_rows(n_tokens, rows, window, logit_kept)
    if logit_kept is not None and kept_rows is None and len(logit_kept) == n_tokens:
        logit_kept = None
    bounds = chunk_bounds(n_tokens, window, chunk or CHUNK_TOKENS)
    cache = _RecordingCache(model.config) if len(bounds) > 1 or window is not None else None
    writer = _TapWriter(model_taps, n_tokens, kept_rows)
    logits = []
    with _hooks(writer.register()):
        for start, stop in bounds:
            in_window = window == (start, stop)
            writer.begin(start, stop, in_window)
            if cache is not None:
                cache.recording = {} if in_window else None
            logits.append(_forward(model, input_ids, start, stop, cache, _decoded(logit_kept, kept_rows, start, stop)))
    writer.check_complete()
    buffers = writer.buffers
    trace = Trace(input_ids=input_ids[0].cpu() if kept_rows is None else input_ids[0, kept_rows].cpu(),
                  resid=buffers["resid"], attn=buffers["attn"], mlp=buffers["mlp"], logits=torch.cat(logits),
                  logit_positions=logit_kept, positions=kept_rows, n_text=None if kept_rows is None else n_tokens,
                  closure=writer.closure, token_mean=writer.token_mean())
    if window is None:
        return CleanPass(model, model_taps, trace)
    return CleanPass(model, model_taps, trace, window, [c for c in writer.calls],
                     dict(cache.recording or {}) if cache is not None else None)


def _kept_rows(n_tokens: int, rows, window, logit_kept) -> torch.Tensor | None:
    """The positions whose activations a pass keeps, ascending (None: all)."""
    if rows is None:
        return None
    kept = set(int(r) for r in rows)
    if window is not None:
        kept.update(range(*window))
    if logit_kept is not None:
        kept.update(logit_kept.tolist())
    bad = [r for r in kept if not 0 <= r < n_tokens]
    if bad:
        raise ValueError(f"rows {sorted(bad)[:5]} are outside 0..{n_tokens - 1}")
    return None if len(kept) == n_tokens else torch.tensor(sorted(kept), dtype=torch.long)


def _decoded(logit_kept: torch.Tensor | None, kept_rows: torch.Tensor | None, start: int, stop: int) -> torch.Tensor:
    """Offsets within the call [start, stop) whose logits the pass keeps."""
    wanted = logit_kept if logit_kept is not None else kept_rows
    if wanted is None:
        return torch.arange(stop - start)
    return wanted[(wanted >= start) & (wanted < stop)] - start


@torch.no_grad()
def capture(model: nn.Module, input_ids: torch.Tensor, model_taps: Taps | None = None,
            logit_positions: Sequence[int] | None = None, chunk: int | None = None) -> Trace:
    """One clean forward pass of ``input_ids`` ([1, T] or [T]) with every position kept -> Trace.

    ``logit_positions``: keep the model's logits only there (None: every position)."""
    return clean_pass(model, input_ids, model_taps, logit_positions=logit_positions, chunk=chunk).trace


def _forward(model: nn.Module, input_ids: torch.Tensor, start: int, stop: int, cache, decode: torch.Tensor):
    """Logits [len(decode), V] (fp32, CPU) of one forward call over positions ``start .. stop-1``,
    decoding only the offsets ``decode`` where the model offers that."""
    device = next(model.parameters()).device
    chunk = input_ids[:, start:stop].to(device)
    kwargs = {"use_cache": cache is not None, **({"past_key_values": cache} if cache is not None else {})}
    everything = len(decode) == stop - start
    if not everything:
        try:
            logits = model(input_ids=chunk, logits_to_keep=decode.to(device), **kwargs).logits[0]
            if logits.shape[0] == len(decode):
                return logits.float().cpu()
            return logits[decode.to(logits.device)].float().cpu()  # a model that computed them all
        except TypeError:  # no logits_to_keep in this family's forward
            if cache is not None:
                cache.crop(start)  # a call that failed may have appended keys
    logits = model(input_ids=chunk, **kwargs).logits[0]
    return (logits if everything else logits[decode.to(logits.device)]).float().cpu()


#: Attention implementations whose masks may be an arbitrary [.., N, N] tensor (packing needs one).
_MASKABLE_ATTENTION = ("sdpa", "eager")
#: Call arguments that index token positions: gathered at the packed positions (others pass through).
_POSITIONAL_KWARGS = ("position_ids", "cache_position")


def _named_call(layer: nn.Module, call: _LayerCall) -> dict | None:
    """The layer call's arguments by parameter name (GPT-2 blocks take some positionally)."""
    if not call.args:
        return dict(call.kwargs)
    params = [p for p in inspect.signature(layer.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]  # after hidden_states
    if len(call.args) > len(params):
        return None
    return {**{p.name: a for p, a in zip(params, call.args)}, **call.kwargs}


def _allowed(named: dict, n_prefix: int, n_window: int) -> torch.Tensor | None:
    """Which keys each window query may see in the clean call, [W, n_prefix + W] bool (prefix keys first);
    None when the call's mask has another form."""
    clean_mask = named.get("attention_mask")
    if clean_mask is None:  # the layer was causal
        return torch.ones(n_window, n_prefix + n_window, dtype=torch.bool).tril(diagonal=n_prefix)
    if isinstance(clean_mask, torch.Tensor) and clean_mask.dim() == 4 and clean_mask.shape[0] == 1 \
            and tuple(clean_mask.shape[-2:]) == (n_window, n_prefix + n_window):
        allowed = clean_mask[0, 0].cpu()
        return allowed if allowed.dtype == torch.bool else allowed == 0  # additive float mask
    return None


def _rewritten_call(named: dict, slots: torch.Tensor, visible: torch.Tensor, n_prefix: int, n_clean: int,
                    n_window: int, bool_mask_ok: bool) -> _LayerCall | None:
    """Rewrite one clean layer call of a window of ``n_window`` positions (after ``n_prefix`` prefix keys)
    for queries at window positions ``slots`` [N] that attend to the clean keys of the prefix and of window
    positions < ``n_clean``, then to the slots themselves as ``visible`` [N, N] allows (on top of the clean
    mask: causality and sliding windows come from it). None if an argument is not understood.

    Without a clean mask the layer was causal, and the new mask is boolean: only where ``bool_mask_ok``
    (sdpa). Position arguments (rotary, ids) are gathered at ``slots``.
    """
    clean_mask = named.get("attention_mask")
    if clean_mask is None and not bool_mask_ok:
        return None
    allowed = _allowed(named, n_prefix, n_window)
    if allowed is None:
        return None
    rows = allowed[slots]  # [N, n_prefix + W]
    mask = torch.cat([rows[:, :n_prefix + n_clean], rows[:, n_prefix + slots] & visible], dim=1)
    if isinstance(clean_mask, torch.Tensor) and clean_mask.dtype != torch.bool:
        floor = torch.finfo(clean_mask.dtype).min
        mask = torch.zeros(mask.shape, dtype=clean_mask.dtype).masked_fill(~mask, floor)
    device = clean_mask.device if isinstance(clean_mask, torch.Tensor) else slots.device
    out: dict = {}
    for name, value in named.items():
        if name == "attention_mask":
            out[name] = mask[None, None].to(device)
        elif name == "position_embeddings" and isinstance(value, (tuple, list)):
            out[name] = tuple(v.index_select(-2, slots.to(v.device)) for v in value)
        elif name in _POSITIONAL_KWARGS and isinstance(value, torch.Tensor):
            out[name] = value.index_select(-1, slots.to(value.device))
        elif name == "past_key_values":
            out[name] = None  # set by the caller: the clean keys / values the slots attend to
        elif isinstance(value, torch.Tensor) and n_window in value.shape:
            return None  # a per-token argument we do not know how to rewrite
        else:
            out[name] = value
    return _LayerCall((), out)


class _CleanPrefix:
    """Stands in for a KV cache holding clean keys / values of every layer ([1, H_kv, K_l, hd]): the
    replayed queries attend to them, then to their own (batch-broadcast to the replayed rows)."""

    def __init__(self, keys: dict[int, torch.Tensor], values: dict[int, torch.Tensor]) -> None:
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx, *_args, **_kwargs):
        batch = key_states.shape[0]
        keys = torch.cat([self.keys[layer_idx].expand(batch, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values[layer_idx].expand(batch, -1, -1, -1), value_states], dim=-2)
        return keys, values


#: on_layer(layer, rows, layer_input, layer_output) receives fp32 [B_active, T, d] tensors; rows are
#: the variant indices (positions in the ``starts`` list) of the batch rows.
LayerCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class Replayer:
    """Re-run decoder layers on batches of edited residual streams, reusing the clean call arguments.

    It replays one window of the text, positions ``offset .. offset+W-1`` (the whole text by default):
    its ``trace`` is the clean pass read there (row i = position offset + i), and the window's queries
    attend to the clean keys / values of the positions before it, which no edit inside the window can
    change (causality). ``n_text`` is the text's length.
    """

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, model_taps: Taps | None = None,
                 logit_positions: Sequence[int] | None = None, window: tuple[int, int] | None = None,
                 chunk: int | None = None):
        n_tokens = input_ids.shape[-1]
        window = window or (0, n_tokens)
        rows = None if window == (0, n_tokens) else range(*window)
        clean = clean_pass(model, input_ids, model_taps, rows=rows, window=window,
                           logit_positions=logit_positions, chunk=chunk)
        self._adopt(clean)

    @classmethod
    def over(cls, clean: CleanPass) -> Replayer:
        replayer = cls.__new__(cls)
        replayer._adopt(clean)
        return replayer

    def _adopt(self, clean: CleanPass) -> None:
        self.model, self.taps = clean.model, clean.taps
        start, stop = clean.window
        self.offset, self.n_text = start, clean.trace.text_length
        whole = clean.trace.positions is None and (start, stop) == (0, clean.trace.n_tokens)
        self.trace = clean.trace if whole else clean.trace.window(start, stop)
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._keys_values = clean.keys_values or {}
        self._n_prefix: list[int] = []
        self._calls = []
        n_window = stop - start
        for index, (layer, call) in enumerate(zip(self.taps.layers, clean.calls)):
            named = _named_call(layer, call)
            if named is None:  # arguments we cannot name: replayed as recorded (a pass without a prefix)
                self._n_prefix.append(0)
                self._calls.append(call)
                continue
            recorded = self._keys_values.get(index)
            n_prefix = 0 if recorded is None else recorded[0].shape[-2] - n_window
            self._n_prefix.append(n_prefix)
            if "past_key_values" in named:
                named["past_key_values"] = self._prefix_cache(index, n_prefix)
            self._calls.append(_LayerCall((), named))
        if any(self._n_prefix) and len(self._keys_values) != self.taps.n_layers:
            raise RuntimeError("the clean pass recorded no keys / values for some layers of its window")

    def _prefix_cache(self, layer: int, n_keys: int) -> _CleanPrefix | None:
        """A stand-in cache with the first ``n_keys`` clean keys / values of ``layer`` (None: no keys)."""
        if n_keys == 0:
            return None
        keys, values = self._keys_values[layer]
        return _CleanPrefix({layer: keys[:, :, :n_keys]}, {layer: values[:, :, :n_keys]})

    def packed(self, positions: torch.Tensor, visible: torch.Tensor) -> Replayer | None:
        """A Replayer over a *packed* sequence: slot a holds clean window position ``positions[a]``.

        Several variants of one prompt that share a prefix (the future-effect skips of all splits)
        then run as one sequence: the shared prefix once, each variant's own suffix after it, with
        ``visible`` [N, N] saying which slots a slot may attend to (on top of the clean causal /
        sliding-window mask, and after the clean keys before the window) and the rotary / position
        arguments gathered at ``positions``. Returns None when the attention implementation or a layer
        argument cannot be packed exactly.
        """
        return self._view(positions.long().cpu(), visible.cpu(), 0)

    def suffix(self, start: int, stop: int | None = None) -> Replayer | None:
        """A Replayer over window positions ``start .. stop-1`` only; their queries attend to the clean
        keys / values of the positions before ``start`` (recorded by the clean pass) and to the suffix itself.

        Exact by causality for any edit at positions >= ``start``: positions before it are untouched at
        every layer, so their keys and values are the clean ones. Inputs are then [B, stop-start, d].
        None where the attention or a layer argument cannot be rewritten (the caller replays in full).
        """
        n_tokens = self.trace.n_tokens
        stop = n_tokens if stop is None else stop
        if not 0 <= start < stop <= n_tokens:
            raise ValueError(f"suffix {start}..{stop} is outside 0..{n_tokens}")
        slots = torch.arange(start, stop)
        return self._view(slots, torch.ones(len(slots), len(slots), dtype=torch.bool).tril(), start)

    def _view(self, slots: torch.Tensor, visible: torch.Tensor, n_clean: int) -> Replayer | None:
        """A Replayer whose rows are window positions ``slots``, attending to the clean keys before the
        window and of window positions < ``n_clean``, then to each other as ``visible`` allows."""
        implementation = getattr(self.model.config, "_attn_implementation", None)
        if implementation not in _MASKABLE_ATTENTION:
            return None
        calls = []
        for index, call in enumerate(self._calls):
            n_prefix, n_keys = self._n_prefix[index], self._n_prefix[index] + n_clean
            if call.args or (n_keys and ("past_key_values" not in call.kwargs or index not in self._keys_values)):
                return None
            rewritten = _rewritten_call(call.kwargs, slots, visible, n_prefix, n_clean, self.trace.n_tokens,
                                        implementation == "sdpa")
            if rewritten is None:
                return None
            if "past_key_values" in call.kwargs:
                rewritten.kwargs["past_key_values"] = self._prefix_cache(index, n_keys)
            calls.append(rewritten)
        view = copy.copy(self)
        view._calls = calls
        return view

    @torch.no_grad()
    def run_layer(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Apply decoder layer ``layer`` to a batch of residuals [B, T, d]; returns fp32 [B, T, d]."""
        call = self._calls[layer]
        out = self.taps.layers[layer](hidden.to(self.device, self.dtype), *call.args, **call.kwargs)
        return first_tensor(out).float().to(self.device)  # device_map may leave it on another device

    @torch.no_grad()
    def run_staggered(self, starts: Sequence[int], inputs: torch.Tensor,
                      on_layer: LayerCallback | None = None) -> torch.Tensor:
        """Run variant k from layer ``starts[k]`` (input ``inputs[k]``, [T, d]) to the last layer.

        Variants join the batch at their start layer, so each layer runs once on every variant that
        has reached it. Returns the final residuals (before the final norm), fp32 [K, T, d], in the
        order of ``starts``. A start equal to L means "no layer left to run".
        """
        n_layers = self.taps.n_layers
        order = sorted(range(len(starts)), key=lambda k: starts[k])
        final = torch.empty(inputs.shape, dtype=torch.float32, device=self.device)
        active_rows: list[int] = []
        state = torch.zeros((0, *inputs.shape[1:]), dtype=torch.float32, device=self.device)
        cursor = 0
        for layer in range(n_layers):
            joining = []
            while cursor < len(order) and starts[order[cursor]] <= layer:
                joining.append(order[cursor])
                cursor += 1
            if joining:
                state = torch.cat([state, inputs[joining].float().to(self.device)])
                active_rows.extend(joining)
            if not active_rows:
                continue
            out = self.run_layer(layer, state)
            if on_layer is not None:
                on_layer(layer, torch.tensor(active_rows), state, out)
            state = out
        if active_rows:
            final[active_rows] = state
        for k in order[cursor:]:  # variants that start after the last layer
            final[k] = inputs[k].float().to(self.device)
        return final


@contextmanager
def skip_layer(model: nn.Module, layer: int, positions: torch.Tensor | slice | None = None,
               model_taps: Taps | None = None) -> Iterator[None]:
    """Within the block, layer ``layer`` returns its input at ``positions`` (all positions if None).

    The plain, hook-based form of a skip (one full forward per variant); the hook is always removed.
    """
    model_taps = model_taps or resolve_taps(model)
    target = model_taps.layers[layer]
    saved: dict[str, torch.Tensor] = {}

    def pre_hook(_module, args, kwargs):
        saved["h"] = _hidden_from_call(args, kwargs)[0]

    def hook(_module, _args, output):
        out = first_tensor(output)
        where = slice(None) if positions is None else positions
        new = out.clone()
        new[:, where] = saved["h"][:, where]
        return (new, *output[1:]) if isinstance(output, (tuple, list)) else new

    handles = [target.register_forward_pre_hook(pre_hook, with_kwargs=True),
               target.register_forward_hook(hook)]
    with _hooks(handles):
        yield


def trust_checks(trace, model_taps, dtype: str, chunk: int = 256) -> dict:
    """The run's own invariants, measured on this model and text (stored with the run).

    ``residual_closure``: max over (l, t) of ‖h_{l+1} − (h_l + a_l + m_l)‖ / ‖h_{l+1}‖ (over every position
    of the pass, as it ran, and over the trace's rows as kept);
    ``lens_last_max_abs``: max |lens(h_L) − model logits| (at the positions whose logits the trace kept)
    and ``logit_scale`` max |logits|. Both are
    float rounding for a clean capture; a capture that mixed two runs breaks them (effdepth.checks).
    """
    closure = trace.closure or 0.0
    for layer in range(trace.n_layers):  # one layer at a time: no [L, T, d] temporaries
        target = trace.resid[layer + 1]  # [T, d]
        gap = (target - (trace.resid[layer] + trace.attn[layer] + trace.mlp[layer])).norm(dim=-1)
        closure = max(closure, float((gap / target.norm(dim=-1).clamp_min(1e-30)).max()))
    device = next(model_taps.unembed.parameters()).device
    lens_gap = 0.0
    kept = torch.arange(trace.n_tokens) if trace.logit_positions is None else trace.rows(trace.logit_positions)
    with torch.no_grad():
        for start in range(0, len(kept), chunk):  # [chunk, V] at a time (150k vocabularies)
            rows = kept[start:start + chunk]
            z = model_taps.to_logits(trace.resid[-1, rows].to(device)).cpu()
            lens_gap = max(lens_gap, float((z - trace.logits[start:start + chunk]).abs().max()))
    return {"residual_closure": closure, "lens_last_max_abs": lens_gap,
            "logit_scale": float(trace.logits.abs().max()), "dtype": dtype,
            "shape": [trace.n_layers, trace.text_length, int(trace.resid.shape[-1])]}
