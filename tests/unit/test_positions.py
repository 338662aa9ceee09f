"""Measured positions (issue 11 §2): the forward covers the text, the per-position probes read a window,
and their numbers are the full run's at those positions (the per-layer means: their mean over the window)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from effdepth import cli, engine, positions
from effdepth.errors import PromptError
from effdepth.probes import cosine, logit_lens
from tests.unit.test_store import TEXT

WINDOWED = ("cosine", "logit_lens")


@pytest.mark.parametrize("spec, n, answer_len, want", [
    ("all", 5, None, [0, 1, 2, 3, 4]), ("last:2", 5, None, [3, 4]), ("last:9", 5, None, [0, 1, 2, 3, 4]),
    ("from:3", 5, None, [3, 4]), ("stride:2", 5, None, [0, 2, 4]), ("answer", 5, 2, [3, 4]),
    (" Last:2 ", 5, None, [3, 4])])
def test_the_forms(spec, n, answer_len, want):
    assert positions.select(spec, n, answer_len) == want


@pytest.mark.parametrize("spec", ["first:3", "last:0", "stride:0", "last:x", "answer", "from:9"])
def test_bad_forms_are_refused(spec):
    with pytest.raises(PromptError, match="positions"):
        positions.select(spec, 5)


def _rows(frame: pd.DataFrame, metrics, where) -> pd.DataFrame:
    rows = frame[frame["metric"].isin(metrics) & where(frame)]
    return rows.sort_values(["metric", "layer", "pos"]).reset_index(drop=True)


def test_windowed_values_are_the_full_runs_at_those_positions(word_model):
    full = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=WINDOWED))
    window = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=WINDOWED, positions="last:6"))
    measured = list(range(15, 21))
    assert window.meta["measured"] == measured and window.meta["n_tokens"] == full.meta["n_tokens"] == 21
    assert set(window.tables["layer_token"]["pos"]) == set(measured)
    metrics = cosine.METRICS + logit_lens.METRICS
    got = _rows(window.tables["layer_token"], metrics, lambda f: f["pos"] >= 0)
    want = _rows(full.tables["layer_token"], metrics, lambda f: f["pos"].isin(measured))
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-5, rtol=1e-5)
    # per-layer means: the mean over the window of the full run's per-position values
    per_position = full.tables["layer_token"]
    means = (per_position[per_position["pos"].isin(measured)].groupby(["metric", "layer"])["value"].mean())
    layer = window.tables["layer"].set_index(["metric", "layer"])["value"]
    for (metric, layer_index), value in means.items():
        assert layer[(metric, layer_index)] == pytest.approx(value, abs=1e-6), (metric, layer_index)
    top_full, top_window = full.tables["lens_topk"], window.tables["lens_topk"]
    pd.testing.assert_frame_equal(
        top_window.sort_values(["layer", "pos", "rank"]).reset_index(drop=True),
        top_full[top_full["pos"].isin(measured)].sort_values(["layer", "pos", "rank"]).reset_index(drop=True),
        check_exact=False, atol=1e-6)
    assert window.run_id != full.run_id  # part of the cache key
    assert engine.ProbeConfig().as_dict() == engine.ProbeConfig(positions="all").as_dict()  # old keys stay


def test_the_heatmap_shades_the_unmeasured_columns(word_model):
    from effdepth import charts

    window = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine",), positions="last:6"))
    spec = charts.layer_token_heatmap(window.tables["layer_token"], window.tables["tokens"], "cos_layer").to_dict()
    bands = [v for v in charts.iter_views(spec) if v.get("mark", {}).get("color") == "#e8e8e8"]
    assert len(bands) == 1 and [r["pos"] for r in spec["datasets"][bands[0]["data"]["name"]]] == list(range(15))
    full = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine",)))
    plain = charts.layer_token_heatmap(full.tables["layer_token"], full.tables["tokens"], "cos_layer").to_dict()
    assert not [v for v in charts.iter_views(plain) if v.get("mark", {}).get("color") == "#e8e8e8"]


def test_a_windowed_pass_decodes_only_what_the_probes_read(word_model):
    """The clean pass of a windowed run computes the model's logits at the measured positions and the
    last only ([T, V] logits of a 150k vocabulary are gigabytes on a long text), and the skip probe
    decodes its variants there too."""
    from effdepth.arch import taps

    rows: list[int] = []
    handle = taps(word_model.model).unembed.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[-2]))
    try:
        run = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=WINDOWED, positions="stride:5"))
        first_window = rows[0]
        rows.clear()
        with_skip = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine", "skip"),
                                                                           positions="stride:5"))
    finally:
        handle.remove()
    assert run.meta["measured"] == [0, 5, 10, 15, 20]
    assert first_window == 5  # the model's own forward: positions 0, 5, 10, 15, 20 (20 is the last)
    assert rows[0] == 5 and max(rows) <= 5 * (word_model.n_layers + 1) * 8  # the skip decodes the window only
    assert run.meta["checks"]["lens_last_max_abs"] < 1e-4  # the trust check reads the kept positions
    assert with_skip.meta["splits_used"] and all(0 <= t <= 20 for t in with_skip.meta["splits_used"])


def test_a_trace_with_some_logits_says_which_it_kept(word_model):
    from effdepth.capture import capture

    ids = engine.tokenize(word_model, TEXT, False)
    full = capture(word_model.model, ids)
    some = capture(word_model.model, ids, logit_positions=[7, 3, 20])
    assert some.logits.shape[0] == 3 and some.logit_positions.tolist() == [3, 7, 20]
    assert (some.logits_at([20, 3]) - full.logits[[20, 3]]).abs().max() < 1e-5
    assert (some.at([3, 20]).logits - full.logits[[3, 20]]).abs().max() < 1e-5
    assert (some.resid - full.resid).abs().max() == 0
    with pytest.raises(ValueError, match="kept no logits at positions \\[4\\]"):
        some.logits_at([4])
    with pytest.raises(ValueError, match="kept the logits of 3 of its 21 positions"):
        some.full_logits  # noqa: B018
    assert capture(word_model.model, ids, logit_positions=range(len(ids))).logit_positions is None


def test_answer_positions_are_the_answer_span(word_model):
    run = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("cosine",), positions="answer",
                                                                 answer="w18 w19"))
    assert run.meta["measured"] == [19, 20]  # <s> w0 … w19: the answer is the last two tokens


def test_erasure_reads_the_window(word_model):
    config = dict(probes=("erasure",), answer="w19")
    full = engine.run_probes(word_model, TEXT, engine.ProbeConfig(**config))
    window = engine.run_probes(word_model, TEXT, engine.ProbeConfig(**config, positions="stride:4"))
    cols = [0, 4, 8, 12, 16, 20]
    assert sorted(set(window.tables["erasure"]["pos"])) == cols
    want = full.tables["erasure"][full.tables["erasure"]["pos"].isin(cols)].sort_values(["depth", "pos"])
    got = window.tables["erasure"].sort_values(["depth", "pos"])
    assert got["value"].to_numpy() == pytest.approx(want["value"].to_numpy(), abs=1e-6)


def test_the_cli_takes_positions(word_model_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--positions", "last:4",
                     "--probes", "cosine,logit_lens", "--cache", str(tmp_path / "c.duckdb"), "--json", str(out),
                     "-q"]) == 0
    assert "measured  last:4: 4 of 21 positions (17 … 20)" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["measured_positions"] == [17, 18, 19, 20]
    depth_per_token = doc["token_depth"]  # per position of the text: null where not measured
    assert len(depth_per_token) == 21 and depth_per_token[:17] == [None] * 17
    assert all(isinstance(c, int) and 0 <= c <= 3 for c in depth_per_token[17:])
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--positions", "first:4"]) == 2
    assert "not one of all, last:N" in capsys.readouterr().err
