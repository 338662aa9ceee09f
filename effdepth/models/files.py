"""Weight files: fingerprints, and the checks that refuse a bad file before any loader reads it.

A GGUF header is walked field by field; a weight index must point at shards that exist and are not
pickles; a directory must hold weights at all.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from pathlib import Path

from effdepth.contract import Progress
from effdepth.errors import ModelNotFoundError
from effdepth.models.registry import _report

_SAMPLE = 1 << 20  # 1 MiB: the size of each sampled block in fingerprints


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


def _ggml_blocks() -> dict[int, tuple[int, int]]:
    """ggml type id -> (elements per block, bytes per block), from the pinned ``gguf`` package."""
    import gguf

    return {int(kind): (int(per), int(size)) for kind, (per, size) in gguf.GGML_QUANT_SIZES.items()}


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
    end, blocks = 0, _ggml_blocks()
    unknown = sorted({ggml_type for _, ggml_type, _ in tensors} - set(blocks))
    if unknown:
        raise ModelNotFoundError(f"{path} holds tensors of ggml type {', '.join(map(str, unknown))}, which the "
                                 "installed gguf package does not know, so neither effdepth nor transformers can read "
                                 "them. Re-convert the model to a common type (e.g. Q8_0, F16).")
    for dims, ggml_type, offset in tensors:
        elements, (per_block, block_bytes) = 1, blocks[ggml_type]
        for d in dims:
            elements *= d
        end = max(end, data_start + offset + max(-(-elements // per_block) * block_bytes, 1))
    if end > size:
        raise _gguf_error(path, f"it is {size} bytes long but its tensors need {end}: the file is truncated")


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
