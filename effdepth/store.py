"""The result cache: one DuckDB file holding every run (meta row + long tables).

Layout (``SCHEMA_VERSION`` 1):

- ``meta(key, value)``: ``schema_version``;
- ``runs``: one row per run, ``run_id`` primary key, one column per key of ``RunResult.meta``
  (dicts/lists as JSON text, ``created`` as a UTC ``TIMESTAMP``), ``ed_summary`` (JSON
  ``{probe: {ed, edr}}`` for the P1 rules, the proposed rule for skip) and ``meta_json`` (the whole
  meta dict, so ``get`` gives back exactly what the engine produced);
- one long table per name in :data:`effdepth.contract.TABLES`, each with a leading ``run_id`` column.

Concurrency: DuckDB lets only one process open a file read-write, and while it is open no other
process can open it at all. So every operation opens a short-lived connection, does its work in one
transaction and closes it; a lock conflict is retried with exponential backoff and jitter for up to
``lock_timeout`` seconds before :class:`~effdepth.errors.CacheError` is raised. Within one process a
lock per file serialises the threads (Streamlit runs sessions in threads).

Nothing is ever deleted silently: an unreadable file or a schema of another version raises
:class:`CacheError` that names the file and the way out (``effdepth cache --reset`` →
:meth:`Store.move_aside`, which renames the file, it never deletes it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from effdepth import checks, contract
from effdepth.contract import RunResult
from effdepth.errors import CacheError, RunCheckError
from effdepth.records import _dumps, _scalar, _utc_naive, ed_summary

SCHEMA_VERSION = 1
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PROJECT_ROOT / "cache" / "effdepth.duckdb"
ENV_VAR = "EFFDEPTH_CACHE"

#: The long tables (effdepth.contract): (column, DuckDB type, pandas dtype).
TABLE_COLUMNS, TABLES = contract.TABLE_COLUMNS, contract.TABLES

# runs columns: (column, DuckDB type, kind) with kind "json" (JSON text), "time", "int", "bool",
# "float" or "str". Meta keys not listed here get a JSON VARCHAR column when first seen.
RUN_COLUMNS: list[tuple[str, str, str]] = [
    ("model_name", "VARCHAR", "str"), ("model_fingerprint", "VARCHAR", "str"), ("model_kind", "VARCHAR", "str"),
    ("architecture", "VARCHAR", "str"), ("n_layers", "INTEGER", "int"), ("d_model", "INTEGER", "int"),
    ("vocab_size", "INTEGER", "int"), ("dtype", "VARCHAR", "str"), ("tokenizer", "VARCHAR", "str"),
    ("add_bos", "BOOLEAN", "bool"), ("bos_token", "VARCHAR", "str"), ("first_token_is_bos", "BOOLEAN", "bool"),
    ("chat_template", "BOOLEAN", "bool"), ("prompt_text", "VARCHAR", "str"), ("prompt_hash", "VARCHAR", "str"),
    ("n_tokens", "INTEGER", "int"), ("probes", "VARCHAR", "json"), ("probe_config", "VARCHAR", "json"),
    ("splits_used", "VARCHAR", "json"), ("code_version", "VARCHAR", "str"), ("timings", "VARCHAR", "json"),
    ("total_seconds", "DOUBLE", "float"), ("device", "VARCHAR", "str"), ("created", "TIMESTAMP", "time"),
    ("dataset", "VARCHAR", "str"), ("item_index", "INTEGER", "int"),
]
RUNS_LISTING = ["run_id", "model_name", "n_layers", "dtype", "n_tokens", "prompt_text", "probes", "ed_summary",
                "total_seconds", "created", "dataset", "item_index", "architecture", "d_model", "chat_template",
                "first_token_is_bos", "model_kind", "model_fingerprint", "splits_used"]

_LOCK_WORDS = ("could not set lock", "conflicting lock", "lock on file")
_THREAD_LOCKS: dict[str, threading.RLock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def default_path() -> Path:
    """``$EFFDEPTH_CACHE`` if set, else ``<project root>/cache/effdepth.duckdb``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_PATH


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(word in text for word in _LOCK_WORDS)


def _lock_holder(exc: BaseException) -> str:
    match = re.search(r"Conflicting lock is held in (.*?\(PID \d+\))", str(exc))
    return f"held by {match.group(1)}" if match else str(exc).splitlines()[0]


class Store:
    """The DuckDB result cache (see the module docstring)."""

    def __init__(self, path: str | os.PathLike | None = None, lock_timeout: float = 30.0):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.path = self.path.absolute()
        self.lock_timeout = float(lock_timeout)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"Cannot create the cache directory {self.path.parent} ({exc}). "
                             "Use --cache to pick another file.", kind="read-only") from exc
        if self.path.is_dir():
            raise CacheError(f"The cache path {self.path} is a directory; give a file path with --cache.")

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------
    # Read-only caches
    # ------------------------------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether runs can be stored here: the directory takes new files (DuckDB writes a WAL beside
        the cache) and the cache file, if it exists, may be written (access(2): modes, read-only mounts)."""
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            return False
        return not self.path.exists() or os.access(self.path, os.W_OK)

    @property
    def read_only(self) -> bool:
        """An existing cache that cannot be written is opened read-only (for viewing and export)."""
        return self.path.is_file() and self.path.stat().st_size > 0 and not self.writable()

    def check_writable(self) -> None:
        """Raise CacheError before any computing when a result could not be stored."""
        if not self.writable():
            raise CacheError(f"The cache {self.path} is read-only (its file or directory cannot be written), so "
                             "a new result could not be stored: nothing was computed. Cached runs can still be "
                             "viewed and exported. Use --cache (or EFFDEPTH_CACHE) to pick a writable file.",
                             kind="read-only")

    # ------------------------------------------------------------------------------------------
    # Connections
    # ------------------------------------------------------------------------------------------

    def _thread_lock(self) -> threading.RLock:
        with _THREAD_LOCKS_GUARD:
            return _THREAD_LOCKS.setdefault(str(self.path), threading.RLock())

    @property
    def reset_command(self) -> str:
        """The command that moves this cache file aside (always naming the file: a shell may have
        another EFFDEPTH_CACHE or project than the server that reports it)."""
        return f"effdepth cache --reset --cache {shlex.quote(str(self.path))}"

    def _corrupt_error(self, exc: BaseException) -> CacheError:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CacheError(
            f"The cache file {self.path} is not a readable DuckDB cache ({detail}). Nothing was deleted. "
            f"Run `{self.reset_command}` to move it aside (to {self.path.name}.corrupt-<timestamp>) and "
            "start a new cache, or use --cache to pick another file.", kind="damaged")

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect, retrying on lock conflicts for up to ``lock_timeout`` seconds."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        while True:
            try:
                if self.read_only:
                    return duckdb.connect(str(self.path), read_only=True)
                if self.path.is_file() and self.path.stat().st_size == 0:
                    # An empty file holds no data (e.g. from `touch` or a temp file): start a new cache.
                    self.path.unlink()
                return duckdb.connect(str(self.path))
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    if "permission denied" in str(exc).lower():
                        raise CacheError(f"The cache file {self.path} cannot be opened ({exc}). Check its "
                                         "permissions or use --cache to pick another file.",
                                         kind="read-only") from exc
                    raise self._corrupt_error(exc) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CacheError(
                        f"The cache file {self.path} is locked by another process ({_lock_holder(exc)}) for more "
                        f"than {self.lock_timeout:g} s. Close it or use --cache to pick another file.",
                        kind="locked") from exc
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.5)
            except OSError as exc:
                raise CacheError(f"The cache file {self.path} cannot be opened ({exc}). "
                                 "Use --cache to pick another file.") from exc

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh connection with the schema checked, inside one transaction; closed afterwards (lock retry and
        corrupt-file errors included: readers of many runs at once use it for one bulk query)."""
        with self._thread_lock():
            con = self._open()
            try:
                try:
                    con.begin()
                    self._ensure_schema(con)
                    yield con
                    con.commit()
                except BaseException:
                    try:
                        con.rollback()
                    except duckdb.Error:
                        pass
                    raise
            except (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException) as exc:
                raise self._corrupt_error(exc) from exc
            finally:
                con.close()

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        existing = {row[0] for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        self._missing = set(TABLE_COLUMNS) - existing
        if "meta" in existing:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = row[0] if row else None
            if str(version) != str(SCHEMA_VERSION):
                raise CacheError(
                    f"The cache file {self.path} has schema version {version}, this effdepth uses "
                    f"{SCHEMA_VERSION}. Nothing was changed. Run `{self.reset_command}` to move it aside and "
                    "start a new cache, or use --cache to pick another file.", kind="damaged")
        elif existing:
            raise CacheError(
                f"The cache file {self.path} is a DuckDB database but not an effdepth cache (tables: "
                f"{', '.join(sorted(existing))}). Nothing was changed. Use --cache to pick another file, or "
                f"`{self.reset_command}` to move it aside.", kind="damaged")
        else:
            con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        if self.read_only:
            if "runs" not in existing:
                raise CacheError(f"The read-only cache file {self.path} holds no runs table; nothing to show.",
                                 kind="read-only")
            return  # viewing only: tables an older cache lacks read as empty
        if "runs" not in existing:
            cols = ", ".join(f"{_quote(c)} {t}" for c, t, _ in RUN_COLUMNS)
            con.execute(f"CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, {cols}, ed_summary VARCHAR, "
                        "meta_json VARCHAR NOT NULL)")
        for name, columns in TABLE_COLUMNS.items():
            if name not in existing:
                cols = ", ".join(f"{_quote(c)} {t}" for c, t, _ in columns)
                con.execute(f"CREATE TABLE {_quote(name)} (run_id VARCHAR NOT NULL, {cols})")

    @staticmethod
    def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        return [row[0] for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
            "ORDER BY ordinal_position", [table]).fetchall()]

    # ------------------------------------------------------------------------------------------
    # Writing
    # ------------------------------------------------------------------------------------------

    def put(self, result: RunResult) -> None:
        """Store a run (all tables in one transaction; an existing run with the same id is replaced).

        A run that fails its own checks (``effdepth.checks``) is refused with RunCheckError."""
        run_id = str(result.run_id)
        meta = dict(result.meta)
        frames = {name: result.tables[name] for name in TABLES}
        self.check_writable()
        found = checks.problems(meta, frames)
        if found:
            raise RunCheckError(f"Run {run_id} of {meta.get('model_name')} failed its own checks and was not "
                                f"stored: {'; '.join(found)}. Its numbers cannot be trusted; please report it.")
        meta_json = _dumps(meta)
        summary = _dumps(ed_summary(frames["ed"]))
        with self.transaction() as con:
            known = {c for c, _, _ in RUN_COLUMNS}
            run_cols = set(self._columns(con, "runs"))
            extra_keys = [k for k in meta if k != "run_id" and k not in known]
            for key in extra_keys:
                if key not in run_cols:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {_quote(key)} VARCHAR")
            names, values = ["run_id", "ed_summary", "meta_json"], [run_id, summary, meta_json]
            for column, _, kind in RUN_COLUMNS:
                if column not in meta:
                    continue
                value = meta[column]
                if kind == "json":
                    value = _dumps(value)
                elif kind == "time":
                    value = _utc_naive(value)
                else:
                    value = _scalar(value)
                names.append(column)
                values.append(value)
            for key in extra_keys:
                names.append(key)
                values.append(None if meta[key] is None else _dumps(meta[key]))
            self._delete(con, run_id)
            con.execute(f"INSERT INTO runs ({', '.join(_quote(n) for n in names)}) "
                        f"VALUES ({', '.join('?' for _ in names)})", values)
            for name, frame in frames.items():
                self._insert(con, name, run_id, frame)

    def _insert(self, con: duckdb.DuckDBPyConnection, name: str, run_id: str, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        table_cols = self._columns(con, name)
        types = {c: t for c, t, _ in TABLE_COLUMNS[name]}
        frame = frame.reset_index(drop=True)
        for column in frame.columns:
            if not isinstance(column, str) or column == "run_id":
                raise ValueError(f"table {name}: column name {column!r} cannot be stored")
            if column not in table_cols:
                con.execute(f"ALTER TABLE {_quote(name)} ADD COLUMN {_quote(column)} "
                            f"{self._duck_type(frame[column])}")
        view = f"_effdepth_{name}"
        con.register(view, frame)
        try:
            cols = [c for c in frame.columns]
            select = ", ".join(f"CAST({_quote(c)} AS {types[c]})" if c in types else _quote(c) for c in cols)
            con.execute(f"INSERT INTO {_quote(name)} (run_id, {', '.join(_quote(c) for c in cols)}) "
                        f"SELECT ?, {select} FROM {view}", [run_id])
        finally:
            con.unregister(view)

    @staticmethod
    def _duck_type(series: pd.Series) -> str:
        if pd.api.types.is_bool_dtype(series):
            return "BOOLEAN"
        if pd.api.types.is_integer_dtype(series):
            return "BIGINT"
        if pd.api.types.is_float_dtype(series):
            return "DOUBLE"
        return "VARCHAR"

    @staticmethod
    def _delete(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
        found = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] > 0
        for name in TABLES:
            con.execute(f"DELETE FROM {_quote(name)} WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
        return found

    def delete(self, run_id: str) -> bool:
        """Remove a run; True if it was there."""
        with self.transaction() as con:
            return self._delete(con, str(run_id))

    # ------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------

    def has(self, run_id: str) -> bool:
        with self.transaction() as con:
            return con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [str(run_id)]).fetchone()[0] > 0

    def _read_table(self, con: duckdb.DuckDBPyConnection, name: str, run_id: str) -> pd.DataFrame:
        if name in getattr(self, "_missing", ()):
            return pd.DataFrame({c: pd.Series(dtype=d) for c, _, d in TABLE_COLUMNS[name]})
        frame = con.execute(f"SELECT * FROM {_quote(name)} WHERE run_id = ? ORDER BY rowid",
                            [run_id]).df().drop(columns="run_id")
        base = TABLE_COLUMNS[name]
        base_names = [c for c, _, _ in base]
        extra = [c for c in frame.columns if c not in base_names and frame[c].notna().any()]
        frame = frame[base_names + extra]
        for column, _, dtype in base:
            series = frame[column]
            if dtype == "int64" and series.isna().any():
                dtype = "Int64"
            frame[column] = series.astype(dtype)
        return frame.reset_index(drop=True)

    def get(self, run_id: str) -> RunResult | None:
        """The stored run, with ``meta`` exactly as put and tables in the engine's dtypes; None if absent."""
        run_id = str(run_id)
        with self.transaction() as con:
            row = con.execute("SELECT meta_json FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if row is None:
                return None
            tables = {name: self._read_table(con, name, run_id) for name in TABLES}
        return RunResult(meta=json.loads(row[0]), tables=tables)

    def table(self, run_id: str, name: str) -> pd.DataFrame:
        """One long table of a run (empty frame with the right columns if the run or table is empty)."""
        if name not in TABLE_COLUMNS:
            raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
        with self.transaction() as con:
            return self._read_table(con, name, str(run_id))

    def meta(self, run_id: str) -> dict | None:
        """Only the meta dict of a run (cheap)."""
        with self.transaction() as con:
            row = con.execute("SELECT meta_json FROM runs WHERE run_id = ?", [str(run_id)]).fetchone()
        return None if row is None else json.loads(row[0])

    def same_input(self, fingerprint: str, dtype: str, text_hash: str, chat_template: bool) -> list[str]:
        """Run ids of one model (fingerprint), dtype and text (``engine.prompt_hash``), newest first: the
        runs whose probes a new run on that input may take instead of computing them."""
        with self.transaction() as con:
            rows = con.execute("SELECT run_id FROM runs WHERE model_fingerprint = ? AND dtype = ? AND prompt_hash = ? "
                               "AND coalesce(chat_template, false) = ? ORDER BY created DESC NULLS LAST, run_id",
                               [fingerprint, dtype, text_hash, bool(chat_template)]).fetchall()
        return [row[0] for row in rows]

    def runs(self) -> pd.DataFrame:
        """All runs, newest first: run_id, model_name, n_layers, dtype, n_tokens, prompt_text, probes (list),
        ed_summary (dict), total_seconds, created (UTC), dataset, item_index, and a few more."""
        with self.transaction() as con:
            cols = ", ".join(_quote(c) for c in RUNS_LISTING)
            frame = con.execute(f"SELECT {cols} FROM runs ORDER BY created DESC NULLS LAST, run_id").df()
        for column in ("probes", "ed_summary", "splits_used"):
            frame[column] = [json.loads(v) if isinstance(v, str) else None for v in frame[column]]
        for column in ("n_layers", "n_tokens", "item_index", "d_model"):
            frame[column] = frame[column].astype("Int64")
        return frame

    def __len__(self) -> int:
        with self.transaction() as con:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])

    def get_or_compute(self, run_id: str, compute: Callable[[], RunResult]) -> tuple[RunResult, bool]:
        """(result, from_cache): the cached run if there is one (``compute`` is not called), else
        ``compute()``, stored before it is returned."""
        cached = self.get(run_id)
        if cached is not None:
            return cached, True
        result = compute()
        self.put(result)
        return result, False

    # ------------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------------

    def _export_frames(self, run_id: str) -> dict[str, pd.DataFrame]:
        run_id = str(run_id)
        with self.transaction() as con:
            meta = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
            if not len(meta):
                raise CacheError(f"No run {run_id!r} in the cache {self.path}. `effdepth runs` lists the runs.",
                                 kind="missing")
            frames = {"meta": meta}
            for name in TABLES:
                frame = self._read_table(con, name, run_id)
                frame.insert(0, "run_id", run_id)
                frames[name] = frame
        return frames

    def export_parquet(self, run_id: str, directory: str | os.PathLike) -> list[Path]:
        """Write ``meta.parquet`` (the runs row) and one ``<table>.parquet`` per table into ``directory``."""
        return self._export(run_id, directory, "parquet")

    def export_csv(self, run_id: str, directory: str | os.PathLike) -> list[Path]:
        """Write ``meta.csv`` (the runs row) and one ``<table>.csv`` per table into ``directory``."""
        return self._export(run_id, directory, "csv")

    def _export(self, run_id: str, directory: str | os.PathLike, fmt: str) -> list[Path]:
        frames = self._export_frames(run_id)
        out = Path(directory).expanduser()
        try:
            out.mkdir(parents=True, exist_ok=True)
            paths = []
            for name, frame in frames.items():
                path = out / f"{name}.{fmt}"
                if fmt == "parquet":
                    frame.to_parquet(path, index=False)
                else:
                    frame.to_csv(path, index=False)
                paths.append(path)
        except OSError as exc:
            raise CacheError(f"Cannot write the export to {out} ({exc}).") from exc
        return paths

    # ------------------------------------------------------------------------------------------
    # Recovery
    # ------------------------------------------------------------------------------------------

    def move_aside(self) -> Path | None:
        """Rename the cache file (and its WAL) to ``<name>.corrupt-<timestamp>`` so that the next
        operation starts a new cache; returns the new path (None if there was no file). Refuses while
        another process has the file open. Nothing is deleted."""
        with self._thread_lock():
            if not self.path.exists():
                return None
            try:
                duckdb.connect(str(self.path)).close()
            except duckdb.Error as exc:
                if _is_lock_error(exc):
                    raise CacheError(f"The cache file {self.path} is locked by another process "
                                     f"({_lock_holder(exc)}); close it before resetting the cache.",
                                     kind="locked") from exc
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            n = 1
            while target.exists():
                n += 1
                target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            try:
                os.replace(self.path, target)
                wal = self.path.with_name(self.path.name + ".wal")
                if wal.exists():
                    os.replace(wal, target.with_name(target.name + ".wal"))
            except OSError as exc:
                raise CacheError(f"Could not move {self.path} aside ({exc}).") from exc
            return target
