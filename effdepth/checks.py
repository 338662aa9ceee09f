"""Does a run pass its own checks? (torch-free: the store calls it before writing a run)

The engine measures two invariants on the clean trace of every run (``capture.trust_checks``): the
residual closure h_{l+1} = h_l + a_l + m_l and the logit lens of the last residual against the
model's own logits. Both are float rounding for a clean capture; a capture that picked up another
run's activations, a tap point at the wrong module, or a broken layer surgery breaks them. Here they
are held against a tolerance for the dtype, and the tables are held against the run's (L, T).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from effdepth.contract import SKIPPED_NOISE

#: dtype -> (max residual closure, max |lens(h_L) - logits| / max |logits|). Measured on this CPU
#: (2026-12-01): float32 0 and 0 on smollm2-135m, gemma3-270m and qwen2.5-coder-0.5b; bfloat16 closure
#: 1.2e-2, 6.9e-3 and 4.4e-3 and lens 0 on the same three. The bounds leave headroom for other devices.
TOLERANCE = {"float32": (1e-4, 1e-4), "bfloat16": (5e-2, 2e-2)}
#: dtype -> the largest noise floor (the max relative change made by a skip-path edit that changes nothing)
#: that is float rounding. Measured on this CPU (2026-12-01): float32 6.5e-06 on smollm2-135m (the browser
#: test's 20-token prompt); the bounds leave headroom for other devices and batch shapes.
NOISE_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}
#: Tables with a layer axis: (table, column, smallest index, largest index as an offset from L);
#: skipped = SKIPPED_NOISE (-1) is the noise-floor row of the skip tables.
_LAYER_COLUMNS = (("layer_token", "layer", 0, -1), ("layer", "layer", 0, 0), ("skip", "skipped", SKIPPED_NOISE, -1),
                  ("skip", "affected", 0, -1), ("skip_output", "skipped", SKIPPED_NOISE, -1),
                  ("lens_topk", "layer", 0, -1),
                  ("erasure", "depth", 0, 0), ("igrad", "layer", 0, -1))
_POSITION_COLUMNS = (("layer_token", "pos"), ("lens_topk", "pos"), ("erasure", "pos"), ("igrad", "pos"))


def verified(meta: Mapping) -> bool:
    """Whether the run carries its own checks (runs stored before they existed do not)."""
    return isinstance(meta.get("checks"), Mapping)


def problems(meta: Mapping, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """What is wrong with a run, in sentences ([] when it passes; a run without checks passes the
    table checks only and stays unverified)."""
    found: list[str] = []
    checks = meta.get("checks")
    if isinstance(checks, Mapping):
        found += invariant_problems(checks, str(meta.get("dtype") or checks.get("dtype") or "float32"))
        shape = checks.get("shape")
        if shape is not None and (int(shape[0]) != int(meta.get("n_layers", -1))
                                  or int(shape[1]) != int(meta.get("n_tokens", -1))):
            found.append(f"the captured activations have shape (L, T, d) = {tuple(shape)}, but the run says "
                         f"L = {meta.get('n_layers')}, T = {meta.get('n_tokens')}")
    found += _table_problems(meta, tables)
    return found


def invariant_problems(checks: Mapping, dtype: str) -> list[str]:
    """The run invariants (capture.trust_checks) that are above their tolerance for ``dtype``."""
    closure_tol, lens_tol = TOLERANCE.get(dtype, TOLERANCE["bfloat16"])
    found = []
    closure = _number(checks.get("residual_closure"))
    if closure is None or not closure <= closure_tol:
        found.append(f"the residual closure max ‖h_(l+1) − (h_l + a_l + m_l)‖ / ‖h_(l+1)‖ is {closure}, above "
                     f"{closure_tol:g} for {dtype}")
    gap, scale = _number(checks.get("lens_last_max_abs")), _number(checks.get("logit_scale"))
    if gap is None or scale is None or not gap <= lens_tol * max(scale, 1.0):
        found.append(f"the logit lens of the last residual differs from the model's logits by {gap} "
                     f"(logits up to {scale}), above {lens_tol:g} relative for {dtype}")
    return found


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _table_problems(meta: Mapping, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    n_layers, n_tokens = meta.get("n_layers"), meta.get("n_tokens")
    if n_layers is None or n_tokens is None:
        return []
    n_layers, n_tokens = int(n_layers), int(n_tokens)
    tokens = tables.get("tokens")
    found = [] if tokens is None or len(tokens) == n_tokens else [
        f"the tokens table has {len(tokens)} rows for T = {n_tokens}"]
    for name, column, lowest, offset in _LAYER_COLUMNS:
        found += _out_of_range(tables.get(name), name, column, lowest, n_layers + offset, f"L = {n_layers}",
                               "layer indices")
    for name, column in _POSITION_COLUMNS:
        found += _out_of_range(tables.get(name), name, column, 0, n_tokens - 1, f"T = {n_tokens}", "positions")
    return found


def _out_of_range(frame: pd.DataFrame | None, name: str, column: str, lowest: int, highest: int, size: str,
                  what: str) -> list[str]:
    """[] when ``frame[column]`` holds numbers in lowest..highest (or the table is empty), else why not."""
    if frame is None or not len(frame) or column not in frame:
        return []
    values = pd.to_numeric(frame[column], errors="coerce")
    if values.isna().any():
        return [f"{name}.{column} holds values that are not {what}"]
    if values.min() < lowest or values.max() > highest:
        return [f"{name}.{column} runs {int(values.min())}..{int(values.max())}, outside {lowest}..{highest} "
                f"for {size}"]
    return []


@dataclass(frozen=True)
class Trust:
    """A run's trust badge, from what it measured on its own model and text: ``green`` when the residual
    closure, the lens of the last residual against the logits and the noise floor are all at float-rounding
    level for the dtype; ``amber`` (``problems`` says which, with the numbers) otherwise; ``unverified`` for a
    run stored before runs checked themselves."""

    level: str  # "green" | "amber" | "unverified"
    dtype: str
    closure: float | None  # max ‖h_(l+1) − (h_l + a_l + m_l)‖ / ‖h_(l+1)‖
    lens: float | None  # max |lens(h_L) − logits| / max(max |logits|, 1)
    noise: float | None  # the noise floor (None: the run has no skip results)
    problems: tuple[str, ...] = ()

    def numbers(self) -> str:
        """One line of the measured values: "closure 0 · lens 0 · noise floor 6.5e-06 (float32)"."""
        parts = [f"closure {_fmt(self.closure)}", f"lens {_fmt(self.lens)}"]
        if self.noise is not None:
            parts.append(f"noise floor {_fmt(self.noise)}")
        return " · ".join(parts) + f" ({self.dtype})"


def noise_floor(skip: pd.DataFrame | None) -> float | None:
    """The largest relative change of the skip probe's no-op edits (rows of the ``noise_*`` variants)."""
    if skip is None or not len(skip) or "variant" not in skip:
        return None
    rows = skip[skip["variant"].astype(str).str.startswith("noise_")]
    return float(rows["value"].max()) if len(rows) else None


def trust(meta: Mapping, skip: pd.DataFrame | None = None) -> Trust:
    """The trust badge of a run (its meta and, for the noise floor, its skip table)."""
    checks = meta.get("checks")
    dtype = str(meta.get("dtype") or (checks or {}).get("dtype") or "float32")
    noise = noise_floor(skip)
    if not isinstance(checks, Mapping):
        return Trust("unverified", dtype, None, None, noise, ("the run was stored before runs checked themselves",))
    closure = _number(checks.get("residual_closure"))
    gap, scale = _number(checks.get("lens_last_max_abs")), _number(checks.get("logit_scale"))
    lens = None if gap is None or scale is None else gap / max(scale, 1.0)
    found = invariant_problems(checks, dtype)
    bound = NOISE_TOLERANCE.get(dtype, NOISE_TOLERANCE["bfloat16"])
    if noise is not None and not noise <= bound:
        found.append(f"the noise floor (an edit that changes nothing) is {noise:.2g}, above {bound:g} for {dtype}")
    return Trust("amber" if found else "green", dtype, closure, lens, noise, tuple(found))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else ("0" if value == 0 else f"{value:.1e}")
