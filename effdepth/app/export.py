"""Exports: a run's tables as CSV/Parquet in a zip, and its charts as PNG/SVG."""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from effdepth import charts
from effdepth.app.options import CURVE_METRICS
from effdepth.app.summary import available_variants
from effdepth.charts import chart_png, chart_svg


def export_zip(store, run_ids: Iterable[str], fmt: str = "csv") -> bytes:
    """A zip of the runs' tables as CSV or Parquet (one folder per run), written by the store."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="effdepth-export-") as tmp, \
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for run_id in run_ids:
            target = Path(tmp) / run_id
            target.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                store.export_parquet(run_id, target)
            else:
                store.export_csv(run_id, target)
            for path in sorted(target.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{run_id}/{path.relative_to(target)}")
    return buffer.getvalue()


def run_charts(result, variant: str | None = None) -> dict[str, object]:
    """Every chart of one run (name -> Altair chart) — what Explore shows, for export."""
    t = result.tables
    out: dict[str, object] = {}
    for probe in CURVE_METRICS:
        frame = charts.probe_curve_frame(t["layer"], probe)
        if len(frame):
            out[f"curve_{probe}"] = charts.probe_curve(t["layer"], probe, t["ed"])
    present = set(t["layer_token"]["metric"]) if len(t["layer_token"]) else set()
    for metric in ("cos_layer", "cos_att", "cos_mlp", "rc_layer", "rc_att", "rc_mlp", "kl", "overlap", "entropy"):
        if metric in present:
            out[f"heatmap_{metric}"] = charts.layer_token_heatmap(t["layer_token"], t["tokens"], metric, t["ed"],
                                                                  select=False)
    for v in available_variants(t["skip"]):
        if variant is None or v == variant:
            out[f"skip_{v}"] = charts.skip_chart(t["skip"], t["skip_output"], v, t["ed"])
    return out


def charts_zip(result, fmt: str = "png") -> bytes:
    """A zip with every chart of a run as PNG or SVG (vl-convert)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, chart in run_charts(result).items():
            if fmt == "svg":
                archive.writestr(f"{name}.svg", chart_svg(chart))
            else:
                archive.writestr(f"{name}.png", chart_png(chart))
    return buffer.getvalue()
