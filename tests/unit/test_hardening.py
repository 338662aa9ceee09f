"""Issue 19 §7: inputs a hostile or careless user gives, and where derived files go."""

from __future__ import annotations

import effdepth
from effdepth import models
from tests.unit.test_store import TEXT


def test_derived_fits_stay_beside_the_cache_the_user_chose(word_model_dir, tmp_path, monkeypatch):
    """The erasure baseline of a run is kept beside the result cache it is stored in, not in the project's
    cache folder (EFFDEPTH_CACHE / --cache / cache= point elsewhere)."""
    from effdepth import stages

    chosen, project = tmp_path / "elsewhere", tmp_path / "project-cache"
    chosen.mkdir()
    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(project))  # the project's own cache folder, for this test
    monkeypatch.setattr(stages, "_BASELINES", {})
    run = effdepth.probe(str(word_model_dir), TEXT, probes=("erasure",), answer="w19", cache=chosen / "c.duckdb")
    fingerprint = run.meta["model_fingerprint"]
    beside = list((chosen / "baselines").glob(f"{fingerprint}-*.safetensors"))
    assert len(beside) == 1
    assert models.cache_dir() == project and not (project / "baselines").exists()


def test_a_widget_callback_after_a_fragment_rerun_dropped_its_state_changes_nothing(monkeypatch):
    """The Difficulty page under a live sweep: a click's callback may run after the fragment's rerun dropped
    the widget's state (KeyError: 'st.session_state has no key "w_agg"'); it now leaves the view as it is."""
    import importlib

    from effdepth import app

    ui_state = importlib.import_module("effdepth.ui.state")  # the module (effdepth.ui.state is also a function)
    from effdepth.ui import sweep as ui_sweep

    view = app.ViewState(agg="token")
    fake = {ui_state.STATE: view}
    monkeypatch.setattr(ui_state.st, "session_state", fake)
    callback = ui_state._set("agg", "w_agg")
    callback()  # no "w_agg" in the state: no KeyError, no change
    assert view.agg == "token"
    fake["w_agg"] = "prompt"
    callback()
    assert view.agg == "prompt"
    import pandas as pd

    sets = pd.DataFrame({"key": ["a|float32|0"], "model_name": ["m"], "dtype": ["float32"], "chat_template": [False]})
    ui_sweep._adopt(view, sets, "gone|float32|0", "a")  # a set whose label (item count) changed: no IndexError
    assert view.model != "m"
