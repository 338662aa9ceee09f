"""effdepth: measure and explore the effective depth of language models (see README.md)."""

__version__ = "0.1.0"
#: Bumped whenever a probe's numbers change, so cached runs computed by older code are not reused.
PROBE_VERSION = "2"

__all__ = ["Run", "probe", "generate", "sweep", "__version__", "PROBE_VERSION"]


def __getattr__(name: str):
    """``effdepth.probe``, ``effdepth.generate``, ``effdepth.sweep`` and ``effdepth.Run`` (effdepth.api), imported
    on first use: the CLI's --help and the store never pay for torch."""
    if name in ("probe", "generate", "sweep", "Run"):
        from effdepth import api

        return getattr(api, name)
    raise AttributeError(f"module 'effdepth' has no attribute {name!r}")
