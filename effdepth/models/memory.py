"""Will the model fit? Parameter counts, the memory a dtype needs, and what RAM / the accelerator has."""

from __future__ import annotations

from typing import Any

from effdepth.errors import ModelTooLargeError
from effdepth.models.files import _weight_files
from effdepth.models.registry import _DTYPES
from effdepth.models.resolve import ModelSpec, _copy_valid


def available_memory_bytes() -> int:
    """Memory available for new allocations (psutil, else /proc/meminfo MemAvailable)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not block


def count_parameters(config) -> int:
    """Number of parameters of the CausalLM described by ``config`` (built on the meta device)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _param_count(spec: ModelSpec) -> int:
    if spec.embedded is not None:
        return spec.embedded.n_params
    try:
        return count_parameters(spec.config)
    except Exception:  # unknown to AutoModelForCausalLM from config: fall back to file sizes
        if spec.gguf_path is not None and spec.gguf_path.is_file():
            return spec.gguf_path.stat().st_size * 2  # ~4.5 bits per weight
        return sum(p.stat().st_size for p in _weight_files(spec.path)) // 2  # assume 16-bit weights


def estimate_memory_bytes(spec: ModelSpec, dtype: str = "float32", dequantise: bool | None = None) -> int:
    """Peak RAM needed to load ``spec`` in ``dtype``.

    Loading from safetensors needs about the weights once (+20 %) plus the interpreter; dequantising a
    GGUF holds the float32 weights and numpy staging copies (measured peak RSS: 1.1 / 2.6 / 3.9 / 8.8 GB
    for the four embedded models, i.e. about 1.25x the float32 size + 0.6-1 GB).
    """
    n_params = _param_count(spec)
    if dequantise is None:
        dequantise = spec.kind == "gguf" or (spec.kind == "embedded" and not _copy_valid(spec.name))
    per_param = 2 if _DTYPES.get(dtype, dtype) == "bfloat16" else 4
    need = int(n_params * per_param * 1.2) + (512 << 20)
    if dequantise:
        need = max(need, int(n_params * 4 * 1.4) + (1 << 30))
    return need


def accelerator_memory_bytes() -> int:
    """Free memory summed over the visible CUDA devices (0 without any)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return 0
        return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no usable accelerator
        return 0


def _check_memory(spec: ModelSpec, dtype: str, device_map: Any = None) -> None:
    """Refuse before loading when the weights cannot fit: RAM alone, or RAM + GPUs with device_map="auto"."""
    need = estimate_memory_bytes(spec, dtype)
    available = available_memory_bytes()
    where = "RAM"
    if device_map == "auto":
        available += accelerator_memory_bytes()
        where = "RAM + GPU memory (device_map=auto)"
    if need > available:
        gib = 1 << 30
        hint = " Try bfloat16, which halves the memory," if dtype == "float32" else ""
        raise ModelTooLargeError(
            f"{spec.display} needs about {need / gib:.1f} GiB of memory to load in {dtype}, but only "
            f"{available / gib:.1f} GiB of {where} is available.{hint} Close other programs or pick a "
            "smaller model."
        )
