"""The DuckDB result cache: round trips, concurrency between processes, locks and corrupt files."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from effdepth import engine
from effdepth import store as store_mod
from effdepth.errors import CacheError
from effdepth.store import SCHEMA_VERSION, Store

WORDS = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(61)]
TEXT = " ".join(f"w{i}" for i in range(20))  # 21 tokens with <s>


def tiny_model_dir(directory: Path, max_positions: int = 64, seed: int = 0) -> Path:
    """Save a random 3-layer llama and a WordLevel tokenizer (adds <s>) to ``directory``."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=64, max_position_embeddings=max_positions,
                            bos_token_id=1, eos_token_id=2)
    tf.LlamaForCausalLM(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from effdepth.models import load_model

    return load_model(str(tiny_model_dir(tmp_path_factory.mktemp("tiny") / "llama")))


@pytest.fixture(scope="module")
def result(loaded):
    return engine.run_probes(loaded, TEXT)


@pytest.fixture
def cache(tmp_path):
    return Store(tmp_path / "cache.duckdb")


def with_id(result: engine.RunResult, run_id: str, **meta) -> engine.RunResult:
    return engine.RunResult(meta={**result.meta, "run_id": run_id, **meta}, tables=dict(result.tables))


def assert_same_run(got: engine.RunResult, want: engine.RunResult) -> None:
    assert got.meta == want.meta
    assert {k: type(v) for k, v in got.meta.items()} == {k: type(v) for k, v in want.meta.items()}
    assert list(got.tables) == list(want.tables)
    for name, frame in want.tables.items():
        # The engine's empty placeholder frames (and an all-None edr) have object columns; the store
        # gives them their proper dtypes.
        objects = [c for c in frame.columns if frame[c].dtype == object]
        if len(frame) and objects:
            frame = frame.astype({c: got.tables[name][c].dtype for c in objects})
        pd.testing.assert_frame_equal(got.tables[name], frame, check_dtype=len(frame) > 0, obj=name)


def test_round_trip(cache, result):
    assert cache.get(result.run_id) is None and not cache.has(result.run_id)
    cache.put(result)
    assert cache.has(result.run_id)
    got = cache.get(result.run_id)
    assert_same_run(got, result)
    assert got.tables["ed"]["ed"].dtype == "Int64"
    pd.testing.assert_frame_equal(cache.table(result.run_id, "skip"), result.tables["skip"])
    with pytest.raises(ValueError):
        cache.table(result.run_id, "nope")


def test_round_trip_nullable_ints_and_extra_meta(cache, result):
    ed = result.tables["ed"].copy()
    ed.loc[0, "ed"] = pd.NA
    ed.loc[0, "edr"] = float("nan")
    ed.loc[1, "ed"] = 2
    run = engine.RunResult(meta={**result.meta, "run_id": "nullable", "dataset": "gsm8k", "item_index": 3,
                                 "extra_info": {"a": [1, 2], "b": None}},
                           tables={**result.tables, "ed": ed})
    cache.put(run)
    got = cache.get("nullable")
    assert_same_run(got, run)
    assert got.tables["ed"]["ed"].isna().iloc[0] and got.tables["ed"]["ed"].iloc[1] == 2
    listing = cache.runs().set_index("run_id")
    assert listing.loc["nullable", "dataset"] == "gsm8k" and listing.loc["nullable", "item_index"] == 3


def test_round_trip_partial_probes(cache, loaded):
    run = engine.run_probes(loaded, TEXT, engine.ProbeConfig(probes=("cosine",)))
    assert len(run.tables["skip"]) == 0
    cache.put(run)
    assert_same_run(cache.get(run.run_id), run)


def test_reput_replaces_atomically(cache, result):
    cache.put(result)
    shorter = engine.RunResult(meta={**result.meta, "prompt_text": "changed"},
                               tables={**result.tables, "skip": result.tables["skip"].iloc[:10]})
    cache.put(shorter)
    got = cache.get(result.run_id)
    assert got.meta["prompt_text"] == "changed" and len(got.tables["skip"]) == 10
    assert len(cache) == 1
    for name, frame in result.tables.items():  # no rows left over from the first put
        assert len(cache.table(result.run_id, name)) == len(shorter.tables[name])


def test_put_failure_leaves_nothing(cache, result):
    bad = dict(result.tables)
    bad["lens_topk"] = result.tables["lens_topk"].assign(prob="not a number")  # the cast fails mid-put
    with pytest.raises(duckdb.Error):
        cache.put(engine.RunResult(meta={**result.meta, "run_id": "broken"}, tables=bad))
    assert not cache.has("broken")
    assert len(cache.table("broken", "layer_token")) == 0


def test_get_or_compute(cache, result):
    calls = []

    def compute():
        calls.append(1)
        return result

    got, from_cache = cache.get_or_compute(result.run_id, compute)
    assert (got is result, from_cache, len(calls)) == (True, False, 1)

    def boom():
        raise AssertionError("compute must not be called for a cached run")

    got, from_cache = cache.get_or_compute(result.run_id, boom)
    assert from_cache
    assert_same_run(got, result)


def test_runs_listing_newest_first(cache, result):
    cache.put(with_id(result, "older", created="2024-01-01T00:00:00+00:00"))
    cache.put(with_id(result, "newer", created="2025-06-01T12:00:00+02:00"))
    listing = cache.runs()
    for column in ("run_id", "model_name", "n_layers", "dtype", "n_tokens", "prompt_text", "probes", "ed_summary",
                   "total_seconds", "created", "dataset", "item_index"):
        assert column in listing.columns
    assert list(listing["run_id"]) == ["newer", "older"]
    row = listing.iloc[0]
    assert row["created"] == pd.Timestamp("2025-06-01 10:00:00")  # UTC
    assert row["prompt_text"] == TEXT and row["n_tokens"] == result.meta["n_tokens"]
    assert row["probes"] == ["cosine", "logit_lens", "skip"]
    ed = result.tables["ed"]
    for probe, entry in row["ed_summary"].items():
        want = ed[(ed["probe"] == probe) & (ed["rule"] != "guarded")].iloc[0]
        assert entry["ed"] == (None if pd.isna(want["ed"]) else int(want["ed"]))
    assert set(row["ed_summary"]) == {"cosine", "kl", "overlap", "skip"}


def test_delete(cache, result):
    cache.put(result)
    cache.put(with_id(result, "other"))
    assert cache.delete(result.run_id)
    assert cache.get(result.run_id) is None and not cache.has(result.run_id)
    assert len(cache.table(result.run_id, "layer_token")) == 0
    assert not cache.delete(result.run_id)
    assert cache.has("other") and len(cache) == 1


def test_export_parquet_and_csv(cache, result, tmp_path):
    cache.put(result)
    paths = cache.export_parquet(result.run_id, tmp_path / "pq")
    assert sorted(p.name for p in paths) == sorted(["meta.parquet"] + [f"{t}.parquet" for t in engine.TABLES])
    meta = pd.read_parquet(tmp_path / "pq" / "meta.parquet")
    assert list(meta["run_id"]) == [result.run_id] and meta["n_tokens"].iloc[0] == result.meta["n_tokens"]
    for name, frame in result.tables.items():
        back = pd.read_parquet(tmp_path / "pq" / f"{name}.parquet")
        assert (back["run_id"] == result.run_id).all()
        pd.testing.assert_frame_equal(back.drop(columns="run_id"), frame, check_dtype=False, obj=name)
    csv_paths = cache.export_csv(result.run_id, tmp_path / "csv")
    assert len(csv_paths) == len(paths)
    back = pd.read_csv(tmp_path / "csv" / "layer.csv")
    assert len(back) == len(result.tables["layer"])
    with pytest.raises(CacheError, match="No run"):
        cache.export_parquet("does-not-exist", tmp_path / "x")


def test_default_path_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("EFFDEPTH_CACHE", raising=False)
    assert Store().path == Path(store_mod.__file__).resolve().parent.parent / "cache" / "effdepth.duckdb"
    monkeypatch.setenv("EFFDEPTH_CACHE", str(tmp_path / "sub" / "c.duckdb"))
    assert Store().path == tmp_path / "sub" / "c.duckdb"
    assert (tmp_path / "sub").is_dir()


def test_empty_file_starts_a_new_cache(tmp_path, result):
    path = tmp_path / "empty.duckdb"
    path.touch()
    cache = Store(path)
    cache.put(result)
    assert cache.has(result.run_id)


# --------------------------------------------------------------------------------------------------
# Unreadable files, schema versions, locks
# --------------------------------------------------------------------------------------------------


def test_corrupt_file_raises_and_is_untouched(tmp_path, result):
    path = tmp_path / "cache.duckdb"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    cache = Store(path)
    for call in (cache.runs, lambda: cache.get("x"), lambda: cache.put(result)):
        with pytest.raises(CacheError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "not a readable DuckDB cache" in message
        assert "Nothing was deleted" in message and "effdepth cache --reset" in message
    assert path.read_bytes() == garbage

    moved = cache.move_aside()
    assert moved is not None and moved.name.startswith("cache.duckdb.corrupt-")
    assert moved.read_bytes() == garbage and not path.exists()
    cache.put(result)  # a fresh cache
    assert cache.has(result.run_id) and moved.read_bytes() == garbage
    assert Store(tmp_path / "missing.duckdb").move_aside() is None


def test_truncated_file_raises(tmp_path, result):
    path = tmp_path / "cache.duckdb"
    cache = Store(path)
    cache.put(result)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CacheError, match="not a readable DuckDB cache"):
        cache.get(result.run_id)
    assert path.stat().st_size == len(data) // 3


def test_schema_version_mismatch(tmp_path, result):
    path = tmp_path / "cache.duckdb"
    Store(path).put(result)
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(CacheError, match="--reset") as info:
        Store(path).runs()
    assert "999" in str(info.value) and str(SCHEMA_VERSION) in str(info.value)
    with duckdb.connect(str(path)) as con:  # nothing dropped
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_foreign_duckdb_file(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE precious (x INTEGER)")
    with pytest.raises(CacheError, match="not an effdepth cache"):
        Store(path).runs()
    with duckdb.connect(str(path)) as con:
        assert con.execute("SELECT count(*) FROM precious").fetchone()[0] == 0


HOLD_LOCK = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_lock_held_longer_than_timeout(tmp_path, result):
    path = tmp_path / "cache.duckdb"
    Store(path).put(result)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        cache = Store(path, lock_timeout=1)
        start = time.monotonic()
        with pytest.raises(CacheError) as info:
            cache.runs()
        elapsed = time.monotonic() - start
        assert "locked" in str(info.value) and "--cache" in str(info.value) and str(path) in str(info.value)
        assert 0.9 <= elapsed < 10
        with pytest.raises(CacheError, match="locked"):
            cache.move_aside()
        assert path.exists()
    finally:
        holder.kill()
        holder.wait()
    assert Store(path, lock_timeout=5).has(result.run_id)  # free again


def test_waits_for_a_short_lock(tmp_path, result):
    path = tmp_path / "cache.duckdb"
    Store(path).put(result)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        start = time.monotonic()
        assert Store(path, lock_timeout=20).has(result.run_id)
        assert time.monotonic() - start > 0.5  # it did wait for the holder
    finally:
        holder.kill()
        holder.wait()


WRITER = """
import pickle, sys
from effdepth.engine import RunResult
from effdepth.store import Store
path, src, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(src, "rb") as fh:
    base = pickle.load(fh)
store = Store(path, lock_timeout=60)
for i in range(n):
    store.put(RunResult(meta={**base.meta, "run_id": f"{prefix}-{i}"}, tables=base.tables))
print("done", flush=True)
"""

READER = """
import os, sys, time
from effdepth.store import Store
path, stop = sys.argv[1], sys.argv[2]
store = Store(path, lock_timeout=60)
reads = 0
while not os.path.exists(stop):
    store.runs()
    reads += 1
    time.sleep(0.05)
print(reads, len(store.runs()), flush=True)
"""


def test_two_writer_processes_and_a_reader(tmp_path, result):
    path, src, stop = tmp_path / "cache.duckdb", tmp_path / "run.pkl", tmp_path / "stop"
    src.write_bytes(pickle.dumps(result))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def spawn(script, *args):
        return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    reader = spawn(READER, path, stop)
    writers = [spawn(WRITER, path, src, prefix, 15) for prefix in ("a", "b")]
    try:
        outs = [w.communicate(timeout=300) for w in writers]
    finally:
        stop.touch()
    reader_out, reader_err = reader.communicate(timeout=120)
    for w, (out, err) in zip(writers, outs):
        assert w.returncode == 0 and out.strip() == "done", err[-2000:]
    assert reader.returncode == 0, reader_err[-2000:]
    reads, final = map(int, reader_out.split())
    assert reads >= 1 and final == 30
    cache = Store(path)
    ids = set(cache.runs()["run_id"])
    assert ids == {f"{p}-{i}" for p in "ab" for i in range(15)}
    got = cache.get("b-7")
    pd.testing.assert_frame_equal(got.tables["skip"], result.tables["skip"])
    assert len(cache.table("a-3", "layer_token")) == len(result.tables["layer_token"])


def test_threads_share_a_store(tmp_path, result):
    from concurrent.futures import ThreadPoolExecutor

    cache = Store(tmp_path / "cache.duckdb")

    def work(i):
        cache.put(with_id(result, f"t{i}"))
        return cache.get(f"t{i}").run_id, len(cache.runs())

    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(work, range(8)))
    assert sorted(r for r, _ in done) == sorted(f"t{i}" for i in range(8))
    assert len(cache) == 8


def test_meta_copy_is_not_aliased(cache, result):
    cache.put(result)
    got = cache.get(result.run_id)
    got.meta["timings"]["forward"] = -1.0
    assert cache.get(result.run_id).meta == copy.deepcopy(result.meta)


def test_every_cache_error_says_its_kind(tmp_path):
    """CacheError.kind, not its wording, tells the page what to offer (issue 19 §3)."""
    import os

    import pytest

    from effdepth import app
    from effdepth.errors import CacheError

    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError) as damaged:
        Store(broken).runs()
    assert damaged.value.kind == "damaged" and app.error_kind(damaged.value) == "corrupt"
    with pytest.raises(CacheError) as missing:
        Store(tmp_path / "fine.duckdb").export_csv("no-such-run", tmp_path / "out")
    assert missing.value.kind == "missing" and app.error_kind(missing.value) == "other"
    store = Store(tmp_path / "ro.duckdb")
    original = os.access
    os.access = lambda *_a, **_k: False  # a read-only mount (root ignores file modes)
    try:
        with pytest.raises(CacheError) as read_only:
            store.check_writable()
    finally:
        os.access = original
    assert read_only.value.kind == "read-only"
    with pytest.raises(ValueError, match="unknown CacheError kind"):
        CacheError("x", kind="weird")
