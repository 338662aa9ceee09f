"""Per-token depth over a sweep (issue 12 §3; not in the papers): each item's commitment depth c(i) per
token (``depth.token_depth``), split by token class, and its mean per bin and class.

Classes of a position: by part, ``answer`` (the positions that predict the item's gold answer tokens,
T−a−1 … T−2 for an answer of a = ``answer_tokens`` tokens, as erasure and IG measure them: c(i) is about
the token after i) or ``question`` (the others); by kind of the token at i, ``digits`` (it has a digit),
``words`` (a letter and no digit) or ``other`` (spaces, punctuation, special tokens). The interval is a
percentile bootstrap over items (an item's tokens are not independent of each other).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from effdepth import depth

CLASSES = ("answer", "question", "digits", "words", "other")
ROW_COLUMNS = ["run_id", "bin", "pos", "depth", "part", "kind"]
CLASS_COLUMNS = ["bin", "class", "n_items", "n_tokens", "mean", "lo", "hi"]


def token_kind(token: str) -> str:
    """digits / words / other, from the token's text (a special token such as ``<s>`` is other)."""
    stripped = token.strip()
    if len(stripped) > 2 and stripped.startswith("<") and stripped.endswith(">"):
        return "other"
    if any(ch.isdigit() for ch in token):
        return "digits"
    if any(ch.isalpha() for ch in token):
        return "words"
    return "other"


def item_rows(run_id: str, meta: dict, layer_token: pd.DataFrame, tokens: pd.DataFrame) -> pd.DataFrame:
    """One run's measured positions with their commitment depth and classes (empty without the lens)."""
    committed = depth.token_depth(layer_token, int(meta["n_layers"]))
    if not len(committed):
        return pd.DataFrame(columns=ROW_COLUMNS)
    n_tokens = int(meta["n_tokens"])
    answer_tokens = meta.get("answer_tokens")
    text = dict(zip(tokens["pos"].astype(int), tokens["token"].astype(str)))
    pos = committed["pos"].astype(int)
    first = n_tokens - int(answer_tokens or 0) - 1  # the first answer-predicting position
    part = (["answer" if first <= p <= n_tokens - 2 else "question" for p in pos]
            if answer_tokens else [None] * len(pos))
    return pd.DataFrame({"run_id": run_id, "bin": str(meta.get("bin") or meta.get("dataset") or ""),
                         "pos": pos.to_numpy(), "depth": committed["value"].to_numpy(), "part": part,
                         "kind": [token_kind(text.get(p, "")) for p in pos]}, columns=ROW_COLUMNS)


def sweep_rows(store, run_ids: Iterable[str]) -> pd.DataFrame:
    """``item_rows`` of every run that has the logit lens (read from the store)."""
    frames = []
    for run_id in run_ids:
        meta = store.meta(run_id) or {}
        if "logit_lens" not in (meta.get("probes") or []):
            continue
        frames.append(item_rows(run_id, meta, store.table(run_id, "layer_token"), store.table(run_id, "tokens")))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)


def by_class(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean commitment depth per (bin, class) over the tokens, with a bootstrap interval over items."""
    out = []
    rng = np.random.default_rng(seed)
    for (name, cls), group in _classed(rows):
        per_item = group.groupby("run_id")["depth"].agg(["sum", "count"])
        sums, counts = per_item["sum"].to_numpy(float), per_item["count"].to_numpy(float)
        mean = sums.sum() / counts.sum()
        if len(per_item) > 1:
            draws = rng.integers(0, len(per_item), size=(n_boot, len(per_item)))
            boot = sums[draws].sum(1) / counts[draws].sum(1)
            lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
        else:
            lo = hi = float("nan")
        out.append({"bin": name, "class": cls, "n_items": len(per_item), "n_tokens": int(counts.sum()),
                    "mean": float(mean), "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(out, columns=CLASS_COLUMNS)


def _classed(rows: pd.DataFrame):
    """(bin, class) groups of the rows: every token once by part (where known) and once by kind."""
    for name in dict.fromkeys(rows["bin"]):
        in_bin = rows[rows["bin"] == name]
        for cls in CLASSES:
            column = "part" if cls in ("answer", "question") else "kind"
            group = in_bin[in_bin[column] == cls]
            if len(group):
                yield (name, cls), group
