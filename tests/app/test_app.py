"""The Streamlit pages driven headless with streamlit.testing.v1.AppTest.

Every test uses its own DuckDB cache (``EFFDEPTH_CACHE`` → tmp_path), never the user's. Runs come
from a tiny random Llama saved as a local model directory (computed in ~1 s, also through the app's
"Run probes" button) and from the default embedded model smollm2-135m (computed once through the
engine and memoised under pytest's cache dir, see tests/app_support.py). Charts are read back from
the page as Vega-Lite specs (element type ``vega_lite_chart``, ``proto.spec`` is the JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from effdepth import app, charts, models
from effdepth.errors import ModelTooLargeError
from tests import app_support

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
EXPLORE, COMPARE, RUNS = "pages/1_Explore.py", "pages/2_Compare.py", "pages/3_Runs.py"
TIMEOUT = 120


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny Llamas with the same tokenizer and depth (a Δ heatmap applies) and their runs."""
    base = tmp_path_factory.mktemp("tiny-models")
    a = str(app_support.build_tiny_dir(base / "tiny-a", seed=1))
    b = str(app_support.build_tiny_dir(base / "tiny-b", seed=2))
    return {"a": a, "b": b, "run_a": app_support.compute_run(a, app_support.TINY_PROMPT),
            "run_b": app_support.compute_run(b, app_support.TINY_PROMPT)}


@pytest.fixture(scope="module")
def smol(request):
    """A run of the default embedded model (memoised on disk by run id across test sessions)."""
    cache = Path(request.config.cache.mkdir("effdepth-app-runs"))
    return app_support.cached_run(cache, models.DEFAULT_MODEL, app_support.PROMPT)


def page(name: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if name != "app.py":
        at.switch_page(name)
    for key, value in query.items():
        at.query_params[key] = str(value)
    return at.run()


def url(at: AppTest) -> dict[str, str]:
    """The page's URL query parameters as the app wrote them."""
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("vega_lite_chart")]


def title(spec: dict) -> str:
    t = spec.get("title")
    if isinstance(t, dict):
        return t.get("text", "")
    if t:
        return str(t)
    for sub in spec.get("hconcat", []):
        if isinstance(sub.get("title"), dict):
            return sub["title"]["text"]
    return ""


def by_title(at: AppTest, prefix: str) -> dict:
    found = [s for s in specs(at) if title(s).startswith(prefix)]
    assert found, f"no chart titled {prefix!r}; have {[title(s) for s in specs(at)]}"
    return found[0]


def marks(spec: dict) -> set[str]:
    return {charts.mark_type(v) for v in charts.iter_views(spec) if charts.mark_type(v)}


def ed_of(result, probe: str, rule: str) -> int | None:
    return app.ed_value(result.tables["ed"], probe, rule)[0]


def no_problems(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def errors(at: AppTest) -> str:
    """The error boxes' text as a person reads it (the boxes escape every punctuation mark, see app.md)."""
    return app_support.unescape(" ".join(e.value for e in at.error))


def forbid_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the run is cached")
    monkeypatch.setattr(models, "load_model", refuse)


# ----------------------------------------------------------------------------------------- pure logic


def test_url_state_round_trip():
    state = app.ViewState(model="smollm2-135m", prompt="a b\nc", dtype="bfloat16", chat=True, run="abc",
                            contrib="rc", part="mlp", lens="entropy", variant="local_future", pos=7,
                            model_b="gemma3-270m", dtype_b="float32", run_b="def", demo=True)
    query = app.state_to_query(state)
    assert query["prompt"] == "a b\nc" and query["pos"] == "7" and query["demo"] == "1"
    assert app.state_from_query(query) == state
    assert app.state_to_query(app.ViewState()) .keys() == {"model", "prompt", "dtype"}
    bad = app.state_from_query({"dtype": "int3", "pos": "x", "variant": "nope", "part": ["att", "mlp"]})
    assert bad.dtype == "float32" and bad.pos is None and bad.variant == "future" and bad.part == "mlp"


def test_progress_tracker_is_monotone_and_names_stages():
    seen = []
    tracker = app.ProgressTracker(sink=lambda label, frac: seen.append((label, frac)))
    for stage, frac in [("loading model", 0.0), ("dequantising GGUF (weights)", None), ("forward pass", None),
                        ("logit lens", None), ("layer skipping", 0.0), ("skip replay, layer 3/30", 0.1),
                        ("skip replay, layer 30/30", 1.0), ("direct-path replay, layer 3/30", 0.1),
                        ("direct-path replay, layer 30/30", 1.0)]:
        tracker(stage, frac)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[0][0] == "Loading model"
    assert any(label.startswith("Layer skipping: skip replay, layer 3/30") for label, _ in seen)
    assert any(label.startswith("Layer skipping (direct path)") for label, _ in seen)


def test_model_holder_keeps_one_model():
    loads = []

    def loader(name, dtype, progress=None):
        loads.append((name, dtype))
        return object()

    holder = app.ModelHolder(loader)
    first = holder.get("a", "float32")
    assert holder.get("a", "float32") is first and loads == [("a", "float32")]
    holder.get("b", "bfloat16")
    assert holder.key == ("b", "bfloat16") and len(loads) == 2
    holder.get("a", "float32")
    assert len(loads) == 3  # "a" was dropped when "b" loaded: one model at a time


def test_token_labels_for_positions(tiny):
    tokens = tiny["run_a"].tables["tokens"]
    assert app.position_label(tokens, 1) == "1:·"
    assert app.clamp_position(None, 10) == 9 and app.clamp_position(50, 10) == 9
    assert app.selected_position({"selection": {"cell": [{"pos": 4}]}}) == 4
    assert app.selected_position({"selection": {"cell": {"pos": [2]}}}) == 2
    assert app.selected_position({"selection": {"cell": []}}) is None


# ------------------------------------------------------------------------------------------------ home


def test_home_lists_models_examples_and_views(cache):
    at = page("app.py")
    no_problems(at)
    options = at.selectbox(key="w_model_choice").options
    assert any("smollm2-135m" in o and "30 layers" in o and "98 MB" in o for o in options)
    assert "EDR = (ED + 1) / L" in " ".join(m.value for m in at.markdown)
    assert {b.label for b in at.button} >= {"Explore one model × one prompt", "Compare two models",
                                           "Browse cached runs", "Present a talk"}
    at.selectbox(key="w_example").select("Addition chain (P2)").run()
    assert at.text_area(key="w_prompt").value == app.EXAMPLES["Addition chain (P2)"]
    assert url(at)["prompt"] == app.EXAMPLES["Addition chain (P2)"]
    at.radio(key="w_dtype").set_value("bfloat16").run()
    assert url(at)["dtype"] == "bfloat16"


# --------------------------------------------------------------------------------------------- explore


@pytest.mark.slow
def test_explore_cached_run_draws_everything_without_loading(cache, smol, monkeypatch):
    app_support.fill_store(cache, [smol])
    forbid_model_loads(monkeypatch)
    at = page(EXPLORE, model=models.DEFAULT_MODEL, prompt=app_support.PROMPT)
    no_problems(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["L (layers)"] == "30" and metrics["compute"] == "cached"
    assert metrics["ED cosine μ"] == str(ed_of(smol, "cosine", "p1"))
    assert metrics["BOS"] in ("no BOS", "adds BOS", "BOS first") and metrics["chat template"] == "off"
    for probe, prefix in (("cosine", "cosine μ"), ("kl", "logit-lens KL"), ("overlap", "top-5 overlap"),
                          ("skip", "layer-skip effect")):
        spec = by_title(at, prefix)
        assert {"line", "rule"} <= marks(spec)
        expected = {v for v in (ed_of(smol, probe, "p1"), ed_of(smol, probe, "guarded"),
                                ed_of(smol, probe, "proposed")) if v is not None}
        assert set(charts.rule_positions(spec, "x")) == expected
    heat = by_title(at, "cosine(layer contribution")
    assert "rect" in marks(heat)
    assert set(charts.rule_positions(heat, "y")) == {v for v in (ed_of(smol, "cosine", "p1"),
                                                                 ed_of(smol, "cosine", "guarded")) if v is not None}
    assert "rect" in marks(by_title(at, "logit-lens KL(layer"))
    assert {"rect", "text"} <= marks(by_title(at, "logit lens at position"))
    assert {"rect", "bar"} <= marks(by_title(at, "max relative change"))
    assert any(m.label == "Noise floor" for m in at.metric)
    captions = " ".join(c.value for c in at.caption)
    assert "first l with KL(l) < 0.5·max KL (P1)" in captions and "guarded" in captions
    assert url(at)["run"] == smol.run_id
    assert len(at.get("download_button")) >= 2 * 8  # PNG + SVG under every chart


def test_explore_selections_live_in_the_url(cache, tiny):
    app_support.fill_store(cache, [tiny["run_a"]])
    at = page(EXPLORE, run=tiny["run_a"].run_id)
    no_problems(at)
    at.radio(key="w_contrib").set_value("rc").run()
    at.radio(key="w_part").set_value("mlp").run()
    at.radio(key="w_lens").set_value("overlap").run()
    at.radio(key="w_variant").set_value("current").run()
    at.select_slider(key="w_pos").set_value(3).run()
    no_problems(at)
    query = url(at)
    assert query | {"contrib": "rc", "part": "mlp", "lens": "overlap", "variant": "current", "pos": "3"} == query
    assert by_title(at, "relative contribution ‖MLP‖")
    assert by_title(at, "logit lens at position 3:")
    # a copied link reopens the exact view
    again = page(EXPLORE, **query)
    no_problems(again)
    assert again.radio(key="w_contrib").value == "rc" and again.radio(key="w_lens").value == "overlap"
    assert again.select_slider(key="w_pos").value == 3
    assert [title(s) for s in specs(again)] == [title(s) for s in specs(at)]


def test_explore_computes_on_click_with_progress(cache, tiny):
    at = page(EXPLORE, model=tiny["a"], prompt=app_support.TINY_PROMPT)
    no_problems(at)
    assert not specs(at)
    assert any("not in the cache" in i.value for i in at.info)
    at.button(key="run_probes").click().run()
    no_problems(at)
    assert len(at.status) == 1 and "Done" in at.status[0].label
    stored = app.open_store().get(tiny["run_a"].run_id)
    assert stored is not None  # same key as the engine computes
    heat = by_title(at, "cosine(layer contribution")
    assert set(charts.rule_positions(heat, "y")) == {v for v in (ed_of(stored, "cosine", "p1"),
                                                                 ed_of(stored, "cosine", "guarded")) if v is not None}
    assert {m.label: m.value for m in at.metric}["compute"].endswith(" s")


def test_short_prompt_gets_current_effect_skips_only(cache, tiny):
    at = page(EXPLORE, model=tiny["a"], prompt="Yoko Ono")
    at.button(key="run_probes").click().run()
    no_problems(at)
    assert any("shorter than 13 tokens" in i.value for i in at.info)
    assert at.radio(key="w_variant").options == [app.SKIP_VARIANTS[v] for v in ("current", "local_current")]
    assert at.radio(key="w_variant").value == "current"


@pytest.mark.parametrize("query,expected", [
    ({"prompt": "   "}, "The prompt is empty"),
    ({"model": "/no/such/model/dir"}, "No model found at '/no/such/model/dir'"),
    ({"model": "not-a-model-anywhere"}, "is neither an embedded model"),
])
def test_explore_input_errors(cache, query, expected):
    at = page(EXPLORE, **({"model": models.DEFAULT_MODEL, "prompt": "Hello there"} | query))
    assert not at.exception
    assert expected in errors(at)
    assert "run_probes" not in [b.key for b in at.button]


def test_unsupported_architecture_is_reported_before_running(cache, tmp_path):
    import transformers as tf

    tf.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                  intermediate_size=64).save_pretrained(tmp_path / "bert")
    at = page(EXPLORE, model=str(tmp_path / "bert"), prompt="Hello there")
    assert not at.exception
    assert "Architecture 'bert' is not supported" in errors(at)
    assert "run_probes" not in [b.key for b in at.button]


def test_prompt_longer_than_the_context(cache, tiny):
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    at = page(EXPLORE, model=tiny["a"], prompt=long_prompt)
    at.button(key="run_probes").click().run()
    assert not at.exception
    said = errors(at)
    assert "tokens long, past " in said and "context of 128 tokens" in said and "would fit" in said


def test_model_too_large(cache, tiny, monkeypatch):
    from effdepth import ui

    ui.model_holder().release()  # the app holds one model per process; make this one load again
    monkeypatch.setattr(models.memory, "available_memory_bytes", lambda: 1024)
    with pytest.raises(ModelTooLargeError) as expected:
        models.load_model(tiny["a"])
    at = page(EXPLORE, model=tiny["a"], prompt=app_support.TINY_PROMPT)
    at.button(key="run_probes").click().run()
    assert not at.exception
    assert str(expected.value) in errors(at)
    assert any(s.label == "Failed" for s in at.status)


def test_corrupt_cache_can_be_moved_aside(cache, tiny):
    cache.write_bytes(b"this is not a duckdb file" * 100)
    at = page(EXPLORE, model=tiny["a"], prompt=app_support.TINY_PROMPT)
    assert not at.exception
    assert "not a readable DuckDB cache" in errors(at)
    move = [b for b in at.button if b.label == "Move the broken cache aside"]
    assert move
    move[0].click().run()
    assert not at.exception
    assert any("Moved the broken cache" in s.value for s in at.success)
    assert list(cache.parent.glob("effdepth.duckdb.corrupt-*"))
    at.run()
    no_problems(at)


def test_locked_cache_is_an_error_not_a_traceback(cache, monkeypatch):
    app_support.fill_store(cache, [])
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)"),
        str(cache)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        from effdepth import store as store_module

        monkeypatch.setattr(app, "open_store", lambda path=None: store_module.Store(cache, lock_timeout=0.5))
        at = page(RUNS)
        assert not at.exception
        assert "locked by another process" in errors(at)
        assert not [b for b in at.button if b.label == "Move the broken cache aside"]
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------------ demo


def test_demo_mode_is_read_only(cache, tiny, monkeypatch):
    app_support.fill_store(cache, [tiny["run_a"]])
    forbid_model_loads(monkeypatch)
    missing = page(EXPLORE, model=tiny["a"], prompt="A prompt nobody computed", demo=1)
    assert not missing.exception and not missing.error
    assert any("Not cached" in w.value for w in missing.warning)
    assert not missing.button and not specs(missing)
    cached = page(EXPLORE, model=tiny["a"], prompt=app_support.TINY_PROMPT, demo=1)
    no_problems(cached)
    assert specs(cached) and [b.key for b in cached.button] == ["talk_add"]  # a talk is URL state: no write
    compare = page(COMPARE, model=tiny["a"], model_b=tiny["b"], prompt=app_support.TINY_PROMPT, demo=1)
    assert not compare.exception and not compare.button
    assert any("Not cached" in w.value for w in compare.warning)
    runs = page(RUNS, demo=1)
    runs.session_state["runs_table_0"] = {"selection": {"rows": [0], "columns": []}}
    runs.run()
    assert not runs.exception and not [b for b in runs.button if b.key == "delete"]


# --------------------------------------------------------------------------------------------- compare


def test_compare_two_runs_same_depth(cache, tiny):
    a, b = tiny["run_a"], tiny["run_b"]
    app_support.fill_store(cache, [a, b])
    at = page(COMPARE, run=a.run_id, run_b=b.run_id)
    no_problems(at)
    table = at.dataframe[0].value
    assert {"probe", "rule"} <= set(table.columns) and len(table.columns) == 4
    for probe, prefix in (("cosine", "cosine μ vs"), ("overlap", "top-5 overlap vs")):
        spec = by_title(at, prefix)
        line = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "line")
        assert line["encoding"]["x"]["field"] == "depth"
        expected = {ed / r.meta["n_layers"] for r in (a, b) for ed in [ed_of(r, probe, "p1")] if ed is not None}
        assert set(charts.rule_positions(spec, "x")) == expected
    heats = [s for s in specs(at) if "cosine(layer contribution" in title(s) and not title(s).startswith("Δ")]
    assert len(heats) == 2
    scales = [next(v for v in charts.iter_views(s) if charts.mark_type(v) == "rect")["encoding"]["color"]["scale"]
              for s in heats]
    assert scales[0]["domain"] == scales[1]["domain"]
    at.selectbox(key="w_cmp_metric").select("kl").run()
    no_problems(at)
    heats = [s for s in specs(at) if "KL(layer" in title(s) and not title(s).startswith("Δ")]
    scales = [next(v for v in charts.iter_views(s) if charts.mark_type(v) == "rect")["encoding"]["color"]["scale"]
              for s in heats]
    assert len(heats) == 2 and scales[0]["domain"] == scales[1]["domain"]
    assert "rect" in marks(by_title(at, "Δ"))


@pytest.mark.slow
def test_compare_different_depths_has_no_delta(cache, tiny, smol):
    app_support.fill_store(cache, [tiny["run_a"], smol])
    at = page(COMPARE, run=smol.run_id, run_b=tiny["run_a"].run_id)
    no_problems(at)
    assert any("No Δ heatmap" in i.value and "L = 30 vs 6" in i.value for i in at.info)
    assert not [s for s in specs(at) if title(s).startswith("Δ")]


def test_compare_computes_the_missing_model(cache, tiny):
    app_support.fill_store(cache, [tiny["run_a"]])
    at = page(COMPARE, model=tiny["a"], model_b=tiny["b"], prompt=app_support.TINY_PROMPT)
    no_problems(at)
    assert [b.key for b in at.button] == ["compute_b"]
    at.button(key="compute_b").click().run()
    no_problems(at)
    assert by_title(at, "Δ")
    assert app.open_store().get(tiny["run_b"].run_id) is not None


# ------------------------------------------------------------------------------------------------ runs


@pytest.mark.slow
def test_runs_table_filter_reopen_export_delete(cache, tiny, smol):
    app_support.fill_store(cache, [tiny["run_a"], tiny["run_b"], smol])
    at = page(RUNS)
    no_problems(at)
    table = at.dataframe[0].value
    assert len(table) == 3 and {"EDR cosine", "EDR KL", "EDR overlap", "EDR skip", "when"} <= set(table.columns)
    smol_row = table[table["run_id"] == smol.run_id].iloc[0]
    assert smol_row["EDR cosine"] == pytest.approx(app.ed_value(smol.tables["ed"], "cosine")[1], abs=1e-3)

    at.text_input(key="w_runs_filter").input("smollm2").run()
    assert list(at.dataframe[0].value["run_id"]) == [smol.run_id]
    at.text_input(key="w_runs_filter").input("").run()

    rows = list(at.dataframe[0].value["run_id"])
    at.session_state["runs_table_0"] = {"selection": {"rows": [rows.index(smol.run_id)], "columns": []}}
    at.run()
    no_problems(at)
    links = {p.proto.label: p.proto for p in at.get("page_link")}
    assert f"run={smol.run_id}" in links["Open in Explore"].query_string
    assert {d.proto.label for d in at.get("download_button")} >= {"Tables as CSV (zip)", "Tables as Parquet (zip)",
                                                                  "Charts as PNG (zip)", "Charts as SVG (zip)"}

    pair = [rows.index(tiny["run_a"].run_id), rows.index(tiny["run_b"].run_id)]
    at.session_state["runs_table_0"] = {"selection": {"rows": pair, "columns": []}}
    at.run()
    links = {p.proto.label: p.proto for p in at.get("page_link")}
    query = links["Open both in Compare"].query_string
    assert f"run={tiny['run_a'].run_id}" in query and f"run_b={tiny['run_b'].run_id}" in query

    at.button(key="delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert len(app.open_store().runs()) == 3  # nothing deleted before the confirmation
    at.button(key="delete_yes").click().run()
    no_problems(at)
    assert list(app.open_store().runs()["run_id"]) == [smol.run_id]


def test_runs_exports_are_zips_of_tables(cache, tiny):
    import io
    import zipfile

    app_support.fill_store(cache, [tiny["run_a"]])
    store = app.open_store()
    for fmt in ("csv", "parquet"):
        names = zipfile.ZipFile(io.BytesIO(app.export_zip(store, [tiny["run_a"].run_id], fmt))).namelist()
        assert f"{tiny['run_a'].run_id}/layer_token.{fmt}" in names and f"{tiny['run_a'].run_id}/meta.{fmt}" in names


def test_every_page_renders_on_an_empty_cache(cache):
    start = time.perf_counter()
    for name in ("app.py", EXPLORE, COMPARE, RUNS):
        at = page(name)
        assert not at.exception, (name, [e.value for e in at.exception])
    assert time.perf_counter() - start < TIMEOUT


def test_the_runs_table_names_benchmark_items():
    """Sweep rows share their instruction: the table says which dataset and item each run is, and filters on it."""
    runs = pd.DataFrame([
        {"run_id": "a1", "model_name": "m", "prompt_text": "Given the following problem, reason… (1)", "n_tokens": 90,
         "dtype": "float32", "probes": ["cosine"], "ed_summary": {}, "created": None, "dataset": "gsm8k",
         "item_index": 3},
        {"run_id": "b2", "model_name": "m", "prompt_text": "Given the following problem, reason… (2)", "n_tokens": 80,
         "dtype": "float32", "probes": ["cosine"], "ed_summary": {}, "created": None, "dataset": "aime",
         "item_index": 11},
        {"run_id": "c3", "model_name": "m", "prompt_text": "my own text", "n_tokens": 3, "dtype": "float32",
         "probes": ["cosine"], "ed_summary": {}, "created": None, "dataset": None, "item_index": None}])
    table = app.runs_table(runs)
    assert list(table["item"]) == ["gsm8k #3", "aime #11", ""]
    assert list(app.runs_table(runs, text_filter="aime #11")["run_id"]) == ["b2"]
