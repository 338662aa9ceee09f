"""Fixtures shared across the test files, and the check of the ``slow`` marker.

``slow`` (pyproject.toml) means "loads a real embedded model". The check: while the tests run, the loader
of embedded models (``effdepth.models.load._load_embedded``, which every ``models.load_model`` of an
embedded name reaches, from the CLI, the API, the app's model holder or a fixture) is wrapped, and a
load during a test without the marker, or during a fixture set up for such a test, fails that test
with its name. The wrap sits below ``load_model``, so a test that monkeypatches ``models.load_model``
still wins, and a load refused before any weights are read (too large, unsupported) is no load. Loads
in a subprocess (a CLI run through ``subprocess``, the browser tests' server) are not seen here: those
tests are marked by reading them.
"""

from __future__ import annotations

import threading

import pytest

#: the test being run (setup, call, teardown), the fixtures being set up for it (innermost last) and
#: the unmarked loads seen per test (nodeid -> messages), for a failure swallowed on the way up
_RUNNING: dict = {"item": None, "fixtures": [], "missed": {}}
_LOCK = threading.Lock()


def real_model_load_problem(item, model: str, fixtures: tuple[str, ...] = ()) -> str | None:
    """Why ``item`` (a pytest test item, or None outside any test) may not load the real embedded model
    ``model`` (in the innermost of ``fixtures``, if it is a fixture being set up): None if it carries the
    ``slow`` marker."""
    if item is None:
        return f"the real model {model} is loaded outside any test (at collection?): load it in a slow test"
    if item.get_closest_marker("slow") is not None:
        return None
    if fixtures:
        return (f"{item.nodeid} loads the real model {model} through its fixture {fixtures[-1]!r}: mark it, and "
                "every test that uses that fixture, @pytest.mark.slow")
    return f"{item.nodeid} loads the real model {model}: mark it @pytest.mark.slow"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _RUNNING["item"] = item
    try:
        return (yield)
    finally:
        _RUNNING["item"] = None
        with _LOCK:
            _RUNNING["missed"].pop(item.nodeid, None)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    _RUNNING["fixtures"].append(fixturedef.argname)
    try:
        return (yield)
    finally:
        _RUNNING["fixtures"].pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A phase that passed although it loaded a real model unmarked (the failure was caught on the way, e.g.
    by the app's run in a Streamlit script thread) is reported failed all the same."""
    report = yield
    with _LOCK:
        missed = _RUNNING["missed"].pop(item.nodeid, None)
    if missed and report.passed:
        report.outcome = "failed"
        report.longrepr = "\n".join(dict.fromkeys(missed))
    return report


@pytest.fixture(scope="session", autouse=True)
def _real_model_loads_are_slow():
    """Wrap the embedded-model loader for the whole session with :func:`real_model_load_problem`."""
    from effdepth.models import load

    original = load._load_embedded

    def checked(spec, *args, **kwargs):
        item = _RUNNING["item"]
        problem = real_model_load_problem(item, spec.name, tuple(_RUNNING["fixtures"]))
        if problem:
            if item is not None:
                with _LOCK:
                    _RUNNING["missed"].setdefault(item.nodeid, []).append(problem)
            pytest.fail(problem, pytrace=False)
        return original(spec, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load, "_load_embedded", checked)
        yield


@pytest.fixture(scope="session")
def word_model_dir(tmp_path_factory):
    """A random 3-layer Llama with a WordLevel tokenizer ("w0 w1 …", adds <s>), saved as a model directory."""
    from tests.unit.test_store import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("word-llama") / "llama")


@pytest.fixture(scope="session")
def word_model(word_model_dir):
    """``word_model_dir`` loaded through models.load_model, shared by the tests that only read it."""
    from effdepth import models

    return models.load_model(str(word_model_dir))
