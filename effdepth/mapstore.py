"""Linear maps in the DuckDB cache, beside the runs (docs/SPEC.md §15.1): one row per fitted pair, keyed by
``linear.map_key``, holding the map's meta and its (L_A+1) × (L_B+1) error matrix as JSON.

The table is made on the first map stored; a cache without it (older, or read-only) lists no maps.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb
import numpy as np
import pandas as pd

from effdepth.contract import LinearMap
from effdepth.records import _dumps, _utc_naive

TABLE = "linear_maps"
#: the columns a listing shows, first to last (the rest stays in ``meta_json``)
LISTING = ["map_id", "source_name", "target_name", "source_dtype", "target_dtype", "n_fit_tokens", "n_held_tokens",
           "seconds", "created", "source_fingerprint", "target_fingerprint"]
_CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (map_id VARCHAR PRIMARY KEY, source_name VARCHAR, "
           "target_name VARCHAR, source_dtype VARCHAR, target_dtype VARCHAR, n_fit_tokens INTEGER, "
           "n_held_tokens INTEGER, seconds DOUBLE, created TIMESTAMP, source_fingerprint VARCHAR, "
           "target_fingerprint VARCHAR, meta_json VARCHAR NOT NULL, error_json VARCHAR NOT NULL)")


def _has_table(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND "
                            "table_name = ?", [TABLE]).fetchone()[0])


def put_map(store, linear_map: LinearMap) -> None:
    """Store (or replace) one fitted map."""
    store.check_writable()
    meta = dict(linear_map.meta)
    meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    row = [meta["map_id"], meta["source_name"], meta["target_name"], meta["source_dtype"], meta["target_dtype"],
           int(meta["n_fit_tokens"]), int(meta["n_held_tokens"]), float(meta.get("seconds") or 0.0),
           _utc_naive(meta["created"]), meta.get("source_fingerprint"), meta.get("target_fingerprint"), _dumps(meta),
           json.dumps(np.asarray(linear_map.error).tolist())]
    with store.transaction() as con:
        con.execute(_CREATE)
        con.execute(f"DELETE FROM {TABLE} WHERE map_id = ?", [meta["map_id"]])
        con.execute(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * len(row))})", row)


def get_map(store, map_id: str) -> LinearMap | None:
    """A stored map, None when the cache has no such map."""
    if not store.path.exists():
        return None
    with store.transaction() as con:
        if not _has_table(con):
            return None
        row = con.execute(f"SELECT meta_json, error_json FROM {TABLE} WHERE map_id = ?", [map_id]).fetchone()
    if row is None:
        return None
    return LinearMap(meta=json.loads(row[0]), error=np.asarray(json.loads(row[1]), dtype=float))


def maps(store) -> pd.DataFrame:
    """Every stored map, newest first (columns ``LISTING``)."""
    if not store.path.exists():
        return pd.DataFrame(columns=LISTING)
    with store.transaction() as con:
        if not _has_table(con):
            return pd.DataFrame(columns=LISTING)
        frame = con.execute(f"SELECT {', '.join(LISTING)} FROM {TABLE} ORDER BY created DESC").fetchdf()
    return frame


def delete_map(store, map_id: str) -> bool:
    """Remove one stored map; False when there was none."""
    store.check_writable()
    with store.transaction() as con:
        if not _has_table(con):
            return False
        found = con.execute(f"SELECT count(*) FROM {TABLE} WHERE map_id = ?", [map_id]).fetchone()[0]
        con.execute(f"DELETE FROM {TABLE} WHERE map_id = ?", [map_id])
    return bool(found)
