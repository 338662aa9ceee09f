"""A safe server: crafted links show as text, URL values are bounded, bad text and caches get a
message before any work, and a run that fails its own checks is never stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from effdepth import app, checks, cli, engine, models, positions, verify
from effdepth.arch import taps
from effdepth.capture import capture, trust_checks
from effdepth.contract import DEFAULT_IG_STEPS
from effdepth.errors import CacheError, PromptError, RunCheckError
from effdepth.store import Store
from tests.unit.test_store import TEXT

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ("[Session expired - click here to log in again](http://evil.example/login) "
           "![t](http://evil.example/track.png) www.evil.example mail@evil.example <img src=x> :red[**x**]")
GFM = MarkdownIt("gfm-like")
AUTOLINK_HTTP = re.compile(r"(https?:\/\/|www(?=\.))([-.\w]+)", re.IGNORECASE)  # GFM autolink literals
AUTOLINK_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)


@pytest.fixture(scope="module")
def result(word_model):
    return engine.run_probes(word_model, TEXT)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "effdepth.duckdb"
    monkeypatch.setenv("EFFDEPTH_CACHE", str(path))
    return path


def rendered(markdown: str) -> str:
    return GFM.render(markdown)


# ------------------------------------------------------------------------------ text shown as text


@pytest.mark.parametrize("text", [HOSTILE, "http://a.b/c", "[x](https://a.b/c \"t\")", "a\n# heading\n- item"])
def test_escaped_text_renders_as_typed(text):
    html = rendered(app.md(text))
    assert "<a" not in html and "<img" not in html and "<h1" not in html and "<li" not in html
    # Streamlit (mdast-util-gfm-autolink-literal) links bare URLs and e-mails in text nodes, after
    # escapes are resolved: its patterns must find nothing in the text as the browser reads it
    node_text = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", app.md(text))
    assert not AUTOLINK_HTTP.search(node_text) and not AUTOLINK_EMAIL.search(node_text)
    assert node_text.replace("\u2060", "") == text  # and it reads exactly as typed
    assert "<a" in rendered(text) or "<h1" in rendered(text) or "<img" in rendered(text)  # unescaped, it would


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if name != "app.py":
        at.switch_page(name)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return at.run()


def markdown_bodies(at: AppTest) -> list[str]:
    kinds = ("error", "warning", "info", "success", "caption", "markdown")
    return [el.value for kind in kinds for el in getattr(at, kind)]


@pytest.mark.parametrize("name, field", [("app.py", "model"), ("pages/1_Explore.py", "model"),
                                         ("pages/2_Compare.py", "model_b"), ("pages/1_Explore.py", "demo-model")])
def test_a_crafted_link_in_the_url_shows_as_text(cache, name, field):
    query = {"prompt": "Hello there"}
    if field == "demo-model":
        query.update(model=HOSTILE, demo="1")
    else:
        query[field] = HOSTILE
    at = page(name, **query)
    assert not at.exception
    bodies = markdown_bodies(at)
    quoted = [b for b in bodies if "evil" in b]
    assert quoted, "the hostile name should be quoted in a message"
    for body in bodies:
        html = rendered(body)
        assert "evil.example" not in " ".join(a for a in html.split('"') if a.startswith("http")), html
        assert "<img" not in html and 'href="http://evil' not in html and "mailto:" not in html, html


# ------------------------------------------------------------------------------- bounded URL values


@pytest.mark.parametrize("raw, expected", [("100000000", 256), ("257", 256), ("-3", 16), ("0", 16), ("40", 32),
                                           ("9" * 500, 256), ("x", DEFAULT_IG_STEPS)])
def test_ig_steps_from_the_url_are_bounded_to_the_choices(raw, expected):
    assert app.state_from_query({"ig_steps": raw}).ig_steps == expected
    assert expected in app.IG_STEP_CHOICES


def test_the_engine_bounds_ig_steps_too():
    with pytest.raises(PromptError, match="at most 4096"):
        engine.ProbeConfig(probes=("igrad",), answer="x", ig_steps=100_000_000)


def test_position_from_the_url_is_bounded():
    assert app.state_from_query({"pos": "10" * 30}).pos == positions.MAX_POSITION
    assert app.state_from_query({"pos": "-7"}).pos == 0


# -------------------------------------------------------------------------------- bad text, first


@pytest.mark.parametrize("text, words", [("caf\udcff", "byte 0xff"), ("caf\ud800", "lone surrogate (U+D800)"),
                                         ("   ", "empty")])
def test_invalid_text_is_refused_before_any_model_loads(text, words, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(PromptError, match=re.escape(words)):
        app.check_prompt(text)
    assert cli.main(["probe", "--model", "smollm2-135m", "--text", text, "--no-cache"]) == 2


def test_invalid_utf8_on_stdin_and_on_the_command_line(tmp_path):
    env = {**os.environ, "EFFDEPTH_CACHE": str(tmp_path / "c.duckdb")}
    command = [sys.executable, "-m", "effdepth", "probe", "--model", "smollm2-135m"]
    piped = subprocess.run(command + ["--text-file", "-"], input=b"caf\xff", capture_output=True, env=env,
                           cwd=ROOT, timeout=120)
    assert piped.returncode == 2 and b"not UTF-8" in piped.stderr and b"Traceback" not in piped.stderr
    argv = subprocess.run([os.fsencode(a) for a in command] + [b"--text", b"caf\xff"], capture_output=True,
                          env=env, cwd=ROOT, timeout=120)
    assert argv.returncode == 2 and b"byte 0xff, which is not valid UTF-8" in argv.stderr
    assert b"Traceback" not in argv.stderr


def test_a_wrong_answer_fails_before_the_model_loads(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    rc = cli.main(["probe", "--model", "smollm2-135m", "--text", "The capital of France is Paris",
                   "--probes", "erasure", "--answer", "London", "--cache", str(tmp_path / "c.duckdb")])
    assert rc == 2 and "is not the end of the prompt" in capsys.readouterr().err


# -------------------------------------------------------------------------------- read-only caches


def as_nobody(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run Python as an unprivileged user (root ignores file modes), or as this user if not root. Skips when
    that user cannot read this checkout or its venv at all (a clone inside a private folder, mode 700)."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    probe = subprocess.run(prefix + [sys.executable, "-c", "import duckdb, effdepth"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"an unprivileged user cannot import effdepth from {ROOT} (is a parent folder private?): "
                    f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")
    return subprocess.run(prefix + [sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


@pytest.fixture
def shared_tmp():
    """A temporary directory an unprivileged user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="effdepth-ro-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def test_a_read_only_cache_is_viewable_and_refuses_work_first(result, word_model_dir, shared_tmp):
    tmp_path = shared_tmp
    word_model_dir = shutil.copytree(word_model_dir, tmp_path / "model")
    for file in word_model_dir.iterdir():
        file.chmod(0o644)
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "effdepth.duckdb"
    Store(path).put(result)
    path.chmod(0o444)
    folder.chmod(0o555)
    code = f"""
import json, sys
from effdepth import cli
from effdepth.store import Store
store = Store({str(path)!r})
has_meta = store.meta({result.run_id!r}) is not None
print(json.dumps({{"read_only": store.read_only, "runs": len(store), "meta": has_meta}}))
sys.stdout.flush()
rc = cli.main(["probe", "--model", {str(word_model_dir)!r}, "--text", "w1 w2 w3 w4 w5 w6", "--cache", {str(path)!r},
               "--json", {str(tmp_path / 'out.json')!r}, "-q"])
print("rc", rc)
"""
    done = as_nobody(code, tmp_path)
    assert done.stdout, done.stderr
    first = json.loads(done.stdout.splitlines()[0])
    assert first == {"read_only": True, "runs": 1, "meta": True}, done.stderr
    assert "rc 2" in done.stdout and "is read-only" in done.stderr and "nothing was computed" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.json").exists()


def test_demo_mode_offers_no_write_on_a_broken_cache(cache):
    cache.write_bytes(b"not a duckdb file" * 100)
    at = page("pages/1_Explore.py", demo="1")
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "not a readable DuckDB cache" in errors and "\\-\\-cache" in errors
    assert str(cache.name).split(".")[0] in errors
    assert not [b for b in at.button if b.label == "Move the broken cache aside"]
    normal = page("pages/1_Explore.py")
    assert [b for b in normal.button if b.label == "Move the broken cache aside"]


def test_the_reset_command_names_the_cache_file(tmp_path):
    store = Store(tmp_path / "some cache.duckdb")
    assert store.reset_command == f"effdepth cache --reset --cache '{tmp_path / 'some cache.duckdb'}'"


# ---------------------------------------------------------------------------- a run checks itself


def test_a_run_carries_its_checks_and_passes_them(result):
    found = result.meta["checks"]
    assert found["residual_closure"] <= 1e-6 and found["lens_last_max_abs"] <= 1e-5
    assert found["shape"] == [result.meta["n_layers"], result.meta["n_tokens"], 32]
    assert checks.problems(result.meta, result.tables) == [] and checks.verified(result.meta)


def test_broken_invariants_are_measured(word_model):
    trace = capture(word_model.model, engine.tokenize(word_model, TEXT))
    trace.attn[1, 3] += 0.5 * trace.resid[2, 3].norm()  # a capture that mixed in something else
    broken = trust_checks(trace, taps(word_model.model), "float32")
    assert broken["residual_closure"] > 0.1
    assert any("residual closure" in p for p in checks.invariant_problems(broken, "float32"))
    trace.logits[5, 7] += 3.0
    assert trust_checks(trace, taps(word_model.model), "float32")["lens_last_max_abs"] >= 3.0 - 1e-4


def test_the_store_refuses_a_run_that_fails_its_checks(result, tmp_path):
    store = Store(tmp_path / "c.duckdb")
    bad_meta = {**result.meta, "checks": {**result.meta["checks"], "residual_closure": 0.3}}
    with pytest.raises(RunCheckError, match="residual closure"):
        store.put(engine.RunResult(meta=bad_meta, tables=dict(result.tables)))
    short_tokens = {**result.tables, "tokens": result.tables["tokens"].iloc[:-2]}
    with pytest.raises(RunCheckError, match="tokens table has"):
        store.put(engine.RunResult(meta=dict(result.meta), tables=short_tokens))
    assert len(store) == 0
    store.put(result)
    assert len(store) == 1


def test_cache_verify_recomputes_unverified_runs(result, word_model_dir, tmp_path, capsys):
    store = Store(tmp_path / "c.duckdb")
    # an old run: no checks, and (as a concurrent app run could have stored) wrong numbers
    old_meta = {k: v for k, v in result.meta.items() if k != "checks"}
    wrong = result.tables["layer"].assign(value=result.tables["layer"]["value"] + 0.25)
    store.put(engine.RunResult(meta=old_meta, tables={**result.tables, "layer": wrong}))
    assert [m["run_id"] for m in verify.unverified_runs(store)] == [result.run_id]
    assert cli.main(["cache", "--verify", "--cache", str(store.path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 unverified run(s)" in out and "WRONG (max |Δ| = 0.25)" in out and "1 replaced" in out
    fixed = store.get(result.run_id)
    assert checks.verified(fixed.meta)
    assert (fixed.tables["layer"]["value"] - result.tables["layer"]["value"]).abs().max() < 1e-6
    assert cli.main(["cache", "--verify", "--cache", str(store.path), "-q"]) == 0
    assert "0 unverified run(s)" in capsys.readouterr().out


def test_the_read_only_error_comes_before_computing(tmp_path, monkeypatch):
    store = Store(tmp_path / "c.duckdb")
    monkeypatch.setattr(Store, "writable", lambda self: False)
    holder = app.ModelHolder(loader=lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(CacheError, match="read-only"):
        app.compute_run(store, "smollm2-135m", "Hello there, world", "float32", False, holder)


# ------------------------------------------------------------------------ progress within a stage


def test_the_lens_reports_progress_per_chunk_and_can_be_stopped(word_model):
    from effdepth.errors import RunStopped
    from effdepth.probes import logit_lens

    trace = capture(word_model.model, engine.tokenize(word_model, TEXT))
    seen = []
    full, _ = logit_lens.lens_metrics(trace, taps(word_model.model), budget_bytes=16 * 64 * 4 * 4,
                                      progress=lambda stage, frac: seen.append((stage, frac)))
    n_rows = trace.n_layers * trace.n_tokens
    assert len(seen) == -(-n_rows // 16) and seen[-1] == ("logit lens", 1.0)
    assert [f for _, f in seen] == sorted(f for _, f in seen)

    def stop(stage, frac):
        if frac > 0.3:
            raise RunStopped("stopped")

    with pytest.raises(RunStopped):
        logit_lens.lens_metrics(trace, taps(word_model.model), budget_bytes=16 * 64 * 4 * 4, progress=stop)
    whole, _ = logit_lens.lens_metrics(trace, taps(word_model.model))  # chunking changes no number
    assert all((full[k] == whole[k]).all() for k in full)
