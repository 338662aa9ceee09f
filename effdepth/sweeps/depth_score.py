"""P2's depth score per difficulty bin (docs/SPEC.md §7).

Per bin, the per-item future-effect matrices M[s, j] and output changes O[s] (split = SPLIT_MAX, the
max over splits) are reduced over items by **max** and by **mean**; e_layer(s) = sum_j M[s, j] /
max(L-1-s, 1) (``depth.layer_effect``), e_logit(s) = O[s], DS = sum s e(s) / sum e(s)
(``depth.depth_score``). Items without that matrix (a prompt under 13 tokens gets only the current-effect
skip) are left out of their bin and listed in ``DepthScores.left_out``; a bin left with no item scores
NaN with ``n_items`` 0 instead of vanishing.

Not covered: P2's per-item split positions (t = a0 for MQuAKE, a0 + {0, 4, ...} for MATH) need the
tokenised answer start per item; a sweep applies one ``ProbeConfig`` to all items, so pass explicit
splits per bin by sweeping once per bin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from effdepth import depth
from effdepth.contract import reduced_rows

#: engine.run_probes runs the future-effect skip only with a split point 8 ≤ t < T−4, i.e. T ≥ 13 tokens
FUTURE_MIN_TOKENS = 13


TOO_SHORT = "too_short"  # reasons in DepthScores.left_out


NO_MATRIX = "no_matrix"


#: each reason as the end of "k items are …"
LEFT_OUT_REASONS = {TOO_SHORT: f"too short for the future-effect skip (< {FUTURE_MIN_TOKENS} tokens)",
                    NO_MATRIX: "missing the reduced future-effect skip matrix"}


def _matrix(value, variant: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        matrix = depth.future_matrix(value, variant)
        if matrix is None:
            raise ValueError(f"no reduced '{variant}' skip matrix (split = -1) in the frame")
        return matrix
    return np.asarray(value, dtype=float)


def _output(value, variant: str) -> np.ndarray:
    if isinstance(value, pd.DataFrame):
        rows = reduced_rows(value, variant).sort_values("skipped")
        if not len(rows):
            raise ValueError(f"no reduced '{variant}' output change (split = -1) in the frame")
        return rows["value"].to_numpy(dtype=float)
    return np.asarray(value, dtype=float)


def _has_variant(matrix, output, variant: str) -> bool:
    """Whether an item has the reduced matrix and output change of ``variant`` (arrays always do)."""
    if matrix is None or output is None:
        return False
    if isinstance(matrix, pd.DataFrame) and not len(
            reduced_rows(matrix, variant)):
        return False
    if isinstance(output, pd.DataFrame) and not len(
            reduced_rows(output, variant)):
        return False
    return True


class DepthScores(NamedTuple):
    scores: pd.DataFrame  # bin, reduce, effect, depth_score, n_items, n_left_out
    profiles: pd.DataFrame  # bin, reduce, effect, layer, value
    left_out: pd.DataFrame | None = None  # run_id, bin, reason (TOO_SHORT / NO_MATRIX), n_tokens


LEFT_OUT_COLUMNS = ["run_id", "bin", "reason", "n_tokens"]


def depth_score_by_bin(matrices: Mapping[str, Any], outputs: Mapping[str, Any],
                       bins: Mapping[str, str], variant: str = "future",
                       n_tokens: Mapping[str, int] | None = None) -> DepthScores:
    """P2's depth score per difficulty bin (docs/SPEC.md §7.1).

    ``matrices[run_id]``: the item's skip matrix M_ex [L, L] (array, or the store's ``skip`` table,
    from which the split = -1 rows of ``variant`` are taken); ``outputs[run_id]``: O_ex [L] (array or
    the ``skip_output`` table); ``bins[run_id]``: the item's bin. Bins keep their first-seen order.
    Items without the reduced ``variant`` tables are left out (``left_out``; reason TOO_SHORT when
    ``n_tokens`` says the prompt had under FUTURE_MIN_TOKENS tokens for the future skip, else
    NO_MATRIX) rather than failing the whole score; a bin with no item left scores NaN.
    """
    bin_order: list[str] = []
    members: dict[str, list[str]] = {}
    left_rows: list[dict] = []
    for rid, name in bins.items():
        if name not in members:
            bin_order.append(name)
            members[name] = []
        if _has_variant(matrices.get(rid), outputs.get(rid), variant):
            members[name].append(rid)
            continue
        tokens = None if n_tokens is None or n_tokens.get(rid) is None else int(n_tokens[rid])
        short = variant == "future" and tokens is not None and tokens < FUTURE_MIN_TOKENS
        left_rows.append({"run_id": rid, "bin": name, "reason": TOO_SHORT if short else NO_MATRIX,
                          "n_tokens": tokens})
    left_out = pd.DataFrame(left_rows, columns=LEFT_OUT_COLUMNS)
    n_left = left_out["bin"].value_counts().to_dict() if len(left_out) else {}
    score_rows, profile_rows = [], []
    for name in bin_order:
        rids = members[name]
        if not rids:  # every item of the bin was left out: say so with a NaN score
            score_rows += [{"bin": name, "reduce": reduce, "effect": effect, "depth_score": None, "n_items": 0,
                            "n_left_out": int(n_left.get(name, 0))}
                           for reduce in ("max", "mean") for effect in ("layer", "logit")]
            continue
        m = np.stack([_matrix(matrices[rid], variant) for rid in rids])  # [n, L, L]
        o = np.stack([_output(outputs[rid], variant) for rid in rids])  # [n, L]
        for reduce, fn in (("max", np.max), ("mean", np.mean)):
            effects = {"layer": depth.layer_effect(fn(m, axis=0)), "logit": fn(o, axis=0)}
            for effect, e in effects.items():
                score_rows.append({"bin": name, "reduce": reduce, "effect": effect,
                                   "depth_score": depth.depth_score(e), "n_items": len(rids),
                                   "n_left_out": int(n_left.get(name, 0))})
                profile_rows += [{"bin": name, "reduce": reduce, "effect": effect, "layer": s,
                                  "value": float(v)} for s, v in enumerate(e)]
    scores = pd.DataFrame(score_rows, columns=["bin", "reduce", "effect", "depth_score", "n_items", "n_left_out"])
    profiles = pd.DataFrame(profile_rows, columns=["bin", "reduce", "effect", "layer", "value"])
    return DepthScores(scores, profiles, left_out)


def left_out_messages(left_out: pd.DataFrame | None, n_items: int,
                      names: Mapping[str, str] | None = None, limit: int = 10) -> list[str]:
    """One sentence per reason naming the items left out of the depth score (``names``: run id -> label
    such as "gsm8k[3]"; at most ``limit`` named), e.g. "1 of 3 items is too short for the future-effect
    skip (< 13 tokens) and is left out of the depth score: mine[0]." """
    if left_out is None or not len(left_out):
        return []
    out = []
    for reason in (TOO_SHORT, NO_MATRIX):
        rids = [str(r) for r in left_out.loc[left_out["reason"] == reason, "run_id"]]
        if not rids:
            continue
        k = len(rids)
        labels = [(names or {}).get(r, r) for r in rids]
        listed = ", ".join(labels[:limit]) + (f" and {k - limit} more" if k > limit else "")
        verb = "is" if k == 1 else "are"
        out.append(f"{k} of {n_items} item{'' if n_items == 1 else 's'} {verb} {LEFT_OUT_REASONS[reason]} "
                   f"and {verb} left out of the depth score: {listed}.")
    return out
