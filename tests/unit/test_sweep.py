"""Sweeps (effdepth/sweep.py): resumability, sharding + merge, aggregates with hand-computed answers.

Stores: ``MemStore`` is an in-memory stand-in with the store API the sweep relies on (``has``, ``put``,
``get``, ``table``, ``runs``); ``DirStore`` the same on a directory of pickles, so that separate
processes (the ``accelerate launch`` test) can share it. If effdepth/store.py exists, the merge is
also tested against the real DuckDB ``Store``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from effdepth import depth, models
from effdepth import sweeps as S
from effdepth.datasets import Item
from effdepth.engine import ProbeConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ProbeConfig(probes=("cosine", "logit_lens"))
TEXTS = ["the capital of france is paris", "a model depth layer", "the layer of the model is a b c",
         "paris is the capital", "c b a the model"]


class MemStore:
    def __init__(self, path=None):
        self.path = path
        self.runs_by_id: dict = {}
        self.puts = 0

    def has(self, run_id):
        return run_id in self.runs_by_id

    def put(self, result):
        self.puts += 1
        self.runs_by_id[result.run_id] = result

    def get(self, run_id):
        return self.runs_by_id.get(run_id)

    def table(self, run_id, name):
        return self.runs_by_id[run_id].tables[name]

    def runs(self):
        return pd.DataFrame({"run_id": list(self.runs_by_id)})


class DirStore:
    """A store on a directory of pickles (multi-process safe enough for tests)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, run_id):
        return self.path / f"{run_id}.pkl"

    def has(self, run_id):
        return self._file(run_id).exists()

    def put(self, result):
        tmp = self.path / f".{result.run_id}.{os.getpid()}.tmp"
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(self._file(result.run_id))

    def get(self, run_id):
        return pickle.loads(self._file(run_id).read_bytes()) if self.has(run_id) else None

    def table(self, run_id, name):
        return self.get(run_id).tables[name]

    def runs(self):
        return pd.DataFrame({"run_id": sorted(p.stem for p in self.path.glob("*.pkl"))})


def _items(n=len(TEXTS)):
    return [Item(dataset="custom", index=i, prompt=text.rsplit(" ", 1)[0],
                 answer=" " + text.rsplit(" ", 1)[1], bin=f"bin{i % 2}") for i, text in enumerate(TEXTS[:n])]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tests.real.test_models import _save_tiny_llama

    return str(_save_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama"))


class CountingLoad:
    def __init__(self):
        self.calls = 0

    def __call__(self, name, dtype="float32"):
        self.calls += 1
        return models.load_model(name, dtype=dtype)


def _no_load(*_args, **_kwargs):
    raise AssertionError("the model must not be loaded when every item is already stored")


# ------------------------------------------------------------------------------------ running

def test_sweep_stores_every_item_and_resumes_without_loading(tiny_dir):
    store, load, items = MemStore(), CountingLoad(), _items()
    seen = []
    ids = S.sweep(tiny_dir, items, store, CONFIG, load=load, progress=lambda s, f=None: seen.append(s))
    assert load.calls == 1 and store.puts == len(items) and len(set(ids)) == len(items)
    assert ids == S.item_keys(models.resolve_model(tiny_dir).fingerprint, items, "float32", CONFIG)
    for item, rid in zip(items, ids):
        meta = store.get(rid).meta
        assert (meta["dataset"], meta["item_index"], meta["bin"]) == ("custom", item.index, item.bin)
        assert meta["prompt_text"] == item.text
    assert seen  # progress callback used instead of tqdm
    again = S.sweep(tiny_dir, items, store, CONFIG, load=_no_load)
    assert again == ids and store.puts == len(items)
    # fp32 alias gives the same keys
    assert S.sweep(tiny_dir, items, store, CONFIG, dtype="fp32", load=_no_load) == ids


def test_sweep_resumes_partially_and_loads_once(tiny_dir):
    items = _items()
    store, load = MemStore(), CountingLoad()
    first = S.sweep(tiny_dir, items[:2], store, CONFIG, load=load)
    ids = S.sweep(tiny_dir, items, store, CONFIG, load=load)  # tqdm path (progress=None)
    assert ids[:2] == first and load.calls == 2 and store.puts == len(items)


def test_the_one_sweep_loop_lends_the_model_per_item_and_tells_each_outcome(tiny_dir):
    """The page's jobs run this very loop (issue 19 §1): ``hold(item)`` gives the model item by item,
    ``on_start`` the counts before, ``on_item`` each item's outcome; an item another sweep stores while this
    one waits its turn counts as "stored", not "computed", and is not probed twice."""
    import contextlib

    items = _items(3) + [Item(dataset="custom", index=9, prompt="", answer="   ")]  # the last one fails
    store, loaded = MemStore(), models.load_model(tiny_dir)
    keys = S.item_keys(loaded.spec.fingerprint, items, "float32", CONFIG)
    S.sweep(tiny_dir, items[:1], store, CONFIG, load=lambda *a, **k: loaded)  # stored before the sweep
    held, started, outcomes = [], [], []

    @contextlib.contextmanager
    def hold(item):
        held.append(item.index)
        if item.index == items[2].index:  # another sweep stored this item while we waited for the model
            S.sweep(tiny_dir, [item], store, CONFIG, load=lambda *a, **k: loaded)
        yield loaded

    puts = store.puts
    ids = S.sweep(tiny_dir, items, store, CONFIG, hold=hold, load=_no_load, skip_errors=True,
                  on_start=lambda n, stored: started.append((n, stored)),
                  on_item=lambda item, outcome: outcomes.append((item.index, outcome)))
    assert started == [(4, 1)]
    assert held == [it.index for it in items[1:]]
    assert outcomes == [(items[1].index, "computed"), (items[2].index, "stored"), (9, "failed")]
    assert store.puts == puts + 2  # items[1] here, items[2] by the other sweep; nothing twice
    assert ids == keys[:3]


def test_sweep_skip_errors(tiny_dir):
    items = _items(2) + [Item(dataset="custom", index=9, prompt="", answer="   ")]  # empty -> PromptError
    store = MemStore()
    with pytest.raises(Exception, match="empty"):
        S.sweep(tiny_dir, items, store, CONFIG, load=CountingLoad())
    ids = S.sweep(tiny_dir, items, MemStore(), CONFIG, load=CountingLoad(), skip_errors=True)
    assert len(ids) == 2


def test_sweep_skips_only_the_error_classes_asked_for_and_reports_them(tiny_dir, monkeypatch):
    from effdepth.errors import EffdepthError, PromptError

    items = _items(2) + [Item(dataset="custom", index=9, prompt="", answer="   ")]  # empty -> PromptError
    failed: list = []
    ids = S.sweep(tiny_dir, items, MemStore(), CONFIG, load=CountingLoad(), skip_errors=(EffdepthError,),
                  failed=failed)
    assert len(ids) == 2 and [(item.index, type(err)) for item, err in failed] == [(9, PromptError)]

    def broken(*_a, **_k):
        raise RuntimeError("a bug, not a bad item")

    monkeypatch.setattr(S.run, "run_probes", broken)
    with pytest.raises(RuntimeError, match="a bug"):  # anything but an EffdepthError still stops the sweep
        S.sweep(tiny_dir, _items(1), MemStore(), CONFIG, load=CountingLoad(), skip_errors=(EffdepthError,))


def test_shard_items_and_env(monkeypatch):
    items = list(range(7))
    assert S.shard_items(items, 0, 3) == [0, 3, 6] and S.shard_items(items, 2, 3) == [2, 5]
    assert sorted(sum((S.shard_items(items, r, 3) for r in range(3)), [])) == items
    with pytest.raises(ValueError):
        S.shard_items(items, 3, 3)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert S.dist_env() == (1, 4)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert S.dist_env() == (0, 1)


def test_sweep_id_is_deterministic():
    items = _items()
    assert S.sweep_id("m", items) == S.sweep_id("m", list(items))
    assert S.sweep_id("m", items) != S.sweep_id("m", items[:-1])
    assert S.sweep_id("m", items) != S.sweep_id("m", items, dtype="bfloat16")
    assert S.shard_path("abc", 1, "/x").name == "abc-rank1.duckdb"


def test_shards_merge_into_main_store(tiny_dir, tmp_path):
    items = _items()
    shards: dict = {}

    def factory(path):
        Path(path).touch()  # a real Store creates its file
        return shards.setdefault(str(path), MemStore(path))

    main = MemStore()
    load = CountingLoad()
    paths, all_ids = [], []
    for rank in range(2):
        path, ids = S.sweep_shard(tiny_dir, items, main, rank=rank, world=2, config=CONFIG, load=load,
                                  directory=tmp_path, store_factory=factory)
        assert path.parent == tmp_path and path.name.endswith(f"-rank{rank}.duckdb")
        paths.append(path)
        all_ids += ids
    assert len(shards[str(paths[0])].runs_by_id) == 3 and len(shards[str(paths[1])].runs_by_id) == 2
    assert main.puts == 0
    merged = S.merge_shards(main, paths + [tmp_path / "missing-rank9.duckdb"], factory)
    assert sorted(merged) == sorted(all_ids) and len(main.runs_by_id) == len(items)
    assert set(main.runs_by_id) == set(S.sweep(tiny_dir, items, main, CONFIG, load=_no_load))
    assert S.merge_shards(main, paths, factory) == []  # idempotent
    # a rank re-run after the merge finds everything in the main store
    _, ids = S.sweep_shard(tiny_dir, items, main, rank=0, world=2, config=CONFIG, load=_no_load,
                           directory=tmp_path, store_factory=lambda p: MemStore(p))
    assert len(ids) == 3
    S.merge_shards(main, paths, factory, delete=True)
    assert not any(p.exists() for p in paths)


def test_merge_with_real_store(tiny_dir, tmp_path):
    import effdepth.store as store_mod  # the project's own store: a broken import fails, never skips
    items = _items(3)
    shard_paths = []
    for rank in range(2):
        path, _ = S.sweep_shard(tiny_dir, items, None, rank=rank, world=2, config=CONFIG,
                                load=CountingLoad(), directory=tmp_path / "shards")
        shard_paths.append(path)
    main = store_mod.Store(tmp_path / "main.duckdb")
    merged = S.merge_shards(main, shard_paths)
    assert len(merged) == 3 and all(main.has(rid) for rid in merged)
    ids = S.sweep(tiny_dir, items, main, CONFIG, load=_no_load)
    assert sorted(ids) == sorted(merged)


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None,
                    reason="accelerate CLI not installed")
def test_accelerate_launch_two_processes(tiny_dir, tmp_path):
    """Real 2-process sweep under ``accelerate launch`` -> per-rank shards -> rank-0 merge.

    ``accelerate launch --cpu --num_processes 2`` starts a single process in accelerate 1.x (its CPU
    path needs an mpirun hostfile), so the test uses ``--multi_gpu``, which starts 2 processes through
    torchrun; without GPUs their PartialState is not distributed and the sweep falls back to
    RANK/WORLD_SIZE and a marker-file barrier. Uses DirStore (a directory of pickles) for the stores.
    """
    script = tmp_path / "run_sweep.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from accelerate import PartialState
        from effdepth import sweeps as S
        from effdepth.engine import ProbeConfig
        from tests.unit.test_sweep import DirStore, _items
        state = PartialState()
        ids = S.sweep_distributed({tiny_dir!r}, _items(), DirStore({str(tmp_path / 'main')!r}),
                                  ProbeConfig(probes=("cosine", "logit_lens")),
                                  progress=lambda *a: None, directory={str(tmp_path / 'shards')!r},
                                  store_factory=DirStore)
        print(f"rank {{S.dist_env()[0]}} ids {{len(ids)}}", flush=True)
    """))
    accelerate = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 0 ids 5" in proc.stdout and "rank 1 ids 2" in proc.stdout
    main = DirStore(tmp_path / "main")
    assert len(main.runs()) == 5
    assert not list((tmp_path / "shards").iterdir())  # shards and markers merged and removed
    assert sorted(main.runs()["run_id"]) == sorted(S.sweep(tiny_dir, _items(), main, CONFIG,
                                                           load=_no_load))


# ---------------------------------------------------------------------------------- aggregates

def _const_frame(value, n_layers=3, metric="m"):
    return pd.DataFrame({"metric": metric, "layer": range(n_layers), "value": float(value)})


def test_token_weighted_vs_prompt_mean_by_hand():
    frames = {"a": _const_frame(1.0), "b": _const_frame(3.0)}
    counts = {"a": 2, "b": 6}
    token = S.aggregate(frames, counts, "token")
    prompt = S.aggregate(frames, counts, "prompt")
    maxed = S.aggregate(frames, counts, "max")
    assert list(token.columns) == ["metric", "layer", "value"] and len(token) == 3
    np.testing.assert_allclose(token["value"], (2 * 1 + 6 * 3) / 8)  # 2.5
    np.testing.assert_allclose(prompt["value"], 2.0)
    np.testing.assert_allclose(maxed["value"], 3.0)
    with pytest.raises(ValueError):
        S.aggregate(frames, None, "token")
    with pytest.raises(ValueError):
        S.aggregate(frames, counts, "median")


def test_token_weighting_equals_sum_over_all_tokens():
    rng = np.random.default_rng(0)
    per_token = {"a": rng.normal(size=(4, 5)), "b": rng.normal(size=(4, 11))}  # [L, T]
    frames = {rid: pd.DataFrame({"metric": "m", "layer": range(4), "value": v.mean(axis=1)})
              for rid, v in per_token.items()}
    got = S.aggregate(frames, {rid: v.shape[1] for rid, v in per_token.items()}, "token")
    expected = np.concatenate(list(per_token.values()), axis=1).mean(axis=1)
    np.testing.assert_allclose(got.sort_values("layer")["value"], expected)


def test_missing_cells_are_left_out():
    frames = {"a": _const_frame(1.0), "b": _const_frame(5.0, n_layers=2)}
    got = S.aggregate(frames, {"a": 1, "b": 3}, "token").set_index("layer")["value"]
    assert got[0] == pytest.approx(4.0) and got[2] == pytest.approx(1.0)


def _cos_frame(mu, kl=None):
    """Layer frame whose three cosines all equal mu (so the cosine mean is mu) and an optional KL."""
    rows = [{"metric": m, "layer": l, "value": float(v)} for m in ("cos_att", "cos_mlp", "cos_layer")
            for l, v in enumerate(mu)]
    if kl is not None:
        rows += [{"metric": "kl", "layer": l, "value": float(v)} for l, v in enumerate(kl)]
    return pd.DataFrame(rows)


def test_bootstrap_ci_contains_point_and_shrinks():
    rng = np.random.default_rng(1)

    def frames(n):
        return {f"r{i}": _const_frame(1.0 + rng.normal(scale=0.5), n_layers=4) for i in range(n)}

    small = S.bootstrap_ci(frames(5), how="prompt", n_boot=300, seed=0).curves
    large = S.bootstrap_ci(frames(80), how="prompt", n_boot=300, seed=0).curves
    for ci in (small, large):
        assert list(ci.columns) == ["metric", "layer", "value", "lo", "hi"]
        assert (ci["lo"] <= ci["value"]).all() and (ci["value"] <= ci["hi"]).all()
    assert (large["hi"] - large["lo"]).mean() < (small["hi"] - small["lo"]).mean()
    # identical items: the interval collapses onto the point
    same = S.bootstrap_ci({f"r{i}": _const_frame(2.0) for i in range(6)},
                          {f"r{i}": i + 1 for i in range(6)}, n_boot=200).curves
    np.testing.assert_allclose(same["lo"], 2.0)
    np.testing.assert_allclose(same["hi"], 2.0)
    # seeded
    f = frames(7)
    a = S.bootstrap_ci(f, how="prompt", n_boot=100, seed=3).curves
    b = S.bootstrap_ci(f, how="prompt", n_boot=100, seed=3).curves
    pd.testing.assert_frame_equal(a, b)


def test_bootstrap_ed_from_ed_table_rules():
    # two kinds of items: cosine crossing at l=1 (cosine mean -1,-1,1,1,1) or at l=3 (-1,-1,-1,-1,1)
    early, late = [-1, -1, 1, 1, 1], [-1, -1, -1, -1, 1]
    kl = [4, 3, 1, 0.5, 0.1]
    frames = {"e1": _cos_frame(early, kl), "e2": _cos_frame(early, kl), "l1": _cos_frame(late, kl)}
    counts = {"e1": 1, "e2": 1, "l1": 1}
    result = S.bootstrap_ci(frames, counts, n_boot=400, seed=0)
    ed = result.ed.set_index(["probe", "rule"])
    # point: mean mu = (-1,-1,1/3,1/3,1) -> last crossing at l=1; ED 1, EDR 2/5
    assert ed.loc[("cosine", "p1"), "ed"] == 1 and ed.loc[("cosine", "p1"), "edr"] == pytest.approx(0.4)
    assert ed.loc[("cosine", "p1"), "ed_lo"] == 1 and ed.loc[("cosine", "p1"), "ed_hi"] == 3
    assert ed.loc[("cosine", "p1"), "edr_hi"] == pytest.approx(4 / 5)
    # KL identical in every item -> no spread: first l with KL < 2 is l=2
    assert ed.loc[("kl", "p1"), "ed"] == 2 and ed.loc[("kl", "p1"), "ed_lo"] == ed.loc[("kl", "p1"), "ed_hi"] == 2
    assert (ed["frac_none"] == 0).all()
    per = S.per_item_ed(frames)
    cos = per[(per.probe == "cosine") & (per.rule == "p1")].set_index("run_id")["ed"]
    assert cos.to_dict() == {"e1": 1, "e2": 1, "l1": 3}
    dist = S.ed_distribution(per).set_index(["probe", "rule"])
    assert dist.loc[("cosine", "p1"), "ed_mean"] == pytest.approx(5 / 3)
    assert dist.loc[("cosine", "p1"), "n"] == 3 and dist.loc[("cosine", "p1"), "n_none"] == 0


def test_bootstrap_counts_no_transition():
    frames = {"a": _cos_frame([-1, -1, 1]), "b": _cos_frame([-1, -1, -1])}  # b never crosses
    ed = S.bootstrap_ci(frames, how="prompt", n_boot=400, seed=0).ed.set_index(["probe", "rule"])
    frac = ed.loc[("cosine", "p1"), "frac_none"]
    assert 0.15 < frac < 0.35  # both draws are "b" with probability 1/4


def test_depth_score_by_bin_by_hand():
    L = 3
    # item x (bin easy): only skipping layer 0 affects later layers
    mx = np.zeros((L, L))
    mx[0, 1] = mx[0, 2] = 1.0
    # item y (bin easy): only layer 1 affects layer 2
    my = np.zeros((L, L))
    my[1, 2] = 0.5
    # item z (bin hard): skipping layer 1 affects layer 2 fully
    mz = np.zeros((L, L))
    mz[1, 2] = 1.0
    outputs = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 0.0, 1.0]),
               "z": np.array([0.0, 1.0, 1.0])}
    result = S.depth_score_by_bin({"x": mx, "y": my, "z": mz}, outputs,
                                  {"x": "easy", "y": "easy", "z": "hard"})
    scores = result.scores.set_index(["bin", "reduce", "effect"])["depth_score"]
    # easy, max: M = mx ∨ my -> e = [2/2, 0.5/1, 0] -> DS = (0*1 + 1*0.5) / 1.5 = 1/3
    assert scores[("easy", "max", "layer")] == pytest.approx(1 / 3)
    # easy, mean: M = (mx + my)/2 -> e = [0.5, 0.25, 0] -> DS = 0.25 / 0.75 = 1/3
    assert scores[("easy", "mean", "layer")] == pytest.approx(1 / 3)
    # easy, logit: max O = [1, 0, 1] -> DS = 2/2 = 1; mean O = [.5, 0, .5] -> 1
    assert scores[("easy", "max", "logit")] == pytest.approx(1.0)
    assert scores[("easy", "mean", "logit")] == pytest.approx(1.0)
    # hard: e_layer = [0, 1, 0] -> DS 1; O = [0, 1, 1] -> DS 1.5
    assert scores[("hard", "max", "layer")] == pytest.approx(1.0)
    assert scores[("hard", "mean", "logit")] == pytest.approx(1.5)
    assert list(result.scores["bin"].unique()) == ["easy", "hard"]
    n = result.scores.set_index(["bin", "reduce", "effect"])["n_items"]
    assert n[("easy", "max", "layer")] == 2 and n[("hard", "max", "layer")] == 1
    prof = result.profiles
    easy = prof[(prof.bin == "easy") & (prof.reduce == "max") & (prof.effect == "layer")]
    np.testing.assert_allclose(easy.sort_values("layer")["value"], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(easy.sort_values("layer")["value"],
                               depth.layer_effect(np.maximum(mx, my)))


def test_depth_score_accepts_store_tables_and_zero_effect():
    L = 2
    rows = [{"variant": "future", "split": split, "skipped": s, "affected": j,
             "value": (0.8 if (s, j) == (0, 1) else 0.0) * (1 if split == -1 else 0.5)}
            for split in (8, -1) for s in range(L) for j in range(L)]
    skip_df = pd.DataFrame(rows)
    out_df = pd.DataFrame([{"variant": "future", "split": -1, "skipped": s, "value": v}
                           for s, v in enumerate([0.2, 0.6])])
    result = S.depth_score_by_bin({"r": skip_df, "z": np.zeros((L, L))},
                                  {"r": out_df, "z": np.zeros(L)}, {"r": "a", "z": "b"})
    scores = result.scores.set_index(["bin", "reduce", "effect"])["depth_score"]
    assert scores[("a", "max", "layer")] == pytest.approx(0.0)  # e = [0.8, 0]
    assert scores[("a", "max", "logit")] == pytest.approx(0.6 / 0.8)
    assert scores[("b", "max", "layer")] is None or pd.isna(scores[("b", "max", "layer")])


def _current_only(L: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The skip tables of a prompt under 13 tokens: only the current-effect variant, no future rows."""
    skip_df = pd.DataFrame([{"variant": "current", "split": -1, "skipped": s, "affected": j, "value": 0.1}
                            for s in range(L) for j in range(L)])
    out_df = pd.DataFrame([{"variant": "current", "split": -1, "skipped": s, "value": 0.1} for s in range(L)])
    return skip_df, out_df


def test_depth_score_leaves_out_items_too_short_for_the_future_skip():
    L = 3
    mz = np.zeros((L, L))
    mz[1, 2] = 1.0
    short_skip, short_out = _current_only(L)
    matrices = {"z": mz, "s1": short_skip, "s2": short_skip, "s3": short_skip}
    outputs = {"z": np.array([0.0, 1.0, 1.0]), "s1": short_out, "s2": short_out, "s3": short_out}
    bins = {"z": "hard", "s1": "hard", "s2": "tiny", "s3": "tiny"}
    tokens = {"z": 40, "s1": 9, "s2": 5, "s3": 12}
    result = S.depth_score_by_bin(matrices, outputs, bins, n_tokens=tokens)  # used to raise ValueError
    scores = result.scores.set_index(["bin", "reduce", "effect"])
    assert scores.loc[("hard", "max", "layer"), "depth_score"] == pytest.approx(1.0)  # z alone
    assert scores.loc[("hard", "max", "layer"), "n_items"] == 1
    assert scores.loc[("hard", "max", "layer"), "n_left_out"] == 1
    # a bin whose items are all too short keeps its rows: no score, no item, 2 left out
    tiny = result.scores[result.scores["bin"] == "tiny"]
    assert len(tiny) == 4 and tiny["depth_score"].isna().all()
    assert (tiny["n_items"] == 0).all() and (tiny["n_left_out"] == 2).all()
    assert list(result.scores["bin"].unique()) == ["hard", "tiny"]
    assert set(result.profiles["bin"]) == {"hard"}
    left = result.left_out
    assert list(left["run_id"]) == ["s1", "s2", "s3"] and set(left["reason"]) == {S.TOO_SHORT}
    names = {"s1": "mine[1]", "s2": "mine[2]", "s3": "mine[3]"}
    assert S.left_out_messages(left, 4, names) == [
        "3 of 4 items are too short for the future-effect skip (< 13 tokens) and are left out of the depth "
        "score: mine[1], mine[2], mine[3]."]
    one = S.depth_score_by_bin({"z": mz, "s": short_skip}, {"z": outputs["z"], "s": short_out},
                               {"z": "a", "s": "a"}, n_tokens={"z": 40, "s": 9})
    assert S.left_out_messages(one.left_out, 2, {"s": "mine[0]"}) == [
        "1 of 2 items is too short for the future-effect skip (< 13 tokens) and is left out of the depth "
        "score: mine[0]."]


def test_depth_score_without_token_counts_says_the_matrix_is_missing():
    short_skip, short_out = _current_only(2)
    result = S.depth_score_by_bin({"s": short_skip}, {"s": short_out}, {"s": "a"})
    assert result.scores["depth_score"].isna().all() and (result.scores["n_items"] == 0).all()
    assert list(result.left_out["reason"]) == [S.NO_MATRIX]
    assert S.left_out_messages(result.left_out, 1) == [
        "1 of 1 item is missing the reduced future-effect skip matrix and is left out of the depth score: s."]
