"""A run's meta as a row of the store's runs table: JSON-safe values, plain scalars, naive UTC
timestamps, and the ED summary (P1's rules, the proposed rule for skip) shown in run listings."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from typing import Any

import pandas as pd


def _jsonable(value: Any) -> Any:
    """``json.dumps`` default hook: numpy scalars, tuples, paths, datetimes."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_jsonable, sort_keys=False)


def _scalar(value: Any) -> Any:
    """A Python scalar for a DuckDB parameter (numpy → Python, NaN → None)."""
    if value is None:
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _utc_naive(created: Any) -> datetime:
    """``created`` (ISO string or datetime) as a naive UTC datetime; now if missing or unreadable."""
    if isinstance(created, str):
        try:
            created = datetime.fromisoformat(created)
        except ValueError:
            created = None
    if not isinstance(created, datetime):
        created = datetime.now(timezone.utc)
    if created.tzinfo is not None:
        created = created.astimezone(timezone.utc).replace(tzinfo=None)
    return created


def ed_summary(ed: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{probe: {ed, edr}} for the P1 rule of each probe (skip: its proposed rule); None = no transition."""
    summary: dict[str, dict[str, Any]] = {}
    if ed is None or not len(ed):
        return summary
    for row in ed.itertuples(index=False):
        probe, rule = str(row.probe), str(row.rule)
        if rule == "guarded" or (probe in summary and rule != "p1"):
            continue
        value, ratio = _scalar(row.ed), _scalar(row.edr)
        summary[probe] = {"ed": None if value is None else int(value),
                          "edr": None if ratio is None else float(ratio)}
    return summary
