"""Fixtures of the page tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache file for the app (``EFFDEPTH_CACHE``), empty until a test fills it."""
    path = tmp_path / "effdepth.duckdb"
    monkeypatch.setenv("EFFDEPTH_CACHE", str(path))
    return path
