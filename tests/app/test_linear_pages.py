"""The linear fits on the pages (docs/SPEC.md §15), driven headless with AppTest: Explore's lens choice with
the shortcut lens computed on click, Compare's linear-map section and the Runs page's listing."""

from __future__ import annotations

import numpy as np
import pytest

from effdepth import app, charts, mapstore
from effdepth.contract import LinearMap
from effdepth.store import Store
from tests import app_support
from tests.app.test_app import COMPARE, EXPLORE, RUNS, by_title, no_problems, page, specs, title, url
from tests.app.test_app_attribution import chart_frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny-lens")
    a = str(app_support.build_tiny_dir(base / "tiny-a", seed=1))
    b = str(app_support.build_tiny_dir(base / "tiny-b", seed=2, n_layers=4))
    return {"a": a, "b": b, "run_a": app_support.compute_run(a, app_support.TINY_PROMPT)}


def test_explore_fits_and_shows_the_shortcut_lens_beside_the_logit_lens(cache, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFDEPTH_CACHE_DIR", str(tmp_path / "cache-dir"))  # where the fitted lens is kept
    app_support.fill_store(cache, [tiny["run_a"]])
    at = page(EXPLORE, run=tiny["run_a"].run_id)
    no_problems(at)
    assert at.radio(key="w_lens_view").value == "logit"
    assert not [b for b in at.button if b.key == "run_shortcut"]  # the logit lens alone asks for nothing
    at.radio(key="w_lens_view").set_value("both").run()
    no_problems(at)
    assert url(at)["lens_view"] == "both"
    assert any("not in the cache" in c.value for c in at.caption)
    at.button(key="run_shortcut").click().run()
    no_problems(at)
    assert any("Done" in s.label for s in at.status)
    shortcut_run = Store(cache).get(app.find_cached(Store(cache), tiny["a"], app_support.TINY_PROMPT, "float32",
                                                    False, app.shortcut_config())[0])
    assert shortcut_run is not None and shortcut_run.meta["probes"] == ["shortcut_lens"]
    heat = by_title(at, "shortcut-lens KL")
    assert by_title(at, "logit-lens KL")  # side by side
    ed = shortcut_run.tables["ed"]
    expected = ed[(ed["probe"] == "shortcut_kl") & ed["ed"].notna()]["ed"].astype(int).tolist()
    assert sorted(set(charts.rule_positions(heat, "y"))) == sorted(set(expected))
    assert by_title(at, "How well each lens reads")
    table = next(d.value for d in at.dataframe if "shortcut lens EDR" in d.value.columns)
    assert table["rule"].tolist()[0] == "KL, P1's rule"
    # the shortcut lens alone, from a copied link: one lens heatmap, no button, nothing computed again
    again = page(EXPLORE, **(url(at) | {"lens_view": "shortcut"}))
    no_problems(again)
    lens_heats = [title(s) for s in specs(again) if "lens KL(layer" in title(s)]  # the heatmaps
    assert lens_heats and all(t.startswith("shortcut-lens KL") for t in lens_heats)
    assert not [b for b in again.button if b.key == "run_shortcut"]


def _map(tiny, error: np.ndarray) -> LinearMap:
    spec_a, spec_b = app.resolve(tiny["a"]), app.resolve(tiny["b"])
    meta = {"map_id": "map-test", "source_name": spec_b.name, "target_name": spec_a.name,
            "source_fingerprint": spec_b.fingerprint, "target_fingerprint": spec_a.fingerprint,
            "source_dtype": "float32", "target_dtype": "float32", "source_layers": error.shape[0] - 1,
            "target_layers": error.shape[1] - 1, "n_fit_tokens": 1000, "n_held_tokens": 200, "alpha": 1e-3,
            "corpus": "corpus-test", "seconds": 2.0}
    return LinearMap(meta=meta, error=error)


def test_compare_shows_the_stored_map_of_the_pair_or_the_command_that_fits_it(cache, tiny):
    at = page(COMPARE, model=tiny["b"], model_b=tiny["a"])
    no_problems(at)
    assert any("effdepth linmap --source" in c.value and "--target" in c.value for c in at.code)
    error = np.linspace(0.1, 0.9, 5 * 7).reshape(5, 7)
    error[np.arange(5), [0, 2, 3, 5, 6]] = 0.01  # the best target of every source depth
    mapstore.put_map(Store(cache), _map(tiny, error))
    at = page(COMPARE, model=tiny["b"], model_b=tiny["a"])
    no_problems(at)
    assert by_title(at, "Linear map")
    frames = chart_frames(at, next(title(s) for s in specs(at) if title(s).startswith("Linear map")))
    grid = next(f for f in frames if len(f) == 35)  # every (s, j) cell
    assert np.allclose(grid.sort_values(["source", "target"])["error"].to_numpy(), error.ravel())
    best = grid[grid["best"]]
    assert sorted(zip(best["source"], best["target"])) == [(0, 0), (1, 2), (2, 3), (3, 5), (4, 6)]
    summary = next(d.value for d in at.dataframe if "best target j" in d.value.columns)
    assert summary["best target j"].tolist() == [0, 2, 3, 5, 6]
    # either way round: the pair swapped shows the same map
    swapped = page(COMPARE, model=tiny["a"], model_b=tiny["b"])
    assert by_title(swapped, "Linear map")


def test_runs_lists_the_maps_with_a_link_to_their_pair(cache, tiny):
    app_support.fill_store(cache, [tiny["run_a"]])
    mapstore.put_map(Store(cache), _map(tiny, np.full((5, 7), 0.5)))
    at = page(RUNS)
    no_problems(at)
    listing = next(d.value for d in at.dataframe if "fit tokens" in d.value.columns)
    assert listing["map_id"].tolist() == ["map-test"] and listing["held-out tokens"].tolist() == [200]
    assert any("Linear maps" in h.value for h in at.subheader)
