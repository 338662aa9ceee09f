"""Effective Depth (ED) rules over per-layer curves (docs/SPEC.md §8), plus guarded variants.

EDR = (ED + 1) / L everywhere. ``None`` means "no transition"; it is a result, never an exception.
P1's code raises on a missing cosine crossing and returns ED = -1 (EDR 0) for KL/overlap; effdepth
reports all three as "no transition" (ED and EDR null) — a documented deviation.

Rules (``rule`` column):

- cosine, p1:       the last l in [0, L-2] with mu(l) < 0 and mu(l+1) >= 0, mu = mean(cos_att, cos_mlp, cos_layer).
- cosine, guarded:  the last such crossing after which mu stays >= 0 for ``hold`` = 3 layers (or to the end),
                    so a one-layer blip is not a transition.
- kl, p1:           the first l in [0, L-2] with KL(l) < 0.5 * max_l KL(l).
- kl, guarded:      max over l >= 1 only (P1's artefact: a KL spike at l = 0), and KL stays below the threshold
                    from l through L-1.
- overlap, p1:      the first l in [0, L-2] with Ov(l) > 0.3.
- overlap, guarded: the first l from which Ov stays > 0.3 through L-1.
- skip, proposed:   effdepth's rule (no paper defines one). With e(s) = sum_j M[s, j] / max(L-1-s, 1), the mean
                    future effect of skipping s on the later layers (P2's depth-score "layer effect", from the
                    future-effect matrix reduced over splits), ED = the last s with e(s) >= 0.5 * max_{s>=1} e:
                    the deepest layer whose removal still changes later computation substantially (the max
                    skips s = 0, whose removal often wrecks everything, as the guarded KL rule does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from effdepth.contract import reduced_rows

KL_TAU = 0.5
OVERLAP_TAU = 0.3
SKIP_TAU = 0.5
COSINE_HOLD = 3


@dataclass(frozen=True)
class EDResult:
    probe: str
    rule: str
    ed: int | None
    n_layers: int
    threshold: float | None
    description: str

    @property
    def edr(self) -> float | None:
        return None if self.ed is None else (self.ed + 1) / self.n_layers

    def as_row(self) -> dict:
        return {"probe": self.probe, "rule": self.rule, "ed": self.ed, "edr": self.edr,
                "n_layers": self.n_layers, "threshold": self.threshold, "description": self.description}


def cosine_mean(cos_att: np.ndarray, cos_mlp: np.ndarray, cos_layer: np.ndarray) -> np.ndarray:
    """μ(l), the mean of the three cosines: the curve of P1's cosine ED rule (the one place it is computed)."""
    return (np.asarray(cos_att) + np.asarray(cos_mlp) + np.asarray(cos_layer)) / 3.0


COSINES = ("cos_att", "cos_mlp", "cos_layer")


def with_cosine_mean(layer: pd.DataFrame) -> pd.DataFrame:
    """``layer`` (DataFrame[metric, layer, value]) with the rows of ``cos_mu`` = μ(l) added, when the three
    cosines are there and μ is not (runs store it; runs cached before it was stored get it here)."""
    present = set(layer["metric"]) if len(layer) else set()
    if "cos_mu" in present or not set(COSINES) <= present:
        return layer
    wide = layer[layer["metric"].isin(COSINES)].pivot(index="layer", columns="metric", values="value").sort_index()
    mu = pd.DataFrame({"metric": "cos_mu", "layer": wide.index.astype(int),
                       "value": cosine_mean(wide["cos_att"], wide["cos_mlp"], wide["cos_layer"])})
    return pd.concat([layer, mu], ignore_index=True)


def ed_cosine(mu: np.ndarray, guarded: bool = False, hold: int = COSINE_HOLD) -> EDResult:
    mu = np.asarray(mu, dtype=float)
    n = len(mu)
    crossings = [l for l in range(n - 1) if mu[l] < 0 <= mu[l + 1]]
    if guarded:
        crossings = [l for l in crossings if np.all(mu[l + 1:min(n, l + 1 + hold)] >= 0)]
        desc = f"last negative→non-negative crossing of μ that stays ≥ 0 for {hold} layers"
    else:
        desc = "last l with μ(l) < 0 ≤ μ(l+1), μ = mean of the three cosines (P1)"
    return EDResult("cosine", "guarded" if guarded else "p1", crossings[-1] if crossings else None,
                    n, 0.0, desc)


def ed_kl(kl: np.ndarray, guarded: bool = False, tau: float = KL_TAU) -> EDResult:
    kl = np.asarray(kl, dtype=float)
    n = len(kl)
    if guarded:
        threshold = tau * kl[1:].max() if n > 1 else tau * kl.max()
        below = kl < threshold
        found = next((l for l in range(1, n) if below[l:].all()), None)
        desc = f"first l ≥ 1 from which KL stays < {tau}·max(KL over l ≥ 1)"
    else:
        threshold = tau * kl.max()
        found = next((l for l in range(n - 1) if kl[l] < threshold), None)
        desc = f"first l with KL(l) < {tau}·max KL (P1)"
    return EDResult("kl", "guarded" if guarded else "p1", found, n, float(threshold), desc)


def ed_overlap(overlap: np.ndarray, guarded: bool = False, tau: float = OVERLAP_TAU) -> EDResult:
    overlap = np.asarray(overlap, dtype=float)
    n = len(overlap)
    above = overlap > tau
    if guarded:
        found = next((l for l in range(n) if above[l:].all()), None)
        desc = f"first l from which top-5 overlap stays > {tau}"
    else:
        found = next((l for l in range(n - 1) if above[l]), None)
        desc = f"first l with top-5 overlap > {tau} (P1)"
    return EDResult("overlap", "guarded" if guarded else "p1", found, n, tau, desc)


def layer_effect(matrix: np.ndarray) -> np.ndarray:
    """e(s) = Σ_j M[s, j] / max(L-1-s, 1) (P2 §7.1), M = future-effect matrix [L, L]."""
    matrix = np.asarray(matrix, dtype=float)
    n = matrix.shape[0]
    return np.array([matrix[s, s + 1:].sum() / max(n - 1 - s, 1) for s in range(n)])


def ed_skip(matrix: np.ndarray, tau: float = SKIP_TAU) -> EDResult:
    effect = layer_effect(matrix)
    n = len(effect)
    # Like the guarded KL rule, the maximum is taken over s >= 1: skipping layer 0 often wrecks
    # everything (e(0) >> the rest), which would otherwise pin the ED at 0.
    peak = effect[1:].max() if n > 1 else (effect.max() if n else 0.0)
    threshold = tau * peak
    strong = [s for s in range(n) if effect[s] >= threshold and peak > 0]
    desc = (f"last skipped layer s whose mean effect on later layers e(s) ≥ {tau}·max_(s≥1) e "
            "(effdepth's rule; the papers define none)")
    return EDResult("skip", "proposed", strong[-1] if strong else None, n, float(threshold), desc)


def depth_score(effect: np.ndarray) -> float | None:
    """Centre of mass Σ s·e(s) / Σ e(s) (P2 §7.1); None when every effect is 0."""
    effect = np.asarray(effect, dtype=float)
    total = effect.sum()
    return None if total <= 0 else float((np.arange(len(effect)) * effect).sum() / total)


def _curve(layer: pd.DataFrame, metric: str) -> np.ndarray | None:
    rows = layer[layer["metric"] == metric].sort_values("layer")
    return rows["value"].to_numpy() if len(rows) else None


def future_matrix(skip: pd.DataFrame, variant: str = "future") -> np.ndarray | None:
    """The reduced (split = -1) matrix M[s, j] of one variant as an [L, L] array."""
    rows = reduced_rows(skip, variant)
    if not len(rows):
        return None
    return rows.pivot(index="skipped", columns="affected", values="value").sort_index().to_numpy()


#: the per-layer curves the rules read (``shortcut_*``: the same lens rules under the linear shortcut lens)
CURVE_INPUTS = ("cos_att", "cos_mlp", "cos_layer", "kl", "overlap", "shortcut_kl", "shortcut_overlap")


def ed_results(curves: dict[str, np.ndarray]) -> list[EDResult]:
    """The cosine / KL / overlap rules (P1 and guarded) on plain arrays {metric: [L]} — the fast path
    used by ``ed_table`` and by the bootstrap (which evaluates it once per resample)."""
    results: list[EDResult] = []
    if all(m in curves for m in ("cos_att", "cos_mlp", "cos_layer")):
        mu = cosine_mean(curves["cos_att"], curves["cos_mlp"], curves["cos_layer"])
        results += [ed_cosine(mu), ed_cosine(mu, guarded=True)]
    if "kl" in curves:
        results += [ed_kl(curves["kl"]), ed_kl(curves["kl"], guarded=True)]
    if "overlap" in curves:
        results += [ed_overlap(curves["overlap"]), ed_overlap(curves["overlap"], guarded=True)]
    for lens_metric, rule in (("shortcut_kl", ed_kl), ("shortcut_overlap", ed_overlap)):
        if lens_metric in curves:
            results += [replace(rule(curves[lens_metric], guarded=guarded), probe=lens_metric)
                        for guarded in (False, True)]
    return results


def ed_table(layer: pd.DataFrame, skip: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every ED rule that the available curves allow -> DataFrame[probe, rule, ed, edr, ...]."""
    curves = {m: _curve(layer, m) for m in CURVE_INPUTS}
    results = ed_results({m: c for m, c in curves.items() if c is not None})
    if skip is not None and len(skip):
        matrix = future_matrix(skip)
        if matrix is not None:
            results.append(ed_skip(matrix))
    columns = ["probe", "rule", "ed", "edr", "n_layers", "threshold", "description"]
    frame = pd.DataFrame([r.as_row() for r in results], columns=columns)
    frame["ed"] = frame["ed"].astype("Int64")
    frame["edr"] = frame["edr"].astype("float64")  # None -> NaN even when every rule found nothing
    return frame


def token_depth(layer_token: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """The commitment depth c(i) of every measured position (issue 12 §3; not in the papers).

    c(i) is the smallest l in 0..L such that the logit-lens top-1 of the residual entering layer l' is
    the model's own top-1 at i for every l' = l..L-1; l = L means only the output itself has it (the
    lens of the final residual is the output). Read from the lens's ``rank`` metric (rank 1: the layer's
    top-1 is the final top-1) -> DataFrame[pos, value] with integer values, empty without the lens.
    """
    rank = layer_token[layer_token["metric"] == "rank"]
    if not len(rank):
        return pd.DataFrame({"pos": pd.Series(dtype="int64"), "value": pd.Series(dtype="int64")})
    table = rank.pivot(index="pos", columns="layer", values="value").sort_index().sort_index(axis=1)
    if list(table.columns) != list(range(n_layers)):
        raise ValueError(f"the lens has layers {list(table.columns)[:5]}…, expected 0..{n_layers - 1}")
    agrees = table.to_numpy() == 1  # [P, L]
    trailing = np.cumprod(agrees[:, ::-1], axis=1).sum(axis=1)  # layers from the top that agree, in a row
    return pd.DataFrame({"pos": table.index.astype("int64"), "value": (n_layers - trailing).astype("int64")})
