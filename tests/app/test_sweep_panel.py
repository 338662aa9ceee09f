"""The Difficulty page starts a sweep in the background (issue 12 §4), driven headless with AppTest: the form
starts it, the page finds it again after a reload, its items land in the page's aggregates, and demo mode
starts nothing."""

from __future__ import annotations

import time

import pytest

from effdepth import sweeps
from effdepth.store import Store
from effdepth.ui import jobs as ui_jobs
from tests import app_support
from tests.app.test_app import no_problems, page

DIFFICULTY = "pages/4_Difficulty.py"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(app_support.build_tiny_dir(tmp_path_factory.mktemp("panel") / "tiny", seed=4))


def _done(timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while any(job.active for job in ui_jobs.sweep_jobs().all()):
        if time.monotonic() > deadline:
            raise AssertionError("the sweep did not end")
        time.sleep(0.1)
    return ui_jobs.sweep_jobs().all()[0]


def test_the_difficulty_page_starts_a_background_sweep_that_a_reload_finds(cache, tiny_dir):
    ui_jobs.sweep_jobs.clear()
    at = page(DIFFICULTY)
    no_problems(at)
    at.text_input(key="w_sweep_model").set_value(tiny_dir)
    at.selectbox(key="w_sweep_dataset").set_value("hops")
    at.number_input(key="w_sweep_n").set_value(4)
    at.button[0].click().run()  # the form's submit button
    no_problems(at)
    job = _done()
    assert job.status == "done", job.error
    assert job.n_stored == 4 and job.n_computed == 4
    store = Store(cache)
    assert sorted(int(m) for m in store.runs()["item_index"]) == [0, 1, 2, 3]
    assert set(store.runs()["dataset"]) == {"hops"}
    # a reload (a new session) finds the sweep and draws its items' aggregates
    again = page(DIFFICULTY, model=tiny_dir)
    no_problems(again)
    text = " ".join(m.value for m in again.markdown)
    assert "hops, 4 items" in app_support.unescape(text) and "done" in text
    assert "4/4 stored" in app_support.unescape(text)
    sets = sweeps.sweep_sets(sweeps.item_runs(store))
    assert len(sets) == 1


def test_demo_mode_starts_no_sweep(cache):
    ui_jobs.sweep_jobs.clear()
    at = page(DIFFICULTY, demo=1)
    no_problems(at)
    assert any("sweeps cannot be started" in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "w_sweep_model"]


def test_a_long_sweep_says_its_estimate_and_waits_for_a_second_click(cache):
    """erasure + IG over 200 GSM8K items on the 1.5B is hours of work: the page says the estimate and starts
    nothing until "Start it anyway" (issue 19 §7)."""
    ui_jobs.sweep_jobs.clear()
    at = page(DIFFICULTY)
    no_problems(at)
    at.text_input(key="w_sweep_model").set_value("qwen2.5-coder-1.5b")
    at.selectbox(key="w_sweep_dataset").set_value("gsm8k")
    at.number_input(key="w_sweep_n").set_value(200)
    at.multiselect(key="w_sweep_probes").set_value(["erasure", "igrad"])
    at.button[0].click().run()  # the form's submit button
    no_problems(at)
    said = app_support.unescape(" ".join(w.value for w in at.warning))
    assert "is estimated at ~" in said and "min of compute here" in said
    assert ui_jobs.sweep_jobs().all() == []  # nothing started
    at.button(key="sweep_cancel").click().run()
    assert not [b for b in at.button if b.key == "sweep_confirm"]
