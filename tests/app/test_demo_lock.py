"""A server locked in demo mode (issue 19 §7): ``EFFDEPTH_DEMO=1`` puts every visitor in demo mode, and no URL
or widget lifts it; the sweep list shows no other user's paths or commands."""

from __future__ import annotations

from effdepth import app
from tests.app.test_app import EXPLORE, no_problems, page, url

DIFFICULTY = "pages/4_Difficulty.py"


def test_no_link_or_widget_lifts_the_servers_demo_lock(cache, monkeypatch, word_model_dir):
    monkeypatch.setenv("EFFDEPTH_DEMO", "1")
    assert app.state_from_query({"demo": "0"}).demo is True
    at = page(EXPLORE, model=str(word_model_dir), prompt="w1 w2 w3", demo=0)
    no_problems(at)
    assert "run_probes" not in [b.key for b in at.button]  # nothing to compute
    assert not [t for t in at.toggle if t.key == "w_demo"]  # no switch to turn it off
    assert any("locked on by this server" in c.value for c in at.sidebar.caption)
    assert url(at).get("demo") == "1"
    sweeps = page(DIFFICULTY, demo=0)
    no_problems(sweeps)
    assert "w_sweep_model" not in [t.key for t in sweeps.text_input]  # no sweep can be started
    assert app.public_model_name(str(word_model_dir)) == "a local model"
    assert app.public_model_name("smollm2-135m") == "smollm2-135m"
