"""Benchmark-item aggregates (effdepth/difficulty.py), their charts, the Difficulty page and Compare's
items mode.

Unit tests build synthetic RunResults with hand-chosen curves (so every number is known) and store them
in a real DuckDB ``Store``; the integration and page tests use sweeps of two tiny random Llamas (6 and 8
layers; ``app_support.fill_sweeps``: cosine + logit lens on six items of two datasets, plus a separate
skip-only future sweep of the first model, so items merge two probe configs). Pages are driven with
``streamlit.testing.v1.AppTest``, each test on its own copy of the cache (``EFFDEPTH_CACHE`` → tmp_path).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from effdepth import app, charts, depth, sweeps
from effdepth.engine import RunResult
from effdepth.store import Store
from tests import app_support

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
DIFFICULTY, COMPARE = "pages/4_Difficulty.py", "pages/2_Compare.py"
TIMEOUT = 180
N_BOOT = 200  # resamples in the tests (the app's default is sweeps.N_BOOT = 1000)


# ------------------------------------------------------------------------------------ synthetic runs

def _layer(curves: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"metric": m, "layer": l, "value": float(v)} for m, vs in curves.items()
                         for l, v in enumerate(vs)], columns=["metric", "layer", "value"])


def _cosines(mu: list[float], spread: float = 0.1) -> dict[str, list[float]]:
    """Three cosine curves whose mean is ``mu``."""
    mu = np.asarray(mu, dtype=float)
    return {"cos_att": list(mu - spread), "cos_mlp": list(mu), "cos_layer": list(mu + spread)}


def synth_run(run_id: str, *, dataset: str = "ds", index: int = 0, bin: str | None = None,
              curves: dict[str, list[float]] | None = None, skip: np.ndarray | None = None,
              out: np.ndarray | None = None, n_tokens: int = 10, model: str = "model-x", fp: str = "fp-x",
              dtype: str = "float32", chat: bool = False, created: str = "2026-01-01T00:00:00+00:00",
              text: str | None = None) -> RunResult:
    """A stored-run look-alike: meta of a benchmark item, ``layer`` curves, optional reduced future skip."""
    layer = _layer(curves or {})
    n_layers = int(layer["layer"].max()) + 1 if len(layer) else (len(skip) if skip is not None else 4)
    skip_rows, out_rows = [], []
    if skip is not None:
        skip_rows = [{"variant": "future", "split": split, "skipped": s, "affected": j,
                      "value": float(skip[s, j]) * (1.0 if split == -1 else 0.5)}
                     for split in (8, -1) for s in range(len(skip)) for j in range(len(skip))]
        out_rows = [{"variant": "future", "split": -1, "skipped": s, "value": float(v)} for s, v in enumerate(out)]
    skip_df = pd.DataFrame(skip_rows, columns=["variant", "split", "skipped", "affected", "value"])
    tables = {
        "tokens": pd.DataFrame({"pos": range(n_tokens), "token_id": range(n_tokens),
                                "token": [f"t{i}" for i in range(n_tokens)]}),
        "layer_token": pd.DataFrame(columns=["metric", "layer", "pos", "value"]),
        "layer": layer, "skip": skip_df,
        "skip_output": pd.DataFrame(out_rows, columns=["variant", "split", "skipped", "value"]),
        "lens_topk": pd.DataFrame(columns=["layer", "pos", "rank", "token_id", "prob", "token"]),
        "ed": depth.ed_table(layer, skip_df if len(skip_df) else None),
    }
    text = text if text is not None else f"{dataset} item {index}"
    meta = {"run_id": run_id, "model_name": model, "model_fingerprint": fp, "model_kind": "local",
            "architecture": "llama", "n_layers": n_layers, "d_model": 8, "vocab_size": 10, "dtype": dtype,
            "chat_template": chat, "prompt_text": text, "prompt_hash": f"h-{text}", "n_tokens": n_tokens,
            "probes": ["cosine"], "created": created, "dataset": dataset, "item_index": index}
    if bin is not None:
        meta["bin"] = bin
    return RunResult(meta=meta, tables=tables)


def store_with(tmp_path: Path, runs: list[RunResult]) -> Store:
    store = Store(tmp_path / "synthetic.duckdb")
    for run in runs:
        store.put(run)
    return store


def only_set(store) -> sweeps.ItemSet:
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    assert len(sets) == 1
    return sweeps.load_items(store, sets["key"].iloc[0])


# ------------------------------------------------------------------------------------------ merging

def test_merge_takes_each_table_from_the_newest_run_that_has_it(tmp_path):
    L = 4
    old_cos = _cosines([-0.5, -0.2, 0.3, 0.4])
    matrix = np.triu(np.full((L, L), 0.3), 1)
    runs = [
        # oldest: cosine + KL
        synth_run("r-cos", curves=old_cos | {"kl": [4, 3, 1, 0.5]}, created="2026-01-01T00:00:00+00:00"),
        # newer: skip only (future), as `--probes skip --skip-variants future` writes it
        synth_run("r-skip", skip=matrix, out=np.array([0.4, 0.3, 0.2, 0.1]), created="2026-01-02T00:00:00+00:00"),
        # newest: KL again with other values (e.g. a logit-lens-only rerun)
        synth_run("r-kl", curves={"kl": [8, 2, 1, 0.1]}, created="2026-01-03T00:00:00+00:00"),
        # an older run of the same item index with another text (older dataset version): left out
        synth_run("r-stale", curves=_cosines([1, 1, 1, 1]), text="another text",
                  created="2025-12-01T00:00:00+00:00"),
        # another item and another model: not part of this item
        synth_run("r-other", index=1, curves=old_cos),
        synth_run("r-model", curves=old_cos, fp="fp-y", model="model-y"),
    ]
    store = store_with(tmp_path, runs)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    assert set(sets["model_name"]) == {"model-x", "model-y"}
    item_set = sweeps.load_items(store, sets[sets["model_name"] == "model-x"]["key"].iloc[0])
    assert list(item_set.items["item_id"]) == ["ds:0", "ds:1"]
    merged = item_set.merged["ds:0"]
    assert merged.run_ids == ("r-kl", "r-skip", "r-cos") and merged.dropped == ("r-stale",)
    assert merged.sources["metric:kl"] == "r-kl" and merged.sources["metric:cos_att"] == "r-cos"
    assert merged.sources["skip:future"] == "r-skip" and "metric:skip_layer_effect" not in merged.sources
    kl = merged.layer[merged.layer["metric"] == "kl"].sort_values("layer")["value"].tolist()
    assert kl == [8, 2, 1, 0.1]
    mu = merged.layer[merged.layer["metric"] == "cos_mu"].sort_values("layer")["value"].to_numpy()
    np.testing.assert_allclose(mu, [-0.5, -0.2, 0.3, 0.4])
    assert (merged.skip["split"] == -1).all()
    np.testing.assert_allclose(depth.future_matrix(merged.skip), matrix)
    np.testing.assert_allclose(merged.skip_output.sort_values("skipped")["value"], [0.4, 0.3, 0.2, 0.1])
    row = item_set.items.set_index("item_id").loc["ds:0"]
    assert row["has_curves"] and row["has_skip"] and row["run_id"] == "r-cos"
    assert not item_set.items.set_index("item_id").loc["ds:1", "has_skip"]
    # Explore opens the run that gave the probe's curve
    assert sweeps.explore_run(item_set, "ds:0", "kl") == "r-kl"
    assert sweeps.explore_run(item_set, "ds:0", "cosine") == "r-cos"
    query = app.explore_query(item_set, "ds:0", "kl", demo=True)
    assert query["run"] == "r-kl" and query["demo"] == "1" and query["model"] == "model-x"
    assert query["prompt"] == "ds item 0" and query["item"] == "ds:0"


def test_merge_item_directly():
    a = {"layer": _layer({"kl": [1, 2]}), "skip": None, "skip_output": None}
    b = {"layer": _layer({"kl": [9, 9], "overlap": [0.1, 0.9]}), "skip": None, "skip_output": None}
    merged = sweeps.merge_item([("new", a), ("old", b)])
    assert merged.sources == {"metric:kl": "new", "metric:overlap": "old"}
    assert merged.layer[merged.layer["metric"] == "kl"]["value"].tolist() == [1, 2]
    assert sweeps.merge_item([("new", a), ("old", b)], hashes=["x", "y"]).run_ids == ("new",)


# ----------------------------------------------------------------------------------------- aggregates

BIN_ITEMS = {  # bin -> [(cosine μ curve, KL curve, tokens)]
    "easy": [([-0.4, -0.1, 0.2, 0.3, 0.5], [5, 4, 1, 0.5, 0.1], 2),
             ([-0.3, -0.2, -0.1, 0.1, 0.4], [6, 5, 4, 1, 0.2], 6),
             ([-0.2, 0.1, 0.2, 0.2, 0.3], [4, 1, 0.6, 0.3, 0.1], 4)],
    "hard": [([-0.5, -0.4, -0.3, -0.1, 0.2], [5, 5, 4, 3, 0.4], 3),
             ([-0.4, -0.4, -0.2, 0.1, 0.3], [7, 6, 5, 2, 0.3], 5)],
}


def _bin_store(tmp_path) -> Store:
    runs, index = [], 0
    for name, items in BIN_ITEMS.items():
        for mu, kl, n in items:
            runs.append(synth_run(f"r{index}", dataset="mix", index=index, bin=name, curves=_cosines(mu) | {"kl": kl},
                                  n_tokens=n))
            index += 1
    return store_with(tmp_path, runs)


@pytest.mark.parametrize("how", ["token", "prompt"])
def test_bin_edr_equals_ed_table_of_the_hand_aggregate(tmp_path, how):
    item_set = only_set(_bin_store(tmp_path))
    assert item_set.bins == ["easy", "hard"]
    agg = sweeps.aggregate_by_bin(item_set, how, n_boot=N_BOOT)
    for name, items in BIN_ITEMS.items():
        weights = np.array([n if how == "token" else 1 for _, _, n in items], dtype=float)
        curves = {}
        for metric, spread in (("cos_att", -0.1), ("cos_mlp", 0.0), ("cos_layer", 0.1)):
            stacked = np.array([np.array(mu) + spread for mu, _, _ in items])
            curves[metric] = (weights[:, None] * stacked).sum(0) / weights.sum()
        curves["kl"] = (weights[:, None] * np.array([kl for _, kl, _ in items], dtype=float)).sum(0) / weights.sum()
        expected = depth.ed_table(_layer(curves)).set_index(["probe", "rule"])
        got = agg.ed[agg.ed["group"] == name].set_index(["probe", "rule"])
        assert set(got.index) == set(expected.index)
        for key in expected.index:
            exp_ed, got_ed = expected.loc[key, "ed"], got.loc[key, "ed"]
            assert (pd.isna(exp_ed) and pd.isna(got_ed)) or int(exp_ed) == int(got_ed), (name, key)
            if not pd.isna(exp_ed):
                assert got.loc[key, "edr"] == pytest.approx(expected.loc[key, "edr"])
                assert got.loc[key, "ed_lo"] <= got.loc[key, "ed_hi"]
        assert (got["n_items"] == len(items)).all() and (got["n_layers"] == 5).all()
        # the aggregate curves (cosine μ = mean of the aggregated cosines) and their bands
        mu = sweeps.probe_curves(agg, "cosine")
        mu = mu[mu["group"] == name].sort_values("layer")
        np.testing.assert_allclose(mu["value"], (curves["cos_att"] + curves["cos_mlp"] + curves["cos_layer"]) / 3)
        assert (mu["lo"] <= mu["value"] + 1e-12).all() and (mu["value"] <= mu["hi"] + 1e-12).all()
        np.testing.assert_allclose(mu["depth"], mu["layer"] / 5)
    # the displayed table is the same numbers in long format
    table = app.edr_display(agg.ed)
    assert list(table.columns[:3]) == ["bin", "probe", "rule"] and len(table) == len(agg.ed)


def test_bootstrap_is_sweeps_and_memoised(tmp_path):
    item_set = only_set(_bin_store(tmp_path))
    ids = list(item_set.items[item_set.items["bin"] == "easy"]["item_id"])
    ci = sweeps.bootstrap(item_set, ids, "token", N_BOOT)
    layers = {i: item_set.merged[i].layer for i in ids}
    frames = {i: layer[layer["metric"].isin(sweeps.AGGREGATE_METRICS)] for i, layer in layers.items()}
    counts = dict(zip(item_set.items["item_id"], item_set.items["n_tokens"]))
    direct = sweeps.bootstrap_ci(frames, {i: counts[i] for i in ids}, how="token", n_boot=N_BOOT)
    pd.testing.assert_frame_equal(ci.ed, direct.ed)
    assert sweeps.bootstrap(item_set, ids, "token", N_BOOT) is ci  # memoised by the runs behind the items


def test_item_eds_are_per_item_ed(tmp_path):
    item_set = only_set(_bin_store(tmp_path))
    eds = sweeps.item_eds(item_set)
    assert set(eds["probe"]) == {"cosine", "kl"} and set(eds["bin"]) == {"easy", "hard"}
    for iid in item_set.items["item_id"]:
        expected = depth.ed_table(item_set.merged[iid].layer).set_index(["probe", "rule"])["ed"]
        got = eds[eds["item_id"] == iid].set_index(["probe", "rule"])["ed"]
        for key, value in got.items():
            assert (pd.isna(value) and pd.isna(expected[key])) or value == expected[key]
    label = app.item_label(item_set, "mix:0", eds, "cosine", "p1")
    assert label.startswith("mix #0 (easy) · 2 tokens · ED ")


def test_depth_scores_equal_sweep_depth_score_by_bin(tmp_path):
    rng = np.random.default_rng(0)
    L, runs, matrices, outputs, bins = 5, [], {}, {}, {}
    for index in range(5):
        matrix = np.triu(rng.uniform(size=(L, L)), 1)
        out = rng.uniform(size=L)
        name = "easy" if index < 3 else "hard"
        runs.append(synth_run(f"s{index}", dataset="mix", index=index, bin=name, skip=matrix, out=out))
        if index != 4:  # item 4 also gets curves from a separate, newer run
            runs.append(synth_run(f"c{index}", dataset="mix", index=index, bin=name,
                                  curves=_cosines([-1, -1, 1, 1, 1]), created="2026-02-01T00:00:00+00:00"))
        matrices[f"s{index}"], outputs[f"s{index}"], bins[f"s{index}"] = matrix, out, name
    item_set = only_set(store_with(tmp_path, runs))
    scores = sweeps.depth_scores(item_set)
    expected = sweeps.depth_score_by_bin(matrices, outputs, bins)
    pd.testing.assert_frame_equal(scores.scores.reset_index(drop=True), expected.scores.reset_index(drop=True))
    pd.testing.assert_frame_equal(scores.profiles.reset_index(drop=True), expected.profiles.reset_index(drop=True))
    assert len(sweeps.skip_items(item_set)) == 5
    # items without a skip matrix: no depth score (the page then shows the CLI command)
    no_skip = only_set(_bin_store(tmp_path / "b"))
    assert sweeps.depth_scores(no_skip) is None
    assert "--probes skip --skip-variants future" in app.skip_command("m", Store(tmp_path / "x.duckdb"))


def _short_skip_run(run_id: str, *, index: int, bin: str, n_tokens: int = 8, L: int = 5, **kw) -> RunResult:
    """A skip run of a prompt under 13 tokens: only the current-effect variant ran (no future matrix)."""
    run = synth_run(run_id, dataset="mix", index=index, bin=bin, n_tokens=n_tokens, **kw)
    run.meta["probes"], run.meta["n_layers"] = ["skip"], L
    run.tables["skip"] = pd.DataFrame([{"variant": "current", "split": -1, "skipped": s, "affected": j,
                                        "value": 0.1} for s in range(L) for j in range(L)])
    run.tables["skip_output"] = pd.DataFrame([{"variant": "current", "split": -1, "skipped": s, "value": 0.2}
                                              for s in range(L)])
    return run


def _short_store(path: Path) -> Store:
    """Bin "long": items 0, 1 with future matrices and item 2 too short; bin "short": items 3, 4 too short."""
    rng = np.random.default_rng(1)
    L, runs = 5, []
    for index in range(2):
        runs.append(synth_run(f"s{index}", dataset="mix", index=index, bin="long", n_tokens=30,
                              skip=np.triu(rng.uniform(size=(L, L)), 1), out=rng.uniform(size=L),
                              curves=_cosines([-1, -1, 1, 1, 1])))
    runs.append(_short_skip_run("s2", index=2, bin="long", curves=_cosines([-1, 1, 1, 1, 1])))
    runs += [_short_skip_run(f"s{index}", index=index, bin="short", curves=_cosines([-1, -1, -1, 1, 1]))
             for index in (3, 4)]
    store = Store(path)
    for run in runs:
        store.put(run)
    return store


def test_depth_scores_report_items_too_short_for_the_future_skip(tmp_path):
    item_set = only_set(_short_store(tmp_path / "c.duckdb"))
    assert sweeps.skip_items(item_set) == ["mix:0", "mix:1"]
    scores = sweeps.depth_scores(item_set)  # not None, and not silently without the short bin
    assert scores is not None
    table = scores.scores.set_index(["bin", "reduce", "effect"])
    long = table.loc[("long", "max", "layer")]
    assert long["n_items"] == 2 and long["n_left_out"] == 1
    assert not pd.isna(table.loc[("long", "max", "layer"), "depth_score"])
    short = scores.scores[scores.scores["bin"] == "short"]
    assert len(short) == 4 and short["depth_score"].isna().all() and (short["n_items"] == 0).all()
    assert list(scores.left_out["run_id"]) == ["mix:2", "mix:3", "mix:4"]
    assert set(scores.left_out["reason"]) == {sweeps.TOO_SHORT}
    assert app.depth_score_notes(item_set, scores) == [
        "Bin long: 1 of 3 items is too short for the future-effect skip (< 13 tokens) and is left out of its "
        "depth score: mix[2].",
        "Bin short: all 2 items are too short for the future-effect skip (< 13 tokens), so the bin has no depth "
        "score (n/a): mix[3], mix[4]."]
    # the bars keep the short bin, labelled n/a
    spec = charts.depth_score_bars(scores.scores, "max", ["long", "short"], item_set.n_layers).to_dict()
    texts = [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]
    assert any(layer["encoding"]["text"]["field"] == "na" for layer in texts)


def test_difficulty_page_says_which_items_are_too_short(cache, tmp_path):
    _short_store(cache)
    at = page(DIFFICULTY)
    no_problems(at)
    info = app_support.unescape(" ".join(i.value for i in at.info))
    assert "Bin short: all 2 items are too short for the future-effect skip (< 13 tokens), so the bin has no " \
           "depth score (n/a): mix[3], mix[4]." in info
    assert "Bin long: 1 of 3 items is too short for the future-effect skip" in info
    frame = next(f for f in chart_data(at, "Depth score per bin — max") if "depth_score" in f)
    assert set(frame["bin"]) == {"long", "short"}
    assert frame[frame["bin"] == "short"]["depth_score"].isna().all()


def test_sweep_sets_bins_and_picking(tmp_path):
    runs = [synth_run("a1", dataset="aime2025", index=0, curves=_cosines([-1, 1])),
            synth_run("a2", dataset="gsm8k", index=0, curves=_cosines([-1, 1])),
            synth_run("a3", dataset="math", index=0, bin="level 10", curves=_cosines([-1, 1])),
            synth_run("a4", dataset="math", index=1, bin="level 2", curves=_cosines([-1, 1])),
            synth_run("b1", dataset="gsm8k", index=0, dtype="bfloat16", curves=_cosines([-1, 1])),
            synth_run("c1", dataset="gsm8k", index=0, chat=True, curves=_cosines([-1, 1]))]
    store = store_with(tmp_path, runs)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    assert len(sets) == 3
    main = sets[(sets["dtype"] == "float32") & ~sets["chat_template"]].iloc[0]
    assert main["n_items"] == 4 and main["datasets"] == ["gsm8k", "math", "aime2025"]
    assert main["bins"] == ["gsm8k", "level 2", "level 10", "aime2025"]
    assert "4 items: gsm8k 1, math 2, aime2025 1" in main["label"]
    assert sweeps.pick_set(sets, "model-x", "float32", False) == main["key"]
    assert sweeps.pick_set(sets, "model-x", "bfloat16", False) == sweeps.set_key("fp-x", "bfloat16", False)
    assert sweeps.pick_set(sets, "model-x", "float32", True) == sweeps.set_key("fp-x", "float32", True)
    assert sweeps.pick_set(sets, "unknown-model", "float32", False) == sets["key"].iloc[0]
    assert sweeps.pick_set(sweeps.sweep_sets(sweeps.item_runs(Store(tmp_path / "empty.duckdb"))), "m") is None
    cmd = app.sweep_command("qwen2.5-coder-0.5b", store)
    assert cmd.startswith("effdepth sweep --model qwen2.5-coder-0.5b --dataset gsm8k --n 20")
    assert f"--cache {store.path}" in cmd


def test_compare_two_models_over_shared_items(tmp_path):
    runs = []
    for index in range(3):
        runs.append(synth_run(f"x{index}", index=index, curves=_cosines([-1, -0.5, 0.5, 1]), n_tokens=4 + index))
        runs.append(synth_run(f"y{index}", index=index, curves=_cosines([-1, -1, -0.5, -0.2, 0.5, 0.6, 1, 1]),
                              model="model-y", fp="fp-y", n_tokens=4 + index))
    runs.append(synth_run("y9", index=9, curves=_cosines([-1, 1] * 4), model="model-y", fp="fp-y"))  # B only
    store = store_with(tmp_path, runs)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    set_a, set_b = (sweeps.load_items(store, k) for k in sets["key"])
    assert sweeps.shared_datasets(set_a, set_b) == ["ds"]
    ids = sweeps.shared_items(set_a, set_b, "ds")
    assert ids == ["ds:0", "ds:1", "ds:2"]
    agg = sweeps.compare_aggregate(set_a, set_b, ("A", "B"), ids, "token", n_boot=N_BOOT)
    eds = sweeps.probe_eds(agg, "cosine").set_index(["group", "rule"])
    assert eds.loc[("A", "p1"), "ed"] == 1 and eds.loc[("A", "p1"), "n_layers"] == 4
    assert eds.loc[("B", "p1"), "ed"] == 3 and eds.loc[("B", "p1"), "n_layers"] == 8
    curves = sweeps.probe_curves(agg, "cosine")
    assert set(curves[curves["group"] == "B"]["depth"]) == {l / 8 for l in range(8)}
    # chart: curves on layer / L, the ED rules at ED / L
    spec = charts.group_curves(curves, sweeps.probe_eds(agg, "cosine"), "cosine", ["A", "B"], relative=True,
                                     group_title="model").to_dict()
    assert set(charts.rule_positions(spec, "x")) == {1 / 4, 3 / 8}
    line = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "line")
    assert line["encoding"]["x"]["field"] == "depth"


# -------------------------------------------------------------------------------------------- charts

def test_chart_specs(tmp_path):
    item_set = only_set(_bin_store(tmp_path))
    agg = sweeps.aggregate_by_bin(item_set, "token", n_boot=N_BOOT)
    eds = sweeps.probe_eds(agg, "kl")
    spec = charts.group_curves(sweeps.probe_curves(agg, "kl"), eds, "kl", item_set.bins).to_dict()
    marks = {charts.mark_type(v) for v in charts.iter_views(spec)}
    assert {"area", "line", "rule"} <= marks
    assert set(charts.rule_positions(spec, "x")) == {int(e) for e in eds["ed"].dropna()}
    legend = charts.ed_legend_labels(eds, item_set.bins)
    assert all(label.startswith(f"{b} — ") for b, label in legend.items())
    edr = charts.edr_ci_chart(agg.ed, "p1", item_set.bins).to_dict()
    assert {"rule", "point"} <= {charts.mark_type(v) for v in charts.iter_views(edr)}
    strip = charts.item_ed_strip(sweeps.item_eds(item_set), "cosine", "p1", item_set.bins, 5,
                                       sweeps.probe_eds(agg, "cosine"), selected="mix:1").to_dict()
    assert {"boxplot", "circle", "tick"} <= {charts.mark_type(v) for v in charts.iter_views(strip)}
    assert any(p.get("name") == "item" for v in charts.iter_views(strip) for p in v.get("params", []) or [])
    assert charts.selected_item({"selection": {"item": [{"item_id": "mix:3"}]}}) == "mix:3"
    assert charts.selected_item({"selection": {"item": {"item_id": ["mix:2"]}}}) == "mix:2"
    assert charts.selected_item({"selection": {"item": []}}) is None


def test_view_state_keeps_old_urls_and_round_trips():
    old = {"model": "smollm2-135m", "prompt": "x", "dtype": "float32", "run": "abc"}
    state = app.state_from_query(old)
    assert state.cmp_mode == "prompt" and state.agg == "token" and state.item is None
    assert app.state_to_query(state) == old
    state = app.ViewState(model="m", cmp_mode="items", dataset="gsm8k", agg="prompt", ed_probe="kl",
                            ed_rule="guarded", item="gsm8k:3")
    assert app.state_from_query(app.state_to_query(state)) == state
    bad = app.state_from_query({"cmp_mode": "nope", "agg": "median", "ed_probe": "skip", "item": " "})
    assert (bad.cmp_mode, bad.agg, bad.ed_probe, bad.item) == ("prompt", "token", "cosine", None)


# ------------------------------------------------------------------------ tiny-model sweeps (integration)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Two tiny Llamas (6 and 8 layers, same tokenizer) swept on six items; a template cache file."""
    base = tmp_path_factory.mktemp("difficulty")
    a = str(app_support.build_tiny_dir(base / "tiny-a", seed=1))
    b = str(app_support.build_tiny_dir(base / "tiny-b", seed=2, n_layers=8))
    template = app_support.fill_sweeps(base / "template.duckdb", a, b)
    no_skip = app_support.fill_sweeps(base / "noskip.duckdb", a, skip=False)
    return {"a": a, "b": b, "template": template, "no_skip": no_skip}


def _copy(src: Path, cache: Path) -> Path:
    shutil.copy(src, cache)
    return cache


def test_tiny_sweeps_merge_two_configs_per_item(swept, tmp_path):
    store = Store(_copy(swept["template"], tmp_path / "c.duckdb"))
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    assert list(sets["n_layers"]) == [6, 8] and list(sets["n_runs"]) == [12, 6]
    item_set = sweeps.load_items(store, sets["key"].iloc[0])
    assert item_set.bins == ["arith", "story"] and len(item_set.items) == 6
    assert item_set.items["has_curves"].all() and item_set.items["has_skip"].all()
    metas = {r: store.meta(r) for ids in item_set.items["run_ids"] for r in ids}
    skip_ids, cos_ids = [], []
    for ids in item_set.items["run_ids"]:
        assert len(ids) == 2
        probes = {r: metas[r]["probes"] for r in ids}
        skip_ids += [r for r in ids if probes[r] == ["skip"]]
        cos_ids += [r for r in ids if probes[r] == ["cosine", "logit_lens"]]
    assert len(skip_ids) == len(cos_ids) == 6
    # the depth score is sweeps.depth_score_by_bin over the skip runs' stored tables
    expected = sweeps.depth_score_by_bin({r: store.table(r, "skip") for r in skip_ids},
                                        {r: store.table(r, "skip_output") for r in skip_ids},
                                        {r: metas[r]["bin"] for r in skip_ids})
    got = sweeps.depth_scores(item_set)
    pd.testing.assert_frame_equal(got.scores.reset_index(drop=True), expected.scores.reset_index(drop=True))
    # the bin aggregate is sweeps.bootstrap_ci over sweeps.collect of the cosine / logit-lens runs
    agg = sweeps.aggregate_by_bin(item_set, "token", n_boot=N_BOOT)
    for name in ("arith", "story"):
        ids = [r for r in cos_ids if metas[r]["bin"] == name]
        frames, counts = sweeps.collect(store, ids)
        direct = sweeps.bootstrap_ci(frames, counts, "token", n_boot=N_BOOT).ed
        direct = direct[direct["probe"].isin(sweeps.ED_PROBES)].set_index(["probe", "rule"])
        got_ed = agg.ed[agg.ed["group"] == name].set_index(["probe", "rule"])
        for key in direct.index:
            assert str(direct.loc[key, "ed"]) == str(got_ed.loc[key, "ed"])
            for col in ("ed_lo", "ed_hi", "frac_none"):
                assert (pd.isna(direct.loc[key, col]) and pd.isna(got_ed.loc[key, col])) or \
                    direct.loc[key, col] == pytest.approx(got_ed.loc[key, col])


# ---------------------------------------------------------------------------------------- the pages


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "effdepth.duckdb"
    monkeypatch.setenv("EFFDEPTH_CACHE", str(path))
    monkeypatch.setattr(sweeps.curves, "N_BOOT", N_BOOT)  # fewer resamples: same point estimates, faster pages
    return path


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(name)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return at.run()


def url(at: AppTest) -> dict[str, str]:
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]


def title(spec: dict) -> str:
    t = spec.get("title")
    return t.get("text", "") if isinstance(t, dict) else str(t or "")


def by_title(at: AppTest, prefix: str) -> dict:
    found = [s for s in specs(at) if title(s).startswith(prefix)]
    assert found, f"no chart titled {prefix!r}; have {[title(s) for s in specs(at)]}"
    return found[0]


def marks(spec: dict) -> set[str]:
    return {charts.mark_type(v) for v in charts.iter_views(spec) if charts.mark_type(v)}


def chart_data(at: AppTest, prefix: str) -> list[pd.DataFrame]:
    """The data frames of a chart (Streamlit moves named datasets to the proto as Arrow bytes)."""
    import pyarrow as pa

    for el in at.get("vega_lite_chart"):
        if title(json.loads(el.proto.spec)).startswith(prefix):
            return [pa.ipc.open_stream(d.data.data).read_pandas() for d in el.proto.datasets]
    raise AssertionError(f"no chart titled {prefix!r}")


def no_problems(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _backend(cache: Path, model: str, how: str = "token"):
    store = Store(cache)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    key = sweeps.pick_set(sets, model, "float32", False)
    item_set = sweeps.load_items(store, key)
    return item_set, sweeps.aggregate_by_bin(item_set, how, n_boot=N_BOOT)


def test_difficulty_page(cache, swept):
    _copy(swept["template"], cache)
    at = page(DIFFICULTY, model=swept["a"], demo=1)
    no_problems(at)
    item_set, agg = _backend(cache, swept["a"])
    assert url(at)["model"] == swept["a"] and url(at)["demo"] == "1"
    picker = at.selectbox(key="w_set_a")
    assert picker.value == item_set.key and len(picker.options) == 2
    assert any("6 layers · 6 items: arith 3, story 3" in o for o in picker.options)
    # EDR with CIs: the table is the backend's, the charts are points with CI bars
    table = at.dataframe[0].value
    pd.testing.assert_frame_equal(table.reset_index(drop=True), app.edr_display(agg.ed).reset_index(drop=True),
                                  check_dtype=False)
    assert {"point", "rule"} <= marks(by_title(at, "EDR with 95% bootstrap CI — P1"))
    assert {"point", "rule"} <= marks(by_title(at, "EDR with 95% bootstrap CI — guarded"))
    # aggregate curves per bin: band + line, the ED rules at the layers the backend reports
    for probe, prefix in (("cosine", "cosine μ per bin"), ("kl", "logit-lens KL per bin"),
                          ("overlap", "top-5 overlap per bin")):
        spec = by_title(at, prefix)
        assert {"area", "line", "rule"} <= marks(spec)
        expected = {int(e) for e in sweeps.probe_eds(agg, probe)["ed"].dropna()}
        assert set(charts.rule_positions(spec, "x")) == expected, probe
    # depth score from the merged skip-only runs
    bars = by_title(at, "Depth score per bin — max")
    assert {"bar", "text"} <= marks(bars)
    frame = next(f for f in chart_data(at, "Depth score per bin — max") if "depth_score" in f)
    values = {(r.bin, r.effect): r.depth_score for r in frame.itertuples()}
    scores = sweeps.depth_scores(item_set).scores
    for r in scores[scores["reduce"] == "max"].itertuples():
        assert values[(r.bin, r.effect)] == pytest.approx(r.depth_score)
    assert "line" in marks(by_title(at, "Layer effect profile"))
    # per-token depth by class: the backend's table, answer tokens apart from the question's
    drawn = next(d.value for d in at.dataframe if "mean depth" in d.value.columns)
    expected = app.token_depth_table(Store(cache), item_set)
    pd.testing.assert_frame_equal(drawn.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)
    assert {"answer", "question"} <= set(drawn["tokens of"]) and set(drawn["bin"]) == {"arith", "story"}
    # per-item ED strip (clickable) and the link to Explore
    strip = by_title(at, "ED per item")
    assert {"boxplot", "circle", "tick"} <= marks(strip)
    assert "Open this item in Explore" not in {p.proto.label for p in at.get("page_link")}
    at.selectbox(key="w_diff_item").select("arith:1").run()
    no_problems(at)
    assert url(at)["item"] == "arith:1"
    links = {p.proto.label: p.proto for p in at.get("page_link")}
    expected_run = sweeps.explore_run(item_set, "arith:1", "cosine")
    assert f"run={expected_run}" in links["Open this item in Explore"].query_string
    assert "demo=1" in links["Open this item in Explore"].query_string
    assert {p.proto.label for p in at.get("page_link")} >= {"Difficulty", "Explore", "Compare", "Runs", "Home"}
    assert not at.button  # read-only: nothing to compute


def test_difficulty_page_state_in_the_url(cache, swept):
    _copy(swept["template"], cache)
    at = page(DIFFICULTY, model=swept["a"])
    at.radio(key="w_agg").set_value("prompt").run()
    at.radio(key="w_ed_probe").set_value("kl").run()
    at.radio(key="w_ed_rule").set_value("guarded").run()
    no_problems(at)
    query = url(at)
    assert query | {"agg": "prompt", "ed_probe": "kl", "ed_rule": "guarded"} == query
    _, agg = _backend(cache, swept["a"], "prompt")
    pd.testing.assert_frame_equal(at.dataframe[0].value.reset_index(drop=True),
                                  app.edr_display(agg.ed).reset_index(drop=True), check_dtype=False)
    assert "logit-lens KL, guarded rule" in json.dumps(by_title(at, "ED per item"))
    again = page(DIFFICULTY, **query)  # a copied link reopens the same view
    no_problems(again)
    assert again.radio(key="w_agg").value == "prompt" and again.radio(key="w_ed_probe").value == "kl"
    # an item of another page (not among this sweep's items) is kept in the URL but not selected here
    other_item = page(DIFFICULTY, model=swept["a"], item="gsm8k:5")
    no_problems(other_item)
    assert url(other_item)["item"] == "gsm8k:5" and other_item.selectbox(key="w_diff_item").value is None
    assert "Open this item in Explore" not in {p.proto.label for p in other_item.get("page_link")}
    # picking the other model's sweep changes the URL's model
    sets = sweeps.sweep_sets(sweeps.item_runs(Store(cache)))
    again.selectbox(key="w_set_a").select(sets[sets["n_layers"] == 8]["key"].iloc[0]).run()
    no_problems(again)
    assert url(again)["model"] == swept["b"]
    assert any("--probes skip --skip-variants future" in i.value for i in again.info)  # B has no skip runs


def test_difficulty_without_skip_runs_names_the_command(cache, swept):
    _copy(swept["no_skip"], cache)
    at = page(DIFFICULTY)
    no_problems(at)
    info = " ".join(i.value for i in at.info)
    assert f"effdepth sweep --model {swept['a']} --dataset gsm8k --n 20 --probes skip --skip-variants future" in info
    assert not [s for s in specs(at) if title(s).startswith("Depth score")]
    assert by_title(at, "cosine μ per bin")
    single = page(COMPARE, cmp_mode="items")  # one swept model only: Compare says how to add a second
    no_problems(single)
    info = " ".join(i.value for i in single.info)
    assert "sweeps of one model only" in info and "effdepth sweep --model smollm2-135m --dataset arith" in info
    assert not specs(single)


def test_difficulty_empty_and_broken_caches(cache):
    at = page(DIFFICULTY)
    assert not at.exception and not at.error
    info = " ".join(i.value for i in at.info)
    assert "No benchmark sweeps in the cache yet" in info and "effdepth sweep --model smollm2-135m" in info
    assert not specs(at)
    cache.write_bytes(b"this is not a duckdb file" * 100)
    broken = page(DIFFICULTY)
    assert not broken.exception
    assert "not a readable DuckDB cache" in " ".join(e.value for e in broken.error)
    assert [b for b in broken.button if b.label == "Move the broken cache aside"]


def test_difficulty_locked_cache_is_an_error(cache, swept, monkeypatch):
    import subprocess
    import sys

    _copy(swept["template"], cache)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)"),
        str(cache)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(app, "open_store", lambda path=None: Store(cache, lock_timeout=0.5))
        for name, query in ((DIFFICULTY, {}), (COMPARE, {"cmp_mode": "items"})):
            at = page(name, **query)
            assert not at.exception
            assert "locked by another process" in " ".join(e.value for e in at.error), name
            assert not specs(at)
    finally:
        holder.kill()
        holder.wait()


def test_compare_items_mode(cache, swept):
    _copy(swept["template"], cache)
    at = page(COMPARE, cmp_mode="items", model=swept["a"])
    no_problems(at)
    assert url(at)["model_b"] == swept["b"]  # B defaults to the other sweep
    assert at.selectbox(key="w_dataset").value == "arith"
    store = Store(cache)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    set_a, set_b = (sweeps.load_items(store, sweeps.pick_set(sets, m, "float32", False))
                    for m in (swept["a"], swept["b"]))
    labels = app.pair_labels(set_a.meta(), set_b.meta())
    ids = sweeps.shared_items(set_a, set_b, "arith")
    assert len(ids) == 3
    agg = sweeps.compare_aggregate(set_a, set_b, labels, ids, "token", n_boot=N_BOOT)
    for probe, prefix in (("cosine", "cosine μ per model"), ("kl", "logit-lens KL per model"),
                          ("overlap", "top-5 overlap per model")):
        spec = by_title(at, prefix)
        assert {"area", "line", "rule"} <= marks(spec)
        line = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "line")
        assert line["encoding"]["x"]["field"] == "depth"
        eds = sweeps.probe_eds(agg, probe).dropna(subset=["ed"])
        assert set(charts.rule_positions(spec, "x")) == {int(r.ed) / r.n_layers for r in eds.itertuples()}
        assert {int(r.n_layers) for r in eds.itertuples()} <= {6, 8}
    table = at.dataframe[0].value
    assert set(table["model"]) == set(labels) and len(table) == 12
    pd.testing.assert_frame_equal(table.reset_index(drop=True),
                                  app.edr_display(agg.ed, "model").reset_index(drop=True), check_dtype=False)
    at.selectbox(key="w_dataset").select("story").run()
    no_problems(at)
    assert url(at)["dataset"] == "story"
    # back to one prompt: the one-prompt Compare is unchanged
    at.radio(key="w_cmp_mode").set_value("prompt").run()
    assert not at.exception
    assert "cmp_mode" not in url(at)
    assert at.selectbox(key="w_model_choice") and at.text_area(key="w_prompt")


def test_a_section_says_which_bins_it_leaves_out_and_why():
    """One dataset swept for the lens, another for skips: each section names the bin it lacks, and why."""
    from types import SimpleNamespace

    items = pd.DataFrame({"bin": ["gsm8k", "gsm8k", "aime", "math"], "has_curves": [True, True, False, False],
                          "has_skip": [False, False, True, False]})
    item_set = SimpleNamespace(items=items, bins=["gsm8k", "aime", "math"])
    assert app.absent_bins(item_set, ["gsm8k"], "curves") == [
        "aime: its only item has no cosine or logit-lens curves (skip runs only).",
        "math: its only item has no cosine or logit-lens curves."]
    assert app.absent_bins(item_set, ["aime"], "skip") == [
        "gsm8k: its 2 items have no future-effect skip matrix (cosine / logit-lens runs only).",
        "math: its only item has no future-effect skip matrix."]
    assert app.absent_bins(item_set, ["gsm8k", "aime", "math"], "skip") == []
