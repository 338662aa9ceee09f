"""The Altair specs: marks, ED rule positions, tooltips, colour scales, shared domains, exports.

Every chart is built from a real run of a tiny random Llama (through the engine, < 2 s) and checked
on its Vega-Lite dict (``chart.to_dict()``), i.e. on what the browser receives.
"""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest

from effdepth import app, charts
from tests import app_support


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model = app_support.build_tiny_dir(tmp_path_factory.mktemp("tiny") / "tiny-llama", seed=1)
    return app_support.compute_run(str(model), app_support.TINY_PROMPT)


@pytest.fixture(scope="module")
def run_b(tmp_path_factory):
    model = app_support.build_tiny_dir(tmp_path_factory.mktemp("tiny_b") / "tiny-llama-b", seed=2)
    return app_support.compute_run(str(model), app_support.TINY_PROMPT)


def marks(spec: dict) -> list[str]:
    return [charts.mark_type(v) for v in charts.iter_views(spec) if charts.mark_type(v)]


def engine_eds(run, probe: str) -> set[int]:
    ed = run.tables["ed"]
    rows = ed[(ed["probe"] == probe) & ed["ed"].notna()]
    return {int(v) for v in rows["ed"]}


def tooltip_fields(spec: dict) -> set[str]:
    out = set()
    for view in charts.iter_views(spec):
        tips = view.get("encoding", {}).get("tooltip", [])
        for tip in tips if isinstance(tips, list) else [tips]:
            if isinstance(tip, dict) and "field" in tip:
                out.add(tip["field"])
    return out


# ------------------------------------------------------------------------------------------ tokens


def test_visible_tokens_are_readable_and_unique():
    assert charts.visible_token(" Paris") == "·Paris"
    assert charts.visible_token("\n") == "↵"
    assert charts.visible_token("\t") == "⇥"
    assert charts.visible_token("") == "∅"
    assert charts.visible_token("a" * 40).endswith("…") and len(charts.visible_token("a" * 40)) == charts.LABEL_CHARS
    labels = charts.token_labels([" the", " the", "\n"])
    assert labels == ["0:·the", "1:·the", "2:↵"]
    assert len(set(labels)) == 3


def test_label_density_is_limited_for_long_prompts():
    tokens = [f"t{i}" for i in range(300)]
    axis = charts.token_axis(charts.token_labels(tokens)).to_dict()
    assert len(axis["values"]) <= charts.MAX_TOKEN_LABELS
    assert axis["labelAngle"] < 0
    short = charts.token_axis(charts.token_labels(tokens[:10])).to_dict()
    assert len(short["values"]) == 10


# ---------------------------------------------------------------------------------------- heatmaps


@pytest.mark.parametrize("metric,probe", [("cos_layer", "cosine"), ("cos_att", "cosine"), ("rc_mlp", "cosine"),
                                          ("kl", "kl"), ("overlap", "overlap"), ("entropy", "kl")])
def test_heatmap_has_rects_ed_rules_and_tooltips(run, metric, probe):
    t = run.tables
    spec = charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, t["ed"]).to_dict()
    assert "rect" in marks(spec)
    assert set(charts.rule_positions(spec, "y")) == engine_eds(run, probe)
    assert {"layer", "token", "value", "pos"} <= tooltip_fields(spec)
    n_layers = run.meta["n_layers"]
    assert spec["height"] == charts.heatmap_height(n_layers)
    assert spec["width"] == "container"
    rect = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "rect")
    assert rect["encoding"]["y"]["sort"] == "descending"  # layer 0 at the bottom
    title = rect["encoding"]["y"]["title"]
    assert title == ("layer (input of)" if metric in ("kl", "overlap", "entropy") else "layer")
    params = [p for v in charts.iter_views(spec) for p in v.get("params", [])]
    cell = next(p for p in params if p["name"] == "cell")  # click a cell -> a token position
    assert cell["select"]["fields"] == ["pos"] and cell["select"]["on"] == "click"


def test_colour_scales(run):
    t = run.tables

    def colour(metric):
        spec = charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, t["ed"]).to_dict()
        rect = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "rect")
        return rect["encoding"]["color"]["scale"]

    cos = colour("cos_layer")
    assert cos["domain"] == [-1.0, 1.0] and cos["domainMid"] == 0 and cos["scheme"] in ("blueorange", "redblue")
    assert colour("kl")["type"] in ("symlog", "log") and colour("kl")["scheme"] == "viridis"
    assert colour("overlap")["domain"] == [0.0, 1.0] and colour("overlap")["scheme"] == "viridis"
    assert colour("entropy")["scheme"] == "viridis"
    assert colour("rc_layer")["type"] == "log"


def test_heatmap_height_grows_with_depth():
    assert charts.heatmap_height(6) == charts.MIN_HEIGHT
    assert charts.heatmap_height(64) == 64 * charts.PX_PER_LAYER


def test_selected_position_is_outlined(run):
    t = run.tables
    spec = charts.layer_token_heatmap(t["layer_token"], t["tokens"], "kl", t["ed"], selected_pos=3).to_dict()
    assert marks(spec).count("rect") == 2


# ------------------------------------------------------------------------------------------ curves


@pytest.mark.parametrize("probe", ["cosine", "kl", "overlap", "skip"])
def test_curve_has_line_and_rule_at_the_engine_ed(run, probe):
    t = run.tables
    spec = charts.probe_curve(t["layer"], probe, t["ed"]).to_dict()
    assert "line" in marks(spec) and "rule" in marks(spec)
    assert set(charts.rule_positions(spec, "x")) == engine_eds(run, probe)
    assert {"layer", "value"} <= tooltip_fields(spec)
    for view in charts.iter_views(spec):  # the ED datum sits on the layer axis (quantitative, not scaled)
        enc = view.get("encoding", {}).get("x", {})
        if charts.mark_type(view) == "rule" and "datum" in enc:
            assert isinstance(enc["datum"], int)


def test_cosine_curve_includes_mu_as_in_p1(run):
    frame = charts.probe_curve_frame(run.tables["layer"], "cosine")
    layer = run.tables["layer"]
    mu = frame[frame["metric"] == "cos_mu"].set_index("layer")["value"]
    parts = layer[layer["metric"].isin(["cos_att", "cos_mlp", "cos_layer"])].groupby("layer")["value"].mean()
    pd.testing.assert_series_equal(mu.sort_index(), parts.sort_index(), check_names=False)


def test_ed_rules_skip_missing_transitions():
    ed = pd.DataFrame([{"probe": "cosine", "rule": "p1", "ed": pd.NA, "edr": None, "n_layers": 4,
                        "threshold": 0.0, "description": "x"}])
    ed["ed"] = ed["ed"].astype("Int64")
    layer = pd.DataFrame({"metric": ["cos_att", "cos_mlp", "cos_layer"] * 4,
                          "layer": [l for l in range(4) for _ in range(3)], "value": [0.1] * 12})
    spec = charts.probe_curve(layer, "cosine", ed).to_dict()
    assert charts.rule_positions(spec, "x") == []


# -------------------------------------------------------------------------------------------- skip


@pytest.mark.parametrize("variant", ["future", "current", "local_future", "local_current"])
def test_skip_matrix_and_output_bars(run, variant):
    t = run.tables
    spec = charts.skip_chart(t["skip"], t["skip_output"], variant, t["ed"]).to_dict()
    assert {"rect", "bar"} <= set(marks(spec))
    rect = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "rect")
    assert rect["encoding"]["color"]["scale"]["domain"] == [0.0, 1.0]  # P2: vmin 0, vmax 1
    assert rect["encoding"]["color"]["scale"]["scheme"] == "viridis"
    assert set(charts.rule_positions(spec, "y")) == engine_eds(run, "skip")
    assert {"skipped", "affected", "value"} <= tooltip_fields(spec)
    floor = charts.noise_floor(t["skip"], variant)
    assert floor is not None and 0 <= floor < 1e-3


def test_lens_topk_chart(run):
    t = run.tables
    spec = charts.lens_topk_chart(t["lens_topk"], 5, "5:x", ed=t["ed"]).to_dict()
    assert {"rect", "text"} <= set(marks(spec))
    frame = charts.lens_topk_frame(t["lens_topk"], 5)
    assert len(frame) == run.meta["n_layers"] * 5


# ----------------------------------------------------------------------------------------- compare


def test_compare_shares_colour_domains(run, run_b):
    for metric in ("cos_layer", "kl", "rc_layer", "entropy"):
        domain = charts.shared_domain(metric, run.tables["layer_token"], run_b.tables["layer_token"])
        specs = [charts.layer_token_heatmap(r.tables["layer_token"], r.tables["tokens"], metric, r.tables["ed"],
                                            domain=domain).to_dict() for r in (run, run_b)]
        scales = [next(v for v in charts.iter_views(s) if charts.mark_type(v) == "rect")["encoding"]["color"]["scale"]
                  for s in specs]
        assert scales[0]["domain"] == scales[1]["domain"] == list(domain)
        values = pd.concat([r.tables["layer_token"] for r in (run, run_b)])
        values = values[values["metric"] == metric]["value"]
        if metric == "kl":
            assert domain[1] == pytest.approx(values.max())


def test_compare_curves_normalise_depth(run, run_b):
    spec = charts.compare_curves([("A", run.tables["layer"], run.tables["ed"]),
                                  ("B", run_b.tables["layer"], run_b.tables["ed"])], "overlap").to_dict()
    expected = set()
    for r in (run, run_b):
        ed, _ = app.ed_value(r.tables["ed"], "overlap", "p1")
        if ed is not None:
            expected.add(ed / r.meta["n_layers"])  # each model's P1 ED at ED / L
    assert set(charts.rule_positions(spec, "x")) == expected
    line = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "line")
    assert line["encoding"]["x"]["field"] == "depth"
    assert line["encoding"]["x"]["scale"]["domain"] == [0, 1]


def test_delta_heatmap_is_diverging_and_centred(run, run_b):
    assert app.same_grid(run, run_b)
    spec = charts.delta_heatmap(run.tables["layer_token"], run_b.tables["layer_token"], run.tables["tokens"],
                                "cos_layer", ("A", "B")).to_dict()
    rect = next(v for v in charts.iter_views(spec) if charts.mark_type(v) == "rect")
    scale = rect["encoding"]["color"]["scale"]
    assert scale["domainMid"] == 0 and scale["domain"][0] == -scale["domain"][1]


# ------------------------------------------------------------------------------------------ export


def test_png_and_svg_export(run):
    chart = charts.probe_curve(run.tables["layer"], "kl", run.tables["ed"])
    png = charts.chart_png(chart)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = charts.chart_svg(chart)
    assert svg.lstrip().startswith("<svg") and "ED" in svg
    fixed = charts.with_width(chart, 700)
    assert json.dumps(fixed).count('"container"') == 0


def test_charts_zip_holds_every_chart(run):
    data = app.charts_zip(run, "svg")
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"curve_cosine.svg", "heatmap_kl.svg", "skip_future.svg"} <= set(names)


def test_projector_spec_scales_fonts_and_fixed_heights_only():
    import altair as alt
    import pandas as pd

    from effdepth import charts as charts_room

    frame = pd.DataFrame({"x": [0, 1], "y": [1, 2]})
    chart = alt.Chart(frame).mark_line().encode(
        x=alt.X("x:Q", axis=alt.Axis(labelFontSize=10)), y="y:Q").properties(height=100, width="container")
    spec = charts_room.projector_spec(chart, scale=1.5)
    assert spec["encoding"]["x"]["axis"]["labelFontSize"] == 15 and spec["height"] == 150
    assert spec["width"] == "container"  # widths stay the page's
    assert spec["config"]["axis"]["titleFontSize"] == 18 and spec["config"]["title"]["fontSize"] == 19.5
    assert chart.to_dict()["height"] == 100  # the chart itself is left as it was
