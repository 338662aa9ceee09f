"""The app's side of the linear fits (docs/SPEC.md §15): the shortcut-lens run of a prompt beside its
logit-lens run, their EDs side by side, and the stored linear maps of a model pair."""

from __future__ import annotations

import shlex

import pandas as pd

from effdepth import engine, mapstore
from effdepth.contract import LinearMap

#: the lens EDs a side-by-side table lists: (label, logit-lens probe, shortcut-lens probe, rule)
LENS_ED_ROWS = (("KL, P1's rule", "kl", "shortcut_kl", "p1"), ("KL, guarded rule", "kl", "shortcut_kl", "guarded"),
                ("top-5 overlap, P1's rule", "overlap", "shortcut_overlap", "p1"),
                ("top-5 overlap, guarded rule", "overlap", "shortcut_overlap", "guarded"))


def shortcut_config(positions: str = "all") -> engine.ProbeConfig:
    """The config of a prompt's shortcut-lens run (a run of its own: the first one on a model fits the lens)."""
    return engine.ProbeConfig(probes=("shortcut_lens",), positions=positions)


def shortcut_metric(lens_metric: str) -> str:
    """The shortcut lens's name of a logit-lens metric (``kl`` -> ``shortcut_kl``)."""
    return f"shortcut_{lens_metric}"


def lens_domain(lens_run, shortcut_run, lens_metric: str) -> list[float]:
    """One colour domain for a lens metric under both lenses (side-by-side heatmaps read on one scale)."""
    from effdepth import charts

    shortcut = shortcut_run.tables["layer_token"]
    shortcut = shortcut[shortcut["metric"] == shortcut_metric(lens_metric)].assign(metric=lens_metric)
    return charts.shared_domain(lens_metric, lens_run.tables["layer_token"], shortcut)


def _ed_cell(ed: pd.DataFrame, probe: str, rule: str) -> tuple[object, object]:
    row = ed[(ed["probe"] == probe) & (ed["rule"] == rule)]
    if not len(row) or pd.isna(row["ed"].iloc[0]):
        return "none", None
    return int(row["ed"].iloc[0]), round(float(row["edr"].iloc[0]), 3)


def lens_ed_table(lens_run, shortcut_run) -> pd.DataFrame:
    """One row per lens rule: the ED and EDR under the logit lens and under the linear shortcut lens."""
    rows = []
    for label, plain, shortcut, rule in LENS_ED_ROWS:
        ed_plain, edr_plain = _ed_cell(lens_run.tables["ed"], plain, rule)
        ed_short, edr_short = _ed_cell(shortcut_run.tables["ed"], shortcut, rule)
        rows.append({"rule": label, "logit lens ED": ed_plain, "logit lens EDR": edr_plain,
                     "shortcut lens ED": ed_short, "shortcut lens EDR": edr_short})
    frame = pd.DataFrame(rows)
    for column in ("logit lens ED", "shortcut lens ED"):
        frame[column] = frame[column].astype(str)
    return frame


def held_out_kl(shortcut_run) -> dict[str, list[float]] | None:
    """The fit's held-out report (mean KL per layer under either lens), None for a run without it."""
    return ((shortcut_run.meta.get("shortcut_fit") or {}).get("held_out_kl")) if shortcut_run is not None else None


def fit_caption(shortcut_run) -> str:
    """What the shortcut lens was fitted on, in one sentence."""
    fit = shortcut_run.meta.get("shortcut_fit") or {}
    return (f"Fitted on {fit.get('n_fit_tokens', '?')} tokens of the shipped text ({fit.get('recipe', '?')}), "
            f"scored on {fit.get('n_held_tokens', '?')} held-out tokens.")


def maps_of_pair(store, name_a: str, name_b: str) -> list[LinearMap]:
    """The stored linear maps between two models (by their weights), either way round, newest first."""
    from effdepth.app.inputs import resolve

    listing = mapstore.maps(store)
    if not len(listing):
        return []
    a, b = resolve(name_a).fingerprint, resolve(name_b).fingerprint
    source, target = listing["source_fingerprint"], listing["target_fingerprint"]
    pair = listing[((source == a) & (target == b)) | ((source == b) & (target == a))]
    found = [mapstore.get_map(store, map_id) for map_id in pair["map_id"]]
    return [m for m in found if m is not None]


def linmap_command(source: str, target: str, target_dtype: str | None = None) -> str:
    """The shell command that fits the maps of a pair (the shallower model as the source)."""
    command = f"effdepth linmap --source {shlex.quote(source)} --target {shlex.quote(target)}"
    if target_dtype and target_dtype != "float32":
        command += f" --target-dtype {target_dtype}"
    return command


def map_summary(linear_map: LinearMap) -> pd.DataFrame:
    """One row per source depth: its best target depth, the diagonal's, and both errors."""
    best, diagonal, error = linear_map.best_target(), linear_map.diagonal(), linear_map.error
    return pd.DataFrame({"source depth s": range(error.shape[0]), "best target j": best,
                         "diagonal j = s·L_B/L_A": diagonal.round(1),
                         "error at best j": error[range(error.shape[0]), best].round(3),
                         "error on the diagonal": error[range(error.shape[0]), diagonal.round().astype(int)].round(3)})


def maps_listing(store) -> pd.DataFrame:
    """The Runs page's table of stored linear maps."""
    listing = mapstore.maps(store).drop(columns=["source_fingerprint", "target_fingerprint"])
    return listing.rename(columns={"source_name": "source", "target_name": "target", "n_fit_tokens": "fit tokens",
                                   "n_held_tokens": "held-out tokens"})


def corpus_tokens() -> int:
    """The shipped fit text's size in tokens (estimated from its characters), as the page says it."""
    from effdepth.datasets import corpus

    return corpus.estimated_tokens()
