"""The ``effdepth`` command line (also ``python -m effdepth``).

Commands: ``probe`` (run the probes on one text, cached), ``runs`` (list cached runs), ``export``
(parquet/CSV files of one run), ``cache`` (show / ``--reset`` the cache file) and ``install-default``
(install and convert the default embedded model; what ``make setup`` runs) and ``sweep`` (many
benchmark items, resumable, with aggregates).

User-facing errors (:class:`effdepth.errors.EffdepthError`) are printed as ``error: <message>`` on
stderr with exit code 2 and no traceback. Heavy modules (torch, transformers) are imported only by
the commands that need them, so ``--help``, ``runs`` and ``export`` start quickly.

The room: ``main`` (parser, entry point) -> ``commands`` (one run, the cache), ``sweep`` (many items)
-> ``inputs`` (reading text and options), ``report`` (summary and JSON), ``progress`` (tqdm bars).
"""

from effdepth.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
