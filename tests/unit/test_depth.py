"""ED rules on synthetic curves (docs/SPEC.md §8), including P1's KL artefact."""

import numpy as np
import pandas as pd
import pytest

from effdepth import depth


def test_cosine_p1_takes_the_last_crossing():
    mu = np.array([-0.5, 0.1, -0.2, -0.3, 0.2, 0.3, 0.4, -0.1])
    result = depth.ed_cosine(mu)
    assert result.ed == 3 and result.edr == pytest.approx(4 / 8)


def test_cosine_guarded_ignores_a_one_layer_blip():
    mu = np.array([-0.5, -0.4, -0.1, 0.2, 0.3, 0.4, 0.2, -0.2, 0.1, -0.3])
    assert depth.ed_cosine(mu).ed == 7          # P1: the blip at 7→8 is the last crossing
    assert depth.ed_cosine(mu, guarded=True).ed == 2  # it stays ≥ 0 for 3 layers only from 3 on


def test_no_crossing_is_a_result_not_an_error():
    result = depth.ed_cosine(np.array([0.1, 0.2, 0.3]))
    assert result.ed is None and result.edr is None
    assert depth.ed_kl(np.zeros(5)).ed is None
    assert depth.ed_overlap(np.zeros(5)).ed is None


def test_kl_p1_rule_and_its_layer0_artefact():
    kl = np.array([9.0, 4.0, 6.0, 5.5, 5.0, 3.0, 1.0, 0.5, 0.0])
    p1 = depth.ed_kl(kl)
    assert p1.ed == 1 and p1.threshold == pytest.approx(4.5)  # fires at once: max is at l = 0
    guarded = depth.ed_kl(kl, guarded=True)
    assert guarded.threshold == pytest.approx(3.0)  # 0.5 · max over l ≥ 1
    assert guarded.ed == 6                           # and KL stays below it from 6 on
    assert guarded.edr == pytest.approx(7 / 9)


def test_kl_p1_never_picks_the_last_layer():
    assert depth.ed_kl(np.array([4.0, 3.0, 2.5, 2.1])).ed is None  # 2.1 > 2.0 until L-2
    assert depth.ed_kl(np.array([4.0, 3.0, 2.5, 1.0])).ed is None  # l = L-1 is outside [0, L-2]


def test_overlap_rules():
    ov = np.array([0.0, 0.1, 0.4, 0.2, 0.35, 0.6, 0.8, 1.0])
    assert depth.ed_overlap(ov).ed == 2
    assert depth.ed_overlap(ov, guarded=True).ed == 4
    assert depth.ed_overlap(ov).edr == pytest.approx(3 / 8)


def test_skip_rule_and_depth_score():
    L = 6
    matrix = np.zeros((L, L))
    for s in range(L):
        matrix[s, s + 1:] = [0.9, 0.8, 0.7, 0.2, 0.1, 0.05][s]
    effect = depth.layer_effect(matrix)
    np.testing.assert_allclose(effect, [0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    assert depth.ed_skip(matrix).ed == 2  # last s with e(s) ≥ 0.45
    expected = (0 * 0.9 + 1 * 0.8 + 2 * 0.7 + 3 * 0.2 + 4 * 0.1) / 2.7
    assert depth.depth_score(effect) == pytest.approx(expected)
    assert depth.depth_score(np.zeros(4)) is None


def test_ed_table_from_layer_frame():
    mu = [-0.3, -0.2, -0.1, -0.05, 0.1, 0.2, 0.3, 0.1]
    rows = []
    for metric in ("cos_att", "cos_mlp", "cos_layer"):
        rows += [{"metric": metric, "layer": l, "value": v} for l, v in enumerate(mu)]
    rows += [{"metric": "kl", "layer": l, "value": v} for l, v in enumerate([8, 7, 6, 5, 3, 2, 1, 0])]
    rows += [{"metric": "overlap", "layer": l, "value": v}
             for l, v in enumerate([0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1])]
    table = depth.ed_table(pd.DataFrame(rows))
    got = table.set_index(["probe", "rule"])["ed"]
    assert got[("cosine", "p1")] == 3 and got[("kl", "p1")] == 4 and got[("overlap", "p1")] == 4
    assert set(table["rule"]) == {"p1", "guarded"}
    assert table.set_index(["probe", "rule"]).loc[("cosine", "p1"), "edr"] == pytest.approx(0.5)


def test_skip_rule_ignores_a_layer0_spike():
    L = 8
    matrix = np.zeros((L, L))
    for s, value in enumerate([4.0, 0.5, 0.45, 0.4, 0.3, 0.1, 0.05, 0.0]):
        matrix[s, s + 1:] = value
    result = depth.ed_skip(matrix)
    assert result.threshold == pytest.approx(0.25)  # 0.5 · max over s ≥ 1
    assert result.ed == 4


def test_runs_carry_the_cosine_mean_and_old_runs_get_the_same(word_model):
    from effdepth import engine

    layer = engine.run_probes(word_model, " ".join(f"w{i}" for i in range(20)),
                              engine.ProbeConfig(probes=("cosine",))).tables["layer"]
    wide = layer.pivot(index="layer", columns="metric", values="value")
    assert np.allclose(wide["cos_mu"], (wide["cos_att"] + wide["cos_mlp"] + wide["cos_layer"]) / 3, atol=1e-15)
    old = layer[layer["metric"] != "cos_mu"]  # a run cached before μ was stored
    again = depth.with_cosine_mean(old)
    pd.testing.assert_frame_equal(again[again["metric"] == "cos_mu"].reset_index(drop=True),
                                  layer[layer["metric"] == "cos_mu"].reset_index(drop=True), check_exact=True)
    assert depth.with_cosine_mean(layer) is layer  # already there: nothing added


# ----------------------------------------------------------------------------------- per-token depth


def _ranks(rows: dict[int, list[int]]) -> pd.DataFrame:
    """layer_token rows of the lens's rank metric: {pos: [rank at layer 0, 1, ...]}."""
    return pd.DataFrame([{"metric": "rank", "layer": layer, "pos": pos, "value": float(value)}
                         for pos, ranks in rows.items() for layer, value in enumerate(ranks)])


def test_token_depth_known_values():
    frame = _ranks({0: [1, 1, 1, 1], 1: [3, 1, 1, 1], 2: [1, 5, 1, 1], 3: [1, 1, 1, 2], 4: [2, 2, 2, 2]})
    got = depth.token_depth(frame, 4).set_index("pos")["value"].to_dict()
    # committed from the embeddings; from layer 1; from layer 2 (a dip at 1 breaks the run); only the
    # output (the last lens row disagrees); never before the output
    assert got == {0: 0, 1: 1, 2: 2, 3: 4, 4: 4}
    assert depth.token_depth(frame[frame["metric"] == "kl"], 4).empty
    with pytest.raises(ValueError, match="expected 0..4"):
        depth.token_depth(frame, 5)


def test_token_depth_of_a_real_run_is_the_lens_top1_read_plainly(word_model):
    """Against the plain reading of the lens's top-1 tokens at every layer (the lens_topk table)."""
    from effdepth import engine
    from tests.unit.test_store import TEXT

    run = engine.run_probes(word_model, TEXT, engine.ProbeConfig(probes=("logit_lens",)))
    n_layers = run.meta["n_layers"]
    top = run.tables["lens_topk"]
    top1 = top[top["rank"] == 1].set_index(["pos", "layer"])["token_id"]
    got = depth.token_depth(run.tables["layer_token"], n_layers).set_index("pos")["value"]
    from effdepth.capture import capture

    trace = capture(word_model.model, engine.tokenize(word_model, TEXT, False))
    model_top = trace.logits.argmax(-1)
    for pos in range(run.meta["n_tokens"]):
        c = n_layers
        while c > 0 and int(top1[(pos, c - 1)]) == int(model_top[pos]):
            c -= 1
        assert got[pos] == c, pos
    assert got.nunique() > 1  # the text has tokens of different commitment depth
