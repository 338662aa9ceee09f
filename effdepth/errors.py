"""User-facing errors of effdepth.

Every error the app or the CLI is expected to show to a person derives from :class:`EffdepthError`.
Messages are whole sentences that say what went wrong *and* what to do about it, so callers can
print ``str(err)`` as is (no traceback needed).
"""

from __future__ import annotations

__all__ = [
    "EffdepthError",
    "ModelNotFoundError",
    "UnsupportedArchitectureError",
    "ModelTooLargeError",
    "PromptError",
    "CacheError",
    "RunCheckError",
    "RunStopped",
]


class EffdepthError(Exception):
    """Base class of every user-facing effdepth error."""


class ModelNotFoundError(EffdepthError):
    """A model name or path could not be resolved to an embedded model, a directory, a cached hub
    id or a GGUF file."""


class UnsupportedArchitectureError(EffdepthError):
    """The model's architecture (config.model_type) has no tap-point mapping in effdepth.arch."""


class ModelTooLargeError(EffdepthError):
    """Loading the model would need more memory than is available."""


class PromptError(EffdepthError):
    """The prompt cannot be analysed (empty, too long for the model's context, ...)."""


class CacheError(EffdepthError):
    """The on-disk cache (embedded model files, safetensors copies, result store) is unusable.

    ``kind`` says how, for a page to offer the right way out: ``read-only`` (cannot be written), ``locked``
    (another process holds it), ``damaged`` (not a readable cache: it can be moved aside), ``missing`` (a run
    or a file that is not there), ``other``."""

    KINDS = ("read-only", "locked", "damaged", "missing", "other")

    def __init__(self, message: str, kind: str = "other") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown CacheError kind {kind!r}; one of {', '.join(self.KINDS)}")
        super().__init__(message)
        self.kind = kind


class RunCheckError(EffdepthError):
    """A computed run failed its own checks (residual closure, lens of the last residual, shapes), so
    it is not stored: its numbers cannot be trusted."""


class RunStopped(EffdepthError):
    """A run was stopped before it finished (the stop control, a closed session); nothing was stored."""
