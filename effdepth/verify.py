"""Re-check the runs of a cache that carry no checks of their own (stored before runs were checked).

Runs stored by the app before runs took turns on the shared model may hold another session's numbers.
For each unverified run whose model still has the same weights, the run is computed again with its own
text and probe configuration, compared with what is stored, and replaced by the new, checked run (under
the id the current code gives it). Runs whose model is gone or changed are reported and left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from effdepth import checks
from effdepth.errors import EffdepthError

#: tables whose ``value`` column is compared between the stored and the recomputed run
COMPARED = ("layer_token", "layer", "skip", "skip_output", "erasure", "igrad")
_CONFIG_KEYS = ("probes", "splits", "seed", "skip_variants", "answer", "ig_steps", "ig_parts")
_ITEM_KEYS = ("dataset", "item_index", "bin")


@dataclass
class Verdict:
    run_id: str
    model_name: str
    status: str  # "verified" | "replaced" | "skipped"
    detail: str
    max_diff: float | None = None


def unverified_runs(store) -> list[dict]:
    """The meta of every run without checks, oldest first."""
    metas = [store.meta(run_id) for run_id in store.runs()["run_id"]]
    return sorted((m for m in metas if m is not None and not checks.verified(m)), key=lambda m: str(m.get("created")))


def max_difference(stored, fresh) -> float:
    """Largest |Δ| over the value columns of the compared tables (inf if their rows differ)."""
    worst = 0.0
    for name in COMPARED:
        a, b = stored.tables.get(name), fresh.tables.get(name)
        if a is None or b is None or (len(a) == 0 and len(b) == 0):
            continue
        if len(a) != len(b):
            return float("inf")
        keys = [c for c in a.columns if c != "value" and c in b.columns and c != "token"]
        a = a.sort_values(keys).reset_index(drop=True)
        b = b.sort_values(keys).reset_index(drop=True)
        if not a[keys].astype(str).equals(b[keys].astype(str)):
            return float("inf")
        diff = np.nanmax(np.abs(a["value"].to_numpy(float) - b["value"].to_numpy(float)), initial=0.0)
        worst = max(worst, float(diff))
    return worst


def verify(store, progress: Callable | None = None, tolerance: float = 1e-4) -> Iterator[Verdict]:
    """Recompute every unverified run of ``store`` (one model load per model and dtype)."""
    from effdepth import engine, models

    loaded_models: dict[tuple[str, str], object] = {}
    for meta in unverified_runs(store):
        run_id, name, dtype = str(meta["run_id"]), str(meta.get("model_name")), str(meta.get("dtype"))
        try:
            spec = models.resolve_model(name)
        except EffdepthError as err:
            yield Verdict(run_id, name, "skipped", f"the model cannot be found any more ({err})")
            continue
        if spec.fingerprint != meta.get("model_fingerprint"):
            yield Verdict(run_id, name, "skipped", "the model's weights changed since the run; it is left as it "
                                                   "is (delete it on the Runs page if it is no longer wanted)")
            continue
        if (name, dtype) not in loaded_models:
            loaded_models.clear()  # one model in memory at a time
            loaded_models[(name, dtype)] = models.load_model(spec, dtype, progress=progress)
        loaded = loaded_models[(name, dtype)]
        stored_config = meta.get("probe_config") or {}
        config = engine.ProbeConfig(**{k: stored_config[k] for k in _CONFIG_KEYS if stored_config.get(k) is not None})
        extra = {k: meta[k] for k in _ITEM_KEYS if meta.get(k) is not None}
        fresh = engine.run_probes(loaded, meta["prompt_text"], config, bool(meta.get("chat_template")),
                                  progress=progress, extra_meta=extra)
        stored = store.get(run_id)
        diff = max_difference(stored, fresh)
        store.put(fresh)
        if fresh.run_id != run_id:
            store.delete(run_id)
        moved = "" if fresh.run_id == run_id else f" (now run {fresh.run_id})"
        if diff <= tolerance:
            yield Verdict(run_id, name, "verified", f"recomputed: the stored numbers were right{moved}", diff)
        else:
            yield Verdict(run_id, name, "replaced", f"recomputed: the stored numbers were WRONG (max |Δ| = "
                                                    f"{diff:.3g}) and were replaced{moved}", diff)
