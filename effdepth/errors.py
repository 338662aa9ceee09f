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
    """The on-disk cache (embedded model files, safetensors copies, result store) is unusable."""


class RunCheckError(EffdepthError):
    """A computed run failed its own checks (residual closure, lens of the last residual, shapes), so
    it is not stored: its numbers cannot be trusted."""


class RunStopped(EffdepthError):
    """A run was stopped before it finished (the stop control, a closed session); nothing was stored."""
