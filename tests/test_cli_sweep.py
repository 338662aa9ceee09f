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


def test_skip_only_sweep_prints_the_depth_score_and_no_empty_ed_sections(tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(f'{{"prompt": "Question: {a} plus {a} is what number? Answer:", "answer": " {2 * a}", '
                             f'"bin": "{"easy" if a < 3 else "hard"}"}}\n' for a in range(1, 5)))
    assert cli.main(["sweep", "--model", "smollm2-135m", "--jsonl", str(items), "--probes", "skip",
                     "--skip-variants", "future", "--n-boot", "10", "--cache", str(tmp_path / "c.duckdb")]) == 0
    out = capsys.readouterr().out
    assert "4 items of" in out and "ED / EDR of the aggregate curve" not in out
    for bin_name in ("easy", "hard"):
        assert f"{bin_name}" in out.split("depth score")[1]


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


def test_accelerate_launch_cli_sweep_into_duckdb(tmp_path):
    """`accelerate launch --num_processes 2 -m effdepth sweep ...` on CPU: two real processes, each
    writing its own DuckDB shard, rank 0 merging them into the one cache file (no two writers)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from effdepth.store import Store
    from tests.test_store import tiny_model_dir

    model = tiny_model_dir(tmp_path / "tiny")
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1} w{i + 2} w{i + 3}", "answer": f" w{i + 4}"})
                             + "\n" for i in range(5)))
    cache = tmp_path / "main.duckdb"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "EFFDEPTH_CACHE_DIR": str(tmp_path / "cachedir")}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    # --multi_gpu starts N processes through torchrun even without GPUs (accelerate's --cpu path
    # starts one unless given an mpirun hostfile); the sweep then reads RANK / WORLD_SIZE.
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "effdepth", "sweep",
                           "--model", str(model), "--jsonl", str(items), "--probes", "cosine,logit_lens",
                           "--n-boot", "10", "--cache", str(cache)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "5 items of" in proc.stdout and "token-weighted (P1)" in proc.stdout
    runs = Store(cache).runs()
    assert len(runs) == 5 and sorted(runs["item_index"]) == [0, 1, 2, 3, 4]
    shards = tmp_path / "cachedir" / "shards"
    assert not shards.exists() or not [p for p in shards.iterdir() if p.suffix == ".duckdb"]
