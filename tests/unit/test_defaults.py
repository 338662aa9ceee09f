"""One set of defaults (issue 19 §2): the CLI, the app and the Python API read them from the contract, so a
run the CLI stored is found by the app and the API under the same run id."""

from __future__ import annotations

import effdepth
from effdepth import app, cli, contract, engine, models
from effdepth.probes import igrad, skip
from effdepth.store import Store
from tests.unit.test_store import TEXT


def test_the_three_front_ends_share_their_defaults():
    parser = cli.build_parser()
    probe = parser.parse_args(["probe", "--model", "m", "--text", "t"])
    sweep = parser.parse_args(["sweep", "--model", "m", "--dataset", "gsm8k"])
    config = engine.ProbeConfig()
    view = app.ViewState()
    assert tuple(probe.probes) == config.probes == app.config_for().probes == contract.DEFAULT_PROBES
    assert probe.ig_steps == config.ig_steps == view.ig_steps == igrad.N_STEPS == contract.DEFAULT_IG_STEPS
    assert probe.seed == config.seed == skip.SEED_FUTURE == contract.DEFAULT_SEED
    assert probe.dtype == view.dtype == "float32" and sweep.n == contract.DEFAULT_SWEEP_N
    assert app.attribution_config("w19", view.ig_steps).ig_steps == probe.ig_steps
    assert parser.parse_args(["probe", "--model", "m", "--text", "t", "--dtype", "bf16"]).dtype == "bfloat16"


def test_a_cli_run_is_found_by_the_app_and_the_api(word_model_dir, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "c.duckdb"
    assert cli.main(["probe", "--model", str(word_model_dir), "--text", TEXT, "--cache", str(cache), "-q"]) == 0
    (run_id,) = Store(cache).runs()["run_id"]
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    found_id, found = app.find_cached(Store(cache), str(word_model_dir), TEXT, "float32", False)
    assert found is not None and found_id == run_id
    again = effdepth.probe(str(word_model_dir), TEXT, cache=cache)
    assert again.from_cache and again.run_id == run_id
    assert effdepth.probe(str(word_model_dir), TEXT, cache=cache, dtype="fp32").run_id == run_id
