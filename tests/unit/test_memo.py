"""The one memo and the cache stamp that covers DuckDB's WAL."""

from __future__ import annotations

from effdepth.memo import Memo, store_stamp
from effdepth.store import Store


def test_memo_builds_once_evicts_the_oldest_and_keeps_no_none():
    memo, calls = Memo(size=2), []

    def build(value):
        def make():
            calls.append(value)
            return value
        return make

    assert memo.get("a", build(1)) == 1 and memo.get("a", build(99)) == 1
    memo.get("b", build(2))
    memo.get("a", build(99))  # a is now the most recent
    memo.get("c", build(3))  # b goes
    assert memo.get("b", build(4)) == 4 and calls == [1, 2, 3, 4]
    assert memo.get("n", build(None)) is None and memo.get("n", build(5)) == 5


def test_the_stamp_changes_with_every_write_including_the_wal(tmp_path, word_model):
    from effdepth import engine

    store = Store(tmp_path / "c.duckdb")
    before = store_stamp(store)
    result = engine.run_probes(word_model, "w1 w2 w3 w4 w5", engine.ProbeConfig(probes=("cosine",)))
    store.put(result)
    after_put = store_stamp(store)
    assert after_put != before
    store.delete(result.run_id)
    assert store_stamp(store) != after_put
    wal = tmp_path / "c.duckdb.wal"
    wal.write_bytes(b"x" * 7)  # a write that only reached the WAL so far
    assert store_stamp(store)[2] == (wal.stat().st_mtime_ns, 7)
