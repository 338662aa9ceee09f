"""The presenter view (issue 12 §4): a talk carried in the URL, one chart per slide, ← / → through it, a talk
made from the cache when the link names none; Explore adds a run's charts to the talk."""

from __future__ import annotations

import numpy as np
import pytest

from effdepth import app, mapstore
from effdepth.app import talk
from effdepth.contract import LinearMap
from effdepth.store import Store
from tests import app_support
from tests.app.test_app import EXPLORE, no_problems, page, specs, title, url

PRESENT = "pages/5_Present.py"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    a = str(app_support.build_tiny_dir(tmp_path_factory.mktemp("present") / "tiny-a", seed=1))
    return {"a": a, "run": app_support.compute_run(a, app_support.TINY_PROMPT)}


def test_slides_parse_bounded_and_without_duplicates():
    assert talk.parse_slides("cosine:abc123,nope:x,lens:abc123,skip:,linmap:map-1f") == [
        talk.Slide("cosine", "abc123"), talk.Slide("lens", "abc123"), talk.Slide("linmap", "map-1f")]
    assert talk.parse_slides("lens:<script>,cosine:a b") == []
    many = ",".join(f"cosine:r{k}" for k in range(100))
    assert len(talk.parse_slides(many)) == talk.MAX_SLIDES
    assert talk.add_slides("cosine:r1", [talk.Slide("cosine", "r1"), talk.Slide("skip", "r1")]) == "cosine:r1,skip:r1"
    # the URL state keeps the talk, cleaned
    assert app.state_from_query({"slides": "cosine:r1,bad,lens:r1", "slide": "99"}).slides == "cosine:r1,lens:r1"
    assert app.state_from_query({"slide": "99"}).slide == talk.MAX_SLIDES - 1


def test_present_steps_through_a_talk_from_the_url(cache, tiny):
    run = tiny["run"]
    app_support.fill_store(cache, [run])
    at = page(PRESENT, slides=f"cosine:{run.run_id},lens:{run.run_id},skip:{run.run_id}")
    no_problems(at)
    assert [title(s) for s in specs(at)] == ["cosine(layer contribution, residual in)"]
    assert at.button(key="slide_back").disabled and not at.button(key="slide_next").disabled
    at.button(key="slide_next").click().run()
    no_problems(at)
    assert url(at)["slide"] == "1"
    assert [title(s) for s in specs(at)] == ["logit-lens KL(layer ‖ final) [nats]"]
    at.button(key="slide_next").click().run()
    assert at.button(key="slide_next").disabled  # the last slide
    assert len(specs(at)) == 1 and at.header[0].value.startswith("Layer skipping")
    # a copied link opens the same slide; one naming nothing in the cache says so
    again = page(PRESENT, **url(at))
    assert again.button(key="slide_next").disabled
    missing = page(PRESENT, slides="cosine:0000000000000000")
    assert any("names nothing in this cache" in w.value for w in missing.warning)


def test_present_makes_a_talk_from_the_cache(cache, tiny):
    run = tiny["run"]
    app_support.fill_store(cache, [run])
    meta = {"map_id": "map-present", "source_name": "a", "target_name": "b", "source_dtype": "float32",
            "target_dtype": "float32", "source_layers": 2, "target_layers": 3, "n_fit_tokens": 10,
            "n_held_tokens": 4, "alpha": 1e-3, "corpus": "c"}
    mapstore.put_map(Store(cache), LinearMap(meta=meta, error=np.full((3, 4), 0.5)))
    slides = talk.default_talk(Store(cache))
    assert slides == [talk.Slide(k, run.run_id) for k in ("cosine", "lens", "skip")] + [
        talk.Slide("linmap", "map-present")]
    at = page(PRESENT, slide=3)
    no_problems(at)
    assert title(specs(at)[0]).startswith("Linear map a → b")


def test_explore_adds_a_runs_charts_to_the_talk(cache, tiny):
    run = tiny["run"]
    app_support.fill_store(cache, [run])
    at = page(EXPLORE, run=run.run_id)
    at.button(key="talk_add").click().run()
    no_problems(at)
    assert url(at)["slides"] == f"cosine:{run.run_id},lens:{run.run_id},skip:{run.run_id}"


def test_a_link_whose_slides_are_all_malformed_says_so(cache, tiny):
    """Only invalid slides in the link: a sentence says they name nothing, then the cache's own talk."""
    app_support.fill_store(cache, [tiny["run"]])
    at = page(PRESENT, slides="nope:x,lens:<b>,skip:")
    no_problems(at)
    said = app_support.unescape(" ".join(w.value for w in at.warning))
    assert "The link's slides (nope:x,lens:<b>,skip:) name nothing this page can show" in said
    assert specs(at)  # the cache's own talk is shown after it
