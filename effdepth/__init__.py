"""effdepth: measure and explore the effective depth of language models (see README.md)."""

__version__ = "0.1.0"
#: Bumped whenever a probe's numbers change, so cached runs computed by older code are not reused.
PROBE_VERSION = "2"
