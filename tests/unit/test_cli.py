"""The ``effdepth`` command line end to end on the real default model (SmolLM2-135M, 30 layers)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from effdepth import cli, engine, models

from .test_store import tiny_model_dir

TEXT = "The capital of France is Paris. The capital of Germany is Berlin."
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:  # never touch the project's own cache
        mp.setenv("EFFDEPTH_CACHE", str(path / "default.duckdb"))
        yield path


@pytest.fixture(scope="module")
def first_run(workdir):
    cache, out_json = workdir / "cache.duckdb", workdir / "out.json"
    rc, out, err = run_cli("probe", "--model", models.DEFAULT_MODEL, "--text", TEXT, "--json", out_json,
                           "--cache", cache)
    return {"rc": rc, "out": out, "err": err, "json": out_json, "cache": cache}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(tiny_model_dir(tmp_path_factory.mktemp("tinycli") / "llama16", max_positions=16))


def finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_probe_json(first_run):
    assert first_run["rc"] == 0, first_run["err"]
    doc = json.loads(first_run["json"].read_text())
    assert {"model", "tokens", "layers", "skip", "ed", "run_id", "from_cache", "timings"} <= set(doc)
    assert doc["from_cache"] is False
    model = doc["model"]
    assert model["name"] == "smollm2-135m" and model["n_layers"] == 30 and model["dtype"] == "float32"
    assert model["architecture"] == "llama" and model["fingerprint"]
    n_layers = 30
    assert len(doc["tokens"]) >= 13 and all(isinstance(t, str) for t in doc["tokens"])
    assert "".join(doc["tokens"]) == TEXT  # no BOS for SmolLM2, tokens decode back to the text
    for metric in ("cos_att", "cos_mlp", "cos_layer", "rc_att", "rc_mlp", "rc_layer", "kl", "overlap", "entropy",
                   "rank", "skip_layer_effect", "skip_output"):
        assert len(doc["layers"][metric]) == n_layers and finite(doc["layers"][metric]), metric
    skip = doc["skip"]
    for key in ("future", "current", "local_future"):
        matrix = skip[key]
        assert len(matrix) == n_layers and all(len(row) == n_layers for row in matrix), key
        assert all(finite(row) for row in matrix), key
    future = skip["future"]
    assert all(future[s][j] == 0 for s in range(n_layers) for j in range(s + 1)), "future effect on j <= s"
    assert max(max(row) for row in future) > 0.01
    assert all(skip["current"][s][s] == pytest.approx(1.0, abs=1e-6) for s in range(n_layers))
    assert len(skip["output"]) == n_layers and len(skip["current_output"]) == n_layers
    assert finite(skip["output"]) and finite(skip["current_output"])
    assert skip["noise_floor"]["matrix"] < 1e-4 and skip["noise_floor"]["output"] < 1e-4
    assert skip["splits"] and all(8 <= t < len(doc["tokens"]) - 4 for t in skip["splits"])
    assert set(doc["ed"]) == {"cosine", "kl", "overlap", "skip"}
    for probe, entry in doc["ed"].items():
        assert {"ed", "edr", "rule", "threshold", "guarded"} <= set(entry)
        if entry["ed"] is not None:
            assert entry["edr"] == pytest.approx((entry["ed"] + 1) / n_layers)
        if probe != "skip":
            assert entry["rule"] == "p1" and {"ed", "edr"} <= set(entry["guarded"])
    assert doc["ed"]["skip"]["rule"] == "proposed"
    assert set(doc["timings"]) == {"forward", "cosine", "logit_lens", "skip"}


@pytest.mark.slow
def test_probe_summary(first_run):
    out = first_run["out"]
    assert "smollm2-135m" in out and "L=30" in out and "d=576" in out and "float32" in out
    assert "no BOS added" in out
    assert "ED" in out and "EDR" in out and "guarded" in out
    for label in ("cosine", "logit-lens KL", "top-5 overlap", "layer skipping", "noise floor"):
        assert label in out
    assert "from cache" not in out and "forward" in out
    assert "forward pass" in first_run["err"]  # progress on stderr


@pytest.mark.slow
def test_probe_second_run_is_from_cache(first_run, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("a cached run must not load the model")

    monkeypatch.setattr(models, "load_model", no_load)
    monkeypatch.setattr(engine, "run_probes", no_load)
    out_json = first_run["json"].with_name("again.json")
    rc, out, err = run_cli("probe", "--model", models.DEFAULT_MODEL, "--text", TEXT, "--json", out_json,
                           "--cache", first_run["cache"])
    assert rc == 0, err
    assert "from cache" in out
    first, again = json.loads(first_run["json"].read_text()), json.loads(out_json.read_text())
    assert again["from_cache"] is True
    assert again.pop("from_cache") is not first.pop("from_cache")
    assert again == first


@pytest.mark.slow
def test_runs_and_export(first_run, tmp_path):
    doc = json.loads(first_run["json"].read_text())
    rc, out, err = run_cli("runs", "--cache", first_run["cache"])
    assert rc == 0, err
    line = next(line for line in out.splitlines() if line.startswith(doc["run_id"]))
    assert "smollm2-135m" in line and "The capital of France is Paris. The ca" in line
    assert TEXT not in line  # the prompt is shortened to 40 characters
    edr = f"{doc['ed']['cosine']['edr']:.3f}" if doc["ed"]["cosine"]["edr"] is not None else "none"
    assert edr in line

    rc, out, err = run_cli("export", doc["run_id"], "--parquet", tmp_path / "pq", "--csv", tmp_path / "csv",
                           "--cache", first_run["cache"])
    assert rc == 0, err
    printed = [Path(p) for p in out.split()]
    assert all(p.is_file() for p in printed) and len(printed) == 2 * (len(engine.TABLES) + 1)
    skip = pd.read_parquet(tmp_path / "pq" / "skip.parquet")
    future = skip[(skip["variant"] == "future") & (skip["split"] == -1)]
    assert len(future) == 30 * 30
    assert pd.read_parquet(tmp_path / "pq" / "meta.parquet")["run_id"].tolist() == [doc["run_id"]]

    rc, out, err = run_cli("export", "0123456789abcdef", "--parquet", tmp_path / "no", "--cache", first_run["cache"])
    assert rc == 2 and "error: No run '0123456789abcdef'" in err and "Traceback" not in err


def test_unknown_model(workdir):
    rc, out, err = run_cli("probe", "--model", "no-such-model-xyz", "--text", TEXT, "--cache", workdir / "c.duckdb")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    for name in models.EMBEDDED:
        assert name in err


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text(workdir, text):
    rc, out, err = run_cli("probe", "--model", models.DEFAULT_MODEL, "--text", text, "--cache", workdir / "c.duckdb")
    assert rc == 2 and "empty" in err and out == ""


def test_missing_text_file(workdir):
    rc, out, err = run_cli("probe", "--model", models.DEFAULT_MODEL, "--text-file", workdir / "nope.txt")
    assert rc == 2 and "does not exist" in err and "nope.txt" in err


def test_unknown_probe(workdir):
    rc, out, err = run_cli("probe", "--model", models.DEFAULT_MODEL, "--text", TEXT, "--probes", "cosine,bogus")
    assert rc == 2 and "bogus" in err


def test_text_longer_than_context(workdir, tiny_dir):
    text = " ".join(f"w{i}" for i in range(20))  # 21 tokens > 16 positions
    rc, out, err = run_cli("probe", "--model", tiny_dir, "--text", text, "--cache", workdir / "c.duckdb", "-q")
    assert rc == 2 and "21 tokens long" in err and "16" in err and "Traceback" not in err


def test_text_file_and_no_cache(workdir, tiny_dir):
    text_file = workdir / "prompt.txt"
    text_file.write_text(" ".join(f"w{i}" for i in range(14)))  # 15 tokens with <s>
    cache = workdir / "nocache.duckdb"
    rc, out, err = run_cli("probe", "--model", tiny_dir, "--text-file", text_file, "--no-cache", "--cache", cache,
                           "--splits", "8", "--json", workdir / "tiny.json")
    assert rc == 0, err
    assert not cache.exists()
    assert "first token is BOS" in out and "L=3" in out
    doc = json.loads((workdir / "tiny.json").read_text())
    assert doc["skip"]["splits"] == [8] and len(doc["skip"]["future"]) == 3 and doc["tokens"][0] == "<s>"
    rc, out, err = run_cli("probe", "--model", tiny_dir, "--text-file", text_file, "--probes", "cosine",
                           "--cache", cache, "--json", workdir / "cos.json", "-q")
    assert rc == 0, err
    doc = json.loads((workdir / "cos.json").read_text())
    assert "skip" not in doc and set(doc["ed"]) == {"cosine"} and "kl" not in doc["layers"]
    assert "cos_att" in doc["layers"]


def test_corrupt_cache_then_reset(workdir):
    path = workdir / "corrupt.duckdb"
    garbage = os.urandom(20000)
    path.write_bytes(garbage)
    for argv in (("runs",), ("probe", "--model", models.DEFAULT_MODEL, "--text", TEXT)):
        rc, out, err = run_cli(*argv, "--cache", path)
        assert rc == 2 and "not a readable DuckDB cache" in err and "cache --reset" in err, err
        assert "Traceback" not in err
    assert path.read_bytes() == garbage
    rc, out, err = run_cli("cache", "--reset", "--cache", path)
    assert rc == 0, err
    moved = [p for p in workdir.iterdir() if p.name.startswith("corrupt.duckdb.corrupt-")]
    assert len(moved) == 1 and moved[0].read_bytes() == garbage and str(moved[0]) in out
    rc, out, err = run_cli("runs", "--cache", path)
    assert rc == 0 and "no cached runs" in out


@pytest.mark.slow
def test_install_default_is_idempotent(workdir, first_run):
    rc, out, err = run_cli("install-default", "-q")
    assert rc == 0, err
    assert models.DEFAULT_MODEL in out and "installed" in out


def test_python_m_help():
    proc = subprocess.run([sys.executable, "-m", "effdepth", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0 and "probe" in proc.stdout and "install-default" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "effdepth", "probe", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "--text-file" in proc.stdout and "--no-cache" in proc.stdout


@pytest.mark.parametrize("content", [b"GGUF" + (3).to_bytes(4, "little") + b"\x01\x02\x03\x04" + bytes(12),
                                     b"just text renamed to .gguf\n" * 8], ids=["truncated", "not-gguf"])
def test_damaged_gguf_is_an_error_not_a_traceback(workdir, tmp_path, content):
    path = tmp_path / "trunc.gguf"
    path.write_bytes(content)
    rc, out, err = run_cli("probe", "--model", path, "--text", "hi", "--cache", workdir / "c.duckdb")
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"error: {path} is not a complete GGUF file (") and "Re-download it" in err


def test_pickle_weight_index_is_an_error_not_a_traceback(workdir, tmp_path):
    """An index whose shards are half safetensors, half a pickle .bin: refused with the reason, no traceback."""
    import torch
    from safetensors.torch import load_file, save_file

    directory = tiny_model_dir(tmp_path / "pickled")
    weights = load_file(directory / "model.safetensors")
    names = sorted(weights)
    safe, pickled = names[: len(names) // 2], names[len(names) // 2:]
    save_file({n: weights[n] for n in safe}, directory / "model-00001-of-00002.safetensors")
    torch.save({n: weights[n] for n in pickled}, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    weight_map = {n: "model-00001-of-00002.safetensors" for n in safe} | {n: "pytorch_model.bin" for n in pickled}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    rc, out, err = run_cli("probe", "--model", directory, "--text", "w1 w2", "--cache", workdir / "c.duckdb", "-q")
    assert rc == 2 and "Traceback" not in err
    assert "maps weights to pytorch_model.bin, which is not safetensors" in err and "safe_serialization=True" in err
