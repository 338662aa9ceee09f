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
from dataclasses import dataclass

import torch
from torch import nn

from effdepth.arch import Taps, first_tensor
from effdepth.arch import taps as resolve_taps


@dataclass
class Trace:
    """Activations of one clean forward pass of one prompt (batch size 1), all fp32 on CPU.

    resid[l] is h_l, the residual entering layer l (resid[0] = embeddings); resid[L] is the output of
    the last layer, *before* the final norm. attn[l] / mlp[l] are the contributions a_l / m_l added to
    the residual. logits are the model's own output logits: at every position, or, on a long text, only
    at ``logit_positions`` (the measured ones and what the probes decode: [T, V] logits of a 150k
    vocabulary are 2.5 GB at 4,096 tokens).
    """

    input_ids: torch.Tensor  # [T] int64
    resid: torch.Tensor  # [L+1, T, d]
    attn: torch.Tensor  # [L, T, d]
    mlp: torch.Tensor  # [L, T, d]
    logits: torch.Tensor  # [T, V], or [P, V] at logit_positions
    logit_positions: torch.Tensor | None = None  # [P] ascending; None: every position

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

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]

    @property
    def full_logits(self) -> torch.Tensor:
        """The logits of every position [T, V] (a trace that kept only some says so)."""
        if self.logit_positions is not None:
            raise ValueError(f"this trace kept the logits of {len(self.logit_positions)} of its "
                             f"{self.n_tokens} positions only")
        return self.logits

    def logits_at(self, positions) -> torch.Tensor:
        """The model's logits at clean ``positions`` -> [P, V] (each must be one the trace kept)."""
        index = torch.as_tensor(positions, dtype=torch.long)
        if self.logit_positions is None:
            return self.logits[index]
        rows = torch.searchsorted(self.logit_positions, index)
        kept = (rows < len(self.logit_positions)) & (self.logit_positions[rows.clamp_max(len(self.logit_positions) - 1)]
                                                     == index)
        if not bool(kept.all()):
            raise ValueError(f"the trace kept no logits at positions {index[~kept].tolist()[:5]}")
        return self.logits[rows]

    def at(self, positions: list[int]) -> Trace:
        """The same pass read at some positions only (their activations and logits; each still saw its
        whole context): what the per-position probes of a run with measured positions read."""
        index = torch.as_tensor(positions, dtype=torch.long)
        return Trace(input_ids=self.input_ids[index], resid=self.resid[:, index], attn=self.attn[:, index],
                     mlp=self.mlp[:, index], logits=self.logits_at(index))

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[0]

    @property
    def contrib(self) -> torch.Tensor:
        """c_l = h_{l+1} - h_l, the whole layer's contribution. [L, T, d]"""
        return self.resid[1:] - self.resid[:-1]


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
    """Hooks on every tap point that write into [L+1, T, d] / [L, T, d] fp32 buffers as the layers run
    (allocated at the first tap, when d is known), so the trace is never held twice."""

    def __init__(self, model_taps: Taps, n_tokens: int, keep_calls: bool) -> None:
        self.taps, self.n_tokens, self.keep_calls = model_taps, n_tokens, keep_calls
        self.buffers: dict[str, torch.Tensor] = {}
        self.seen: dict[str, set[int]] = {"resid": set(), "attn": set(), "mlp": set()}
        self.calls: list[_LayerCall | None] = [None] * model_taps.n_layers

    def write(self, name: str, row: int, value: torch.Tensor) -> None:
        if not self.buffers:
            n_layers, d_model = self.taps.n_layers, value.shape[-1]
            self.buffers.update(resid=torch.empty(n_layers + 1, self.n_tokens, d_model),
                                attn=torch.empty(n_layers, self.n_tokens, d_model),
                                mlp=torch.empty(n_layers, self.n_tokens, d_model))
        self.buffers[name][row].copy_(value[0])
        self.seen[name].add(row)

    def _pre_hook(self, index: int):
        def hook(_module, args, kwargs):
            hidden, rest_args, rest_kwargs = _hidden_from_call(args, kwargs)
            self.write("resid", index, hidden)
            if self.keep_calls:
                self.calls[index] = _LayerCall(rest_args, rest_kwargs)
        return hook

    def _post_hook(self, name: str, row: int):
        def hook(_module, _args, output):
            self.write(name, row, first_tensor(output))
        return hook

    def register(self) -> list:
        handles = []
        for index, layer in enumerate(self.taps.layers):
            handles.append(layer.register_forward_pre_hook(self._pre_hook(index), with_kwargs=True))
            handles.append(self.taps.attn_modules[index].register_forward_hook(self._post_hook("attn", index)))
            handles.append(self.taps.mlp_modules[index].register_forward_hook(self._post_hook("mlp", index)))
        handles.append(self.taps.layers[-1].register_forward_hook(self._post_hook("resid", self.taps.n_layers)))
        return handles

    def check_complete(self) -> None:
        n_layers = self.taps.n_layers
        missing = [i for i in range(n_layers + 1) if i not in self.seen["resid"]
                   or (i < n_layers and (i not in self.seen["attn"] or i not in self.seen["mlp"]))]
        if missing:
            raise RuntimeError(f"tap points did not fire for layers {missing[:5]}")


@torch.no_grad()
def capture(model: nn.Module, input_ids: torch.Tensor, model_taps: Taps | None = None,
            keep_calls: bool = False,
            logit_positions: Sequence[int] | None = None) -> Trace | tuple[Trace, list[_LayerCall]]:
    """Run one clean forward pass of ``input_ids`` ([1, T] or [T]) and record every tap point.

    ``logit_positions``: keep the model's logits only there (None: every position)."""
    model_taps = model_taps or resolve_taps(model)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.shape[0] != 1:
        raise ValueError("capture runs one prompt at a time (batch size 1, no padding; docs/SPEC.md §1)")
    n_tokens = input_ids.shape[1]
    writer = _TapWriter(model_taps, n_tokens, keep_calls)
    kept = None if logit_positions is None else torch.as_tensor(sorted(set(logit_positions)), dtype=torch.long)
    if kept is not None and len(kept) == n_tokens:
        kept = None
    with _hooks(writer.register()):
        output = _forward(model, input_ids, kept)
    writer.check_complete()
    logits = output.logits[0]
    if kept is not None and logits.shape[0] == n_tokens and len(kept) < n_tokens:
        logits = logits[kept]  # a model without logits_to_keep computed them all
    buffers = writer.buffers
    trace = Trace(input_ids=input_ids[0].cpu(), resid=buffers["resid"], attn=buffers["attn"], mlp=buffers["mlp"],
                  logits=logits.float().cpu(), logit_positions=kept)
    return (trace, writer.calls) if keep_calls else trace


def _forward(model: nn.Module, input_ids: torch.Tensor, kept: torch.Tensor | None):
    """The model's forward, decoding only the ``kept`` positions where the model offers that."""
    device = next(model.parameters()).device
    if kept is None:
        return model(input_ids=input_ids.to(device), use_cache=False)
    try:
        return model(input_ids=input_ids.to(device), use_cache=False, logits_to_keep=kept.to(device))
    except TypeError:  # no logits_to_keep in this family's forward
        return model(input_ids=input_ids.to(device), use_cache=False)


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


def _rewritten_call(named: dict, rows: torch.Tensor, cols: torch.Tensor, visible: torch.Tensor, n_tokens: int,
                    bool_mask_ok: bool) -> _LayerCall | None:
    """Rewrite one clean layer call for queries at clean positions ``rows`` [Nq] attending to keys at
    ``cols`` [Nk] (None if an argument is not understood).

    visible [Nq, Nk]: which keys each query may see on top of the clean mask (causality and sliding
    windows come from the clean call). Without a clean mask the layer was causal, and the new mask is
    boolean: only where ``bool_mask_ok`` (sdpa). Position arguments (rotary, ids) are gathered at ``rows``.
    """
    out: dict = {}
    clean_mask = named.get("attention_mask")
    if clean_mask is None and not bool_mask_ok:
        return None
    if clean_mask is None:
        allowed = torch.ones(n_tokens, n_tokens, dtype=torch.bool).tril()
    elif isinstance(clean_mask, torch.Tensor) and clean_mask.shape[-2:] == (n_tokens, n_tokens) \
            and clean_mask.shape[0] == 1:
        allowed = clean_mask[0, 0].cpu()
        allowed = allowed if allowed.dtype == torch.bool else allowed == 0  # additive float mask
    else:
        return None
    mask = allowed[rows][:, cols] & visible  # [Nq, Nk]
    if isinstance(clean_mask, torch.Tensor) and clean_mask.dtype != torch.bool:
        floor = torch.finfo(clean_mask.dtype).min
        mask = torch.zeros(mask.shape, dtype=clean_mask.dtype).masked_fill(~mask, floor)
    device = clean_mask.device if isinstance(clean_mask, torch.Tensor) else rows.device
    for name, value in named.items():
        if name == "attention_mask":
            out[name] = mask[None, None].to(device)
        elif name == "position_embeddings" and isinstance(value, (tuple, list)):
            out[name] = tuple(v.index_select(-2, rows.to(v.device)) for v in value)
        elif name in _POSITIONAL_KWARGS and isinstance(value, torch.Tensor):
            out[name] = value.index_select(-1, rows.to(value.device))
        elif isinstance(value, torch.Tensor) and n_tokens in value.shape:
            return None  # a per-token argument we do not know how to rewrite
        else:
            out[name] = value
    return _LayerCall((), out)


class _KeyValueRecorder:
    """Stands in for a KV cache in one clean layer call and keeps the keys / values it is given.

    ``update`` is the one cache call decoder attention makes (transformers' ``Cache.update``)."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, key_states, value_states, layer_idx, *_args, **_kwargs):
        self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        return key_states, value_states


class _CleanPrefix:
    """Stands in for a KV cache holding the clean keys / values of positions < ``start`` of every layer:
    a suffix's queries attend to them, then to the suffix's own (batch-broadcast to the suffix's rows)."""

    def __init__(self, keys: dict[int, torch.Tensor], values: dict[int, torch.Tensor], start: int) -> None:
        self.keys = {i: k[:, :, :start] for i, k in keys.items()}  # [1, H_kv, start, hd]
        self.values = {i: v[:, :, :start] for i, v in values.items()}

    def update(self, key_states, value_states, layer_idx, *_args, **_kwargs):
        batch = key_states.shape[0]
        keys = torch.cat([self.keys[layer_idx].expand(batch, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values[layer_idx].expand(batch, -1, -1, -1), value_states], dim=-2)
        return keys, values


#: on_layer(layer, rows, layer_input, layer_output) receives fp32 [B_active, T, d] tensors; rows are
#: the variant indices (positions in the ``starts`` list) of the batch rows.
LayerCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class Replayer:
    """Re-run decoder layers on batches of edited residual streams, reusing the clean call arguments."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, model_taps: Taps | None = None,
                 logit_positions: Sequence[int] | None = None):
        self.model = model
        self.taps = model_taps or resolve_taps(model)
        self.trace, self._calls = capture(model, input_ids, self.taps, keep_calls=True,
                                          logit_positions=logit_positions)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    def packed(self, positions: torch.Tensor, visible: torch.Tensor) -> Replayer | None:
        """A Replayer over a *packed* sequence: slot a holds clean position ``positions[a]``.

        Several variants of one prompt that share a prefix (the future-effect skips of all splits)
        then run as one sequence: the shared prefix once, each variant's own suffix after it, with
        ``visible`` [N, N] saying which slots a slot may attend to (on top of the clean causal /
        sliding-window mask) and the rotary / position arguments gathered at ``positions``. Returns
        None when the attention implementation or a layer argument cannot be packed exactly.
        """
        implementation = getattr(self.model.config, "_attn_implementation", None)
        if implementation not in _MASKABLE_ATTENTION:
            return None
        positions = positions.long().cpu()
        calls = []
        for layer, call in zip(self.taps.layers, self._calls):
            named = _named_call(layer, call)
            packed = None if named is None else _rewritten_call(named, positions, positions, visible.cpu(),
                                                                self.trace.n_tokens, implementation == "sdpa")
            if packed is None:
                return None
            calls.append(packed)
        view = copy.copy(self)
        view._calls = calls
        return view

    def suffix(self, start: int, stop: int | None = None) -> Replayer | None:
        """A Replayer over clean positions ``start .. stop-1`` only; their queries attend to the clean
        keys / values of positions < ``start`` (recorded once per Replayer) and to the suffix itself.

        Exact by causality for any edit at positions >= ``start``: positions before it are untouched at
        every layer, so their keys and values are the clean ones. Inputs are then [B, stop-start, d].
        None where the attention or a layer argument cannot be rewritten (the caller replays in full).
        """
        n_tokens = self.trace.n_tokens
        stop = n_tokens if stop is None else stop
        if not 0 <= start < stop <= n_tokens:
            raise ValueError(f"suffix {start}..{stop} is outside 0..{n_tokens}")
        implementation = getattr(self.model.config, "_attn_implementation", None)
        if implementation not in _MASKABLE_ATTENTION or not self._record_keys_values():
            return None
        rows, cols = torch.arange(start, stop), torch.arange(stop)
        prefix = _CleanPrefix(self._clean_keys, self._clean_values, start)
        calls = []
        for layer, call in zip(self.taps.layers, self._calls):
            named = _named_call(layer, call)
            rewritten = None if named is None else _rewritten_call(
                named, rows, cols, torch.ones(len(rows), len(cols), dtype=torch.bool), n_tokens,
                implementation == "sdpa")
            if rewritten is None or "past_key_values" not in rewritten.kwargs:
                return None
            rewritten.kwargs["past_key_values"] = prefix
            calls.append(rewritten)
        view = copy.copy(self)
        view._calls = calls
        return view

    @torch.no_grad()
    def _record_keys_values(self) -> bool:
        """Run each layer once on its clean input with a recorder as its cache (one forward's cost).

        False when a layer's attention does not hand its keys / values to the cache, or the recording
        call does not reproduce the clean layer output (then no suffix is built)."""
        if getattr(self, "_clean_keys", None) is not None:
            return bool(self._clean_keys)
        self._clean_keys, self._clean_values = {}, {}
        recorder = _KeyValueRecorder()
        for layer, call in enumerate(self._calls):
            named = _named_call(self.taps.layers[layer], call)
            if named is None or "past_key_values" not in named:
                return False
            out = self.taps.layers[layer](self.trace.resid[layer][None].to(self.device, self.dtype),
                                          **{**named, "past_key_values": recorder})
            clean = self.trace.resid[layer + 1]
            gap = float((first_tensor(out)[0].float().cpu() - clean).abs().max())
            if len(recorder.keys) != layer + 1 or gap > 1e-3 * float(clean.abs().max()):
                return False
        self._clean_keys, self._clean_values = recorder.keys, recorder.values
        return True

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

    ``residual_closure``: max over (l, t) of ‖h_{l+1} − (h_l + a_l + m_l)‖ / ‖h_{l+1}‖;
    ``lens_last_max_abs``: max |lens(h_L) − model logits| (at the positions whose logits the trace kept)
    and ``logit_scale`` max |logits|. Both are
    float rounding for a clean capture; a capture that mixed two runs breaks them (effdepth.checks).
    """
    closure = 0.0
    for layer in range(trace.n_layers):  # one layer at a time: no [L, T, d] temporaries
        target = trace.resid[layer + 1]  # [T, d]
        gap = (target - (trace.resid[layer] + trace.attn[layer] + trace.mlp[layer])).norm(dim=-1)
        closure = max(closure, float((gap / target.norm(dim=-1).clamp_min(1e-30)).max()))
    device = next(model_taps.unembed.parameters()).device
    lens_gap = 0.0
    kept = torch.arange(trace.n_tokens) if trace.logit_positions is None else trace.logit_positions
    with torch.no_grad():
        for start in range(0, len(kept), chunk):  # [chunk, V] at a time (150k vocabularies)
            rows = kept[start:start + chunk]
            z = model_taps.to_logits(trace.resid[-1, rows].to(device)).cpu()
            lens_gap = max(lens_gap, float((z - trace.logits[start:start + chunk]).abs().max()))
    return {"residual_closure": closure, "lens_last_max_abs": lens_gap,
            "logit_scale": float(trace.logits.abs().max()), "dtype": dtype,
            "shape": [trace.n_layers, trace.n_tokens, int(trace.resid.shape[-1])]}
