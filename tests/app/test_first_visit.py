"""What a first visit meets (issue 11 §4-5): the trust badge, the headline ED rule with P1's rejected EDs
flagged, the rank of the final top-1 in the logit lens, and a default prompt that shows every probe."""

from __future__ import annotations

import pandas as pd
import pytest

from effdepth import app, checks, cli, models
from tests import app_support
from tests.app.test_app import EXPLORE, by_title, marks, no_problems, page, url


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run of a tiny random Llama (6 layers) on a 20-token prompt: every probe, the future skip included."""
    path = app_support.build_tiny_dir(tmp_path_factory.mktemp("first-visit") / "tiny", seed=3)
    return str(path), app_support.compute_run(str(path), app_support.TINY_PROMPT)


def _ed_table(p1: int | None, guarded: int | None, n_layers: int = 30) -> pd.DataFrame:
    rows = []
    for probe in ("cosine", "kl", "overlap"):
        for rule, ed in (("p1", p1), ("guarded", guarded)):
            rows.append({"probe": probe, "rule": rule, "ed": ed, "edr": None if ed is None else (ed + 1) / n_layers})
    rows.append({"probe": "skip", "rule": "proposed", "ed": 5, "edr": 6 / n_layers})
    return pd.DataFrame(rows).astype({"ed": "Int64"})


def _strip(ed: pd.DataFrame, rule: str) -> dict[str, tuple[str, str | None, str]]:
    meta = {"n_layers": 30, "n_tokens": 20, "probes": ["cosine", "logit_lens", "skip"], "dtype": "float32"}
    return {label: (value, delta, help_text) for label, value, delta, help_text
            in app.summary_items(meta, ed, from_cache=True, rule=rule)}


# ----------------------------------------------------------------------------------------- the badge


def test_trust_is_green_on_a_clean_run_and_amber_when_an_invariant_breaks(tiny_run):
    _, run = tiny_run
    trust = checks.trust(run.meta, run.tables["skip"])
    assert trust.level == "green" and not trust.problems
    assert trust.closure is not None and trust.closure <= checks.TOLERANCE["float32"][0]
    assert trust.noise is not None and trust.noise <= checks.NOISE_TOLERANCE["float32"]
    assert "closure" in trust.numbers() and "noise floor" in trust.numbers() and "float32" in trust.numbers()

    broken = {**run.meta, "checks": {**run.meta["checks"], "residual_closure": 0.3}}
    amber = checks.trust(broken, run.tables["skip"])
    assert amber.level == "amber" and "residual closure" in amber.problems[0] and "0.3" in amber.problems[0]

    noisy = run.tables["skip"].copy()
    noisy.loc[noisy["variant"].str.startswith("noise_"), "value"] = 0.2
    assert checks.trust(run.meta, noisy).level == "amber"
    assert "noise floor" in checks.trust(run.meta, noisy).problems[0]

    old = {k: v for k, v in run.meta.items() if k != "checks"}
    assert checks.trust(old, run.tables["skip"]).level == "unverified"


def test_explore_shows_the_badge(cache, tiny_run):
    model, run = tiny_run
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id)
    no_problems(at)
    badges = " ".join(m.value for m in at.markdown)
    assert "Checks pass" in badges and "closure" in badges and "noise floor" in badges


def test_cli_prints_and_writes_the_badge(tiny_run, tmp_path, capsys):
    model, _ = tiny_run
    out = tmp_path / "run.json"
    assert cli.main(["probe", "--model", model, "--text", app_support.TINY_PROMPT, "--cache",
                     str(tmp_path / "c.duckdb"), "--json", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "checks    pass: closure" in printed and "noise floor" in printed
    import json

    doc = json.loads(out.read_text())
    assert doc["trust"]["level"] == "green" and doc["trust"]["problems"] == []
    assert doc["trust"]["noise_floor"] is not None


# ---------------------------------------------------------------------------------- headline rule


def test_the_strip_headlines_the_chosen_rule_and_flags_a_rejected_p1_ed():
    ed = _ed_table(p1=1, guarded=21)
    p1 = _strip(ed, "p1")["ED logit-lens KL"]
    assert p1[0] == "1" and "guard rejects P1's 1" in p1[1] and "which its guard rejects" in p1[2]
    guarded = _strip(ed, "guarded")["ED logit-lens KL"]
    assert guarded[0] == "21" and "P1 says 1" in guarded[1] and "EDR 0.73" in guarded[1]
    agree = _strip(_ed_table(p1=20, guarded=20), "p1")["ED logit-lens KL"]
    assert agree[1] == "EDR 0.70" and "rejects" not in agree[2]
    none_p1 = _strip(_ed_table(p1=None, guarded=None), "p1")["ED cosine μ"]
    assert none_p1[0] == "none" and none_p1[1] is None
    assert _strip(ed, "guarded")["ED layer-skip effect"][0] == "5"  # the skip ED has its own single rule


def test_explore_headline_rule_lives_in_the_url(cache, tiny_run):
    _, run = tiny_run
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id)
    no_problems(at)
    ed = run.tables["ed"]
    guarded = ed[(ed["probe"] == "kl") & (ed["rule"] == "guarded")]["ed"].iloc[0]
    at.radio(key="w_headline_rule").set_value("guarded").run()
    no_problems(at)
    assert url(at)["ed_rule"] == "guarded"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["ED logit-lens KL"] == ("none" if pd.isna(guarded) else str(int(guarded)))


# ------------------------------------------------------------------------------------- the lens rank


def test_the_rank_of_the_final_top1_is_offered(cache, tiny_run):
    _, run = tiny_run
    assert "rank" in app.LENS_METRICS
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id, lens="rank")
    no_problems(at)
    assert "rect" in marks(by_title(at, "rank of the final top-1"))


# ---------------------------------------------------------------------------------- default prompt


@pytest.mark.slow
def test_the_default_prompt_is_long_enough_for_every_probe():
    """The default model's tokenizer gives the default prompt at least 13 tokens (the future-effect skip)."""
    from transformers import AutoTokenizer

    from effdepth.models import registry

    copy = registry.model_cache_dir(models.DEFAULT_MODEL) / "hf"
    if not copy.exists():
        pytest.skip(f"{copy} is made by `make setup`")
    tokenizer = AutoTokenizer.from_pretrained(copy)
    assert len(tokenizer(app.DEFAULT_PROMPT)["input_ids"]) >= 13
    assert app.ViewState().prompt == app.DEFAULT_PROMPT


# ------------------------------------------------------------------------------------ Compare opens


COMPARE = "pages/2_Compare.py"


def test_compare_state_rule():
    fresh = app.ViewState()
    app.compare_models(fresh, {})
    assert (fresh.model, fresh.model_b) == app.DEMO_PAIR
    chosen = app.ViewState(model="/some/model")
    app.compare_models(chosen, {"model": "/some/model"})
    assert (chosen.model, chosen.model_b) == ("/some/model", app.DEMO_PAIR[0])
    partner = app.ViewState(model=app.DEMO_PAIR[0])
    app.compare_models(partner, {"model": app.DEMO_PAIR[0]})
    assert partner.model_b == app.DEMO_PAIR[1]
    same = app.ViewState(model="m", model_b="m")
    app.compare_models(same, {"model": "m", "model_b": "m"})  # B = A on purpose, by the URL
    assert same.model_b == "m"


def test_compare_opens_on_two_different_models(cache):
    at = page(COMPARE)
    no_problems(at)
    assert (url(at)["model"], url(at)["model_b"]) == app.DEMO_PAIR
    assert {b.label for b in at.button} >= {"Compute A", "Compute B"}  # nothing computed by opening


def test_explore_says_what_erasure_and_ig_will_cost(cache, tiny_run):
    _, run = tiny_run
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id)
    no_problems(at)
    captions = app_support.unescape(" ".join(c.value for c in at.caption))
    assert "Estimated cost on this text: forward pass ~" in captions
    assert "erasure ~" in captions and "igrad ~" in captions and "peak memory ~" in captions
    assert "GFLOP/s (float32, measured here)" in captions


# ------------------------------------------------------------------------------ a window for long texts


def test_a_long_text_gets_a_window_with_both_costs():
    shape = (30, 576, 49152)
    assert app.window_proposal("short text", "all", shape) is None
    long_text = "word " * 800  # 4,000 characters: about 1,000 tokens
    assert app.window_proposal(long_text, "last:64", shape) is None  # a window is set already
    proposal = app.window_proposal(long_text, "all", shape)
    assert proposal.n_tokens == 1000 and not proposal.exact and proposal.positions == f"last:{app.WINDOW}"
    assert "about 1,000 tokens" in proposal.message and "logit_lens ~" in proposal.full_cost
    from effdepth import estimate
    full = estimate.flops(estimate.Shape(30, 576, 49152, 1000), "logit_lens")
    window = estimate.flops(estimate.Shape(30, 576, 49152, 1000, measured=256, first_measured=744), "logit_lens")
    assert window < full / 3 and proposal.full_cost != proposal.window_cost
    exact = app.window_proposal(long_text, "all", None, n_tokens=600)
    assert exact.exact and "600 tokens" in exact.message and exact.full_cost is None  # no shape: no cost
    assert app.window_proposal(long_text, "all", shape, n_tokens=400) is None


def test_explore_proposes_the_window_and_switches_to_it(cache, tiny_run):
    path, _ = tiny_run
    assert app.model_shape(path)[0] == 6 and app.model_shape("smollm2-135m") == (30, 576, 49152)
    assert app.model_shape("/no/such/model") is None
    at = page(EXPLORE, model=path, prompt="one two three " * 200)  # 2,800 characters, not cached
    no_problems(at)
    infos = app_support.unescape(" ".join(i.value for i in at.info))
    assert "about 700 tokens" in infos and "last 256 positions" in infos and "logit_lens ~" in infos
    at.button(key="use_window").click().run()
    no_problems(at)
    assert url(at).get("positions") == "last:256"
    assert not any("about 700 tokens" in i.value for i in at.info)  # the window is set: no proposal


# --------------------------------------------------------------------------------- per-token depth


def test_explore_draws_the_commitment_depth_per_token(cache, tiny_run):
    _, run = tiny_run
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id)
    no_problems(at)
    from tests.app.test_app_attribution import chart_frames

    values = app.token_depth(run)
    assert len(values) == run.meta["n_tokens"] and values["value"].between(0, run.meta["n_layers"]).all()
    title = "commitment depth c(i): from which layer on the lens's top-1 is the output's"
    drawn = max(chart_frames(at, title), key=len)
    assert sorted(zip(drawn["pos"].astype(int), drawn["value"].astype(int))) == \
        sorted(zip(values["pos"].astype(int), values["value"].astype(int)))
    assert by_title(at, "tokens per commitment depth")
    captions = app_support.unescape(" ".join(c.value for c in at.caption))
    assert f"Mean over these {run.meta['n_tokens']} tokens: {values['value'].mean():.1f}" in captions
