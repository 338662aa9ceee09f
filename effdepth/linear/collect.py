"""Residual streams of a model over the shipped corpus (``datasets.corpus``), as token rows for the fits.

Each document is cut into windows of at most ``WINDOW`` tokens (P2's context 512) and run through one
clean forward pass (``capture``: h_0 … h_L, h_L before the final norm). The first position of every window
is left out (P2 drops the BOS; a window's first token carries the attention-sink norms either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from effdepth.capture import capture
from effdepth.contract import Progress
from effdepth.datasets import corpus
from effdepth.errors import PromptError

WINDOW = 512


@dataclass
class Rows:
    """Residual rows of one corpus part: resid [L+1, N, d] fp32 (h_0 … h_L), and the token windows read."""

    resid: torch.Tensor
    windows: list[list[int]]

    def __post_init__(self) -> None:
        n_rows = sum(len(w) - 1 for w in self.windows)
        if self.resid.dim() != 3 or self.resid.shape[1] != n_rows:
            raise ValueError(f"resid has shape {tuple(self.resid.shape)}, expected [L+1, {n_rows}, d]")

    @property
    def n_rows(self) -> int:
        return self.resid.shape[1]


def token_windows(tokenizer, held_out: bool, max_tokens: int | None = None, window: int = WINDOW,
                  max_context: int | None = None) -> list[list[int]]:
    """The corpus part's token ids in windows of ≤ ``window`` tokens, at most ``max_tokens`` rows in all.

    A document's tokenisation is exact (special tokens as the model adds them, e.g. a BOS first); later
    windows of a long document start mid-text."""
    window = min(window, max_context or window)
    if window < 2:
        raise PromptError(f"the model's context ({max_context} tokens) is too short for fitting")
    windows: list[list[int]] = []
    rows = 0
    for doc in corpus.part(held_out):
        ids = tokenizer(doc.text, add_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), window):
            piece = ids[start:start + window]
            if max_tokens is not None and rows + len(piece) - 1 > max_tokens:
                piece = piece[:max_tokens - rows + 1]
            if len(piece) >= 2:
                windows.append(piece)
                rows += len(piece) - 1
            if max_tokens is not None and rows >= max_tokens:
                return windows
    return windows


@torch.no_grad()
def residual_rows(model, windows: Sequence[Sequence[int]], progress: Progress | None = None,
                  stage: str = "residuals") -> Rows:
    """h_0 … h_L at every position but the first of every window -> Rows (one forward per window).

    The rows are written into one buffer as they come (a concatenation at the end would hold them twice)."""
    resid = None
    row = 0
    for index, ids in enumerate(windows):
        trace = capture(model, torch.tensor(ids, dtype=torch.long), logit_positions=[len(ids) - 1])
        if resid is None:
            n_rows = sum(len(w) - 1 for w in windows)
            resid = torch.empty(trace.resid.shape[0], n_rows, trace.resid.shape[2])  # [L+1, N, d]
        resid[:, row:row + len(ids) - 1] = trace.resid[:, 1:]
        row += len(ids) - 1
        if progress is not None:
            progress(stage, (index + 1) / len(windows))
    if resid is None:
        raise PromptError("the corpus part gave no token windows to fit on")
    return Rows(resid=resid, windows=[list(w) for w in windows])
