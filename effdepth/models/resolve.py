"""From a name the user typed to a :class:`ModelSpec` (embedded name, local directory, HF cache id,
GGUF file), and the cheap stamp of the files behind a name that tells a held model is stale.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effdepth.errors import (
    EffdepthError,
    ModelNotFoundError,
    UnsupportedArchitectureError,
)
from effdepth.models.files import (
    _GGUF_ERRORS,
    _check_dir_weights,
    _check_gguf,
    _dir_fingerprint,
    _dir_tokenizer_id,
    _exc_detail,
    _gguf_error,
    _gguf_fingerprint,
)
from effdepth.models.install import ensure_embedded
from effdepth.models.registry import (
    _COPY_MARKER,
    EMBEDDED,
    EmbeddedModel,
    _accepted_forms,
    _transformers_version,
    model_cache_dir,
)


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
