"""The ``slow`` marker is checked (tests/conftest.py): a real embedded model loaded by an unmarked test fails it.

Nothing here loads a model: resolving an embedded name reads no weights, and the inner test session of
``pytester`` runs on a stand-in for the embedded loader.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from effdepth import models
from effdepth.models import load
from tests.conftest import real_model_load_problem

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def fake_item(*marks: str):
    return SimpleNamespace(nodeid="tests/unit/test_x.py::test_x",
                           get_closest_marker=lambda name: object() if name in marks else None)


def test_the_check_refuses_an_unmarked_test_and_lets_a_slow_one_load():
    assert real_model_load_problem(fake_item(), "smollm2-135m") == (
        "tests/unit/test_x.py::test_x loads the real model smollm2-135m: mark it @pytest.mark.slow")
    assert "through its fixture 'smol': mark it, and every test that uses that fixture, @pytest.mark.slow" in (
        real_model_load_problem(fake_item("browser"), "smollm2-135m", ("cache", "smol")))
    assert real_model_load_problem(fake_item("slow"), "smollm2-135m") is None
    assert real_model_load_problem(fake_item("slow"), "gemma3-270m", ("smol",)) is None
    assert "outside any test" in real_model_load_problem(None, "smollm2-135m")


def test_the_check_is_in_place_and_resolving_loads_nothing():
    assert load._load_embedded.__qualname__.startswith("_real_model_loads_are_slow.")  # this session's wrap
    spec = models.resolve_model(models.DEFAULT_MODEL)  # reads no weights: allowed in an unmarked test
    assert spec.kind == "embedded" and spec.name == "smollm2-135m"


INNER_TESTS = '''
import pytest

from effdepth import models
from effdepth.errors import ModelTooLargeError


def test_unmarked():
    models.load_model("smollm2-135m")


@pytest.mark.slow
def test_marked():
    with pytest.raises(RuntimeError, match="the stand-in loader was reached"):
        models.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def smol():
    return models.load_model("smollm2-135m")


def test_through_a_module_fixture(smol):
    pass


def test_a_swallowed_failure():
    try:
        models.load_model("smollm2-135m", dtype="bfloat16")
    except BaseException:
        pass


def test_a_patched_load_model_wins(monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: "patched")
    assert models.load_model("smollm2-135m") == "patched"


def test_a_refusal_before_any_weights_is_no_load(monkeypatch):
    monkeypatch.setattr(models.memory, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(ModelTooLargeError):
        models.load_model("qwen2.5-coder-1.5b")
'''


def test_an_inner_session_fails_the_unmarked_loads(pytester, monkeypatch):
    def stand_in(spec, *args, **kwargs):
        raise RuntimeError(f"the stand-in loader was reached for {spec.name}")

    monkeypatch.setattr(load, "_load_embedded", stand_in)  # what the inner session's conftest wraps
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: loads a real embedded model\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines_random([
        "*test_inner.py::test_unmarked loads the real model smollm2-135m: mark it @pytest.mark.slow*",
        "*test_inner.py::test_through_a_module_fixture loads the real model smollm2-135m through its fixture 'smol'*",
        "*test_inner.py::test_a_swallowed_failure loads the real model smollm2-135m: mark it @pytest.mark.slow*",
    ])
    assert "stand-in loader was reached" not in result.stdout.str()  # the marked test's raise was expected
