"""`effdepth sweep` end to end on the default model: aggregates printed, second call resumes."""

import json

import pytest

from effdepth import cli, models
from tests.app_support import build_tiny_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny Llama with its own tokenizer (context 128 tokens)."""
    return str(build_tiny_dir(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.mark.slow
def test_sweep_cli_runs_then_resumes_without_loading(tmp_path, capsys, monkeypatch):
    cache = str(tmp_path / "c.duckdb")
    args = ["sweep", "--model", "smollm2-135m", "--dataset", "manual", "--n", "2",
            "--probes", "cosine,logit_lens", "--n-boot", "20", "--cache", cache]
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    out = printed.out
    assert "estimate  peak memory ~" in printed.err  # before the work starts (issue 19 §4)
    assert "2 items of manual" in out and "token-weighted (P1)" in out and "per-prompt mean (P2)" in out
    assert "cosine" in out and "EDR" in out
    assert "[2 computed, 0 from the cache;" in out and "s/item computed]" in out

    def no_load(*_a, **_k):
        raise AssertionError("a resumed sweep must not load the model")

    monkeypatch.setattr(models, "load_model", no_load)
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    again = printed.out
    assert "2 items of manual [0 computed, 2 from the cache;" in again and "s/item" not in again  # no rate
    assert "peak memory" not in printed.err  # nothing to compute, nothing to estimate


@pytest.mark.slow
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


@pytest.mark.slow
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
    from tests.unit.test_store import tiny_model_dir

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


LONG = ["The Eiffel Tower is in Paris, the capital of France.", "Water boils at one hundred degrees at sea level."]


def test_sweep_cli_short_item_is_left_out_of_the_depth_score(tiny, tmp_path, capsys, monkeypatch):
    """An item under 13 tokens has no future-effect skip: named, left out, the rest still scored (resume too)."""
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "Hi", "answer": " 4", "bin": "easy"}) + "\n"
                     + "".join(json.dumps({"prompt": t, "answer": " Yes.", "bin": "hard"}) + "\n" for t in LONG))
    args = ["sweep", "--model", tiny, "--jsonl", str(items), "--probes", "cosine,logit_lens,skip",
            "--skip-variants", "future,current", "--n-boot", "10", "--cache", str(tmp_path / "c.duckdb")]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert "3 items of" in first and "token-weighted (P1)" in first
    message = ("1 of 3 items is too short for the future-effect skip (< 13 tokens) and is left out of the depth "
               "score: items[0].")
    depth = first.split("depth score (centre of mass")[1]
    assert message in depth
    hard = [line for line in depth.splitlines() if line.strip().startswith("hard")]
    assert len(hard) == 4 and all("over 2 items: " in line and "n/a" not in line for line in hard)
    easy = [line for line in depth.splitlines() if line.strip().startswith("easy")]
    assert len(easy) == 4 and all(line.endswith("over 0 items: n/a (its only item is too short for the "
                                                 "future-effect skip (< 13 tokens))") for line in easy)

    def no_load(*_a, **_k):
        raise AssertionError("a resumed sweep must not load the model")

    monkeypatch.setattr(models, "load_model", no_load)
    assert cli.main(args) == 0  # the resume used to crash on the same item every time
    again = capsys.readouterr().out
    assert message in again and again.split("depth score (centre of mass")[1] == depth


def test_sweep_cli_skips_bad_items_and_carries_on(tiny, tmp_path, capsys):
    """A lone surrogate (line 2) and a prompt too long for the context (line 3) are reported, not fatal."""
    from effdepth.store import Store

    items = tmp_path / "items.jsonl"
    items.write_text("\n".join([json.dumps({"prompt": LONG[0], "answer": " Yes."}),
                                json.dumps({"prompt": "caf\ud800 is a word", "answer": " Yes."}),
                                json.dumps({"prompt": "w " * 150, "answer": " Yes."}),
                                json.dumps({"prompt": LONG[1], "answer": " Yes."})]) + "\n")
    assert '"caf\\ud800' in items.read_text()  # the JSON escape of a lone surrogate
    cache = tmp_path / "c.duckdb"
    args = ["sweep", "--model", tiny, "--jsonl", str(items), "--probes", "cosine,logit_lens", "--n-boot", "10",
            "--cache", str(cache)]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    surrogate = r"line 2: the text contains a lone surrogate (\ud800) that is not valid Unicode; skipped"
    assert "1 of 4 items of" in captured.err and surrogate in captured.err
    too_long = "items[2] failed and is skipped: The text is "
    assert too_long in captured.err and "tokens long, past " in captured.err and "context of 128 tokens" in captured.err
    assert "2 items of" in captured.out and "token-weighted (P1)" in captured.out
    summary = captured.out.strip().splitlines()[-1]
    assert summary.startswith(r"2 items skipped: line 2: the text contains a lone surrogate (\ud800) that is not "
                              "valid Unicode; items[2]: The text is ")
    assert "context of 128 tokens" in summary
    assert summary.endswith(".") and not summary.endswith("..")
    runs = Store(cache).runs()
    assert sorted(runs["item_index"]) == [0, 3]
    assert cli.main(args) == 0  # resumed: the good items are in the cache, the bad ones reported again
    assert "2 items skipped: line 2" in capsys.readouterr().out


def test_sweep_cli_only_bad_items_is_a_clear_error(tiny, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "caf\ud800", "answer": " x"}) + "\n")
    assert cli.main(["sweep", "--model", tiny, "--jsonl", str(items), "--cache", str(tmp_path / "c.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "error: items.jsonl has no usable item: line 1: the text contains a lone surrogate (\\ud800)" in err
    assert "Traceback" not in err


def test_sweep_cli_quiet_draws_no_progress_bar(tiny, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": t, "answer": " Yes."}) + "\n" for t in LONG))
    base = ["sweep", "--model", tiny, "--jsonl", str(items), "--probes", "cosine", "--n-boot", "10"]
    assert cli.main(base + ["--cache", str(tmp_path / "a.duckdb")]) == 0
    assert f"sweep {tiny}" in capsys.readouterr().err  # the sweep's own bar, on stderr
    assert cli.main(base + ["--cache", str(tmp_path / "b.duckdb"), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"sweep {tiny}" not in captured.err and "2 items of" in captured.out
