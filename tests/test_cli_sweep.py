"""`effdepth sweep` end to end on the default model: aggregates printed, second call resumes."""

from effdepth import cli, models


def test_sweep_cli_runs_then_resumes_without_loading(tmp_path, capsys, monkeypatch):
    cache = str(tmp_path / "c.duckdb")
    args = ["sweep", "--model", "smollm2-135m", "--dataset", "manual", "--n", "2",
            "--probes", "cosine,logit_lens", "--n-boot", "20", "--cache", cache]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "2 items of manual" in out and "token-weighted (P1)" in out and "per-prompt mean (P2)" in out
    assert "cosine" in out and "EDR" in out

    def no_load(*_a, **_k):
        raise AssertionError("a resumed sweep must not load the model")

    monkeypatch.setattr(models, "load_model", no_load)
    assert cli.main(args) == 0
    assert "2 items of manual" in capsys.readouterr().out


def test_sweep_cli_bad_jsonl_line_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": 3}\n')
    assert cli.main(["sweep", "--model", "smollm2-135m", "--jsonl", str(bad),
                     "--cache", str(tmp_path / "c.duckdb")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_probe_takes_a_benchmark_item(tmp_path, capsys):
    import json

    from effdepth import datasets

    out = tmp_path / "o.json"
    assert cli.main(["probe", "--model", "smollm2-135m", "--item", "manual:0", "--probes", "cosine",
                     "--json", str(out), "--cache", str(tmp_path / "c.duckdb"), "-q"]) == 0
    assert json.loads(out.read_text())["prompt"]["text"] == datasets.get_item("manual", 0).text
    assert cli.main(["probe", "--model", "smollm2-135m", "--item", "gsm8k:99999",
                     "--cache", str(tmp_path / "c.duckdb")]) == 2
    assert "out of range" in capsys.readouterr().err
