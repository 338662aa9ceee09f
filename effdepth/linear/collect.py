"""Residual streams of a model over the shipped corpus (``datasets.corpus``), as token rows for the fits.

Each document is cut into windows of at most ``WINDOW`` tokens (P2's context 512) and run through one
clean forward pass (``capture``: h_0 … h_L, h_L before the final norm). The first position of every window
is left out (P2 drops the BOS; a window's first token carries the attention-sink norms either way).

The rows of a large model over the whole corpus run to gigabytes (a 1.5B: ~2.6 GB in float32), more than
the fits need at once, so past ``SPILL_FROM_BYTES`` they go to an unlinked temporary file and are read
back a block at a time (explicit reads, not a memory map, so they never count as the process's memory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from effdepth.capture import capture
from effdepth.contract import Progress
from effdepth.datasets import corpus
from effdepth.errors import PromptError

WINDOW = 512
#: rows bigger than this are spilled to a temporary file (the fits read them back block by block)
SPILL_FROM_BYTES = 256 * 2**20


class RowFile:
    """A float32 array [L+1, N, d] in an unlinked temporary file, written and read by layer and row range."""

    def __init__(self, shape: tuple[int, int, int], directory: str | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        fd, name = tempfile.mkstemp(prefix="effdepth-rows-", suffix=".f32", dir=directory)
        os.unlink(name)  # the file lives as long as the descriptor: nothing is left behind, even on a crash
        self._fd = fd
        os.ftruncate(fd, int(np.prod(self.shape)) * 4)

    def _offset(self, layer: int, row: int) -> int:
        return ((layer * self.shape[1]) + row) * self.shape[2] * 4

    def write(self, row: int, block: torch.Tensor) -> None:
        """Rows row … row+n of every depth: block [L+1, n, d]."""
        data = block.detach().to(torch.float32).contiguous().numpy()
        for layer in range(self.shape[0]):
            view = memoryview(data[layer]).cast("B")
            offset, done = self._offset(layer, row), 0
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], offset + done)

    def read(self, layer: int, start: int, stop: int) -> torch.Tensor:
        """Rows start … stop−1 of one depth -> [n, d] float32."""
        out = np.empty((stop - start, self.shape[2]), dtype=np.float32)
        view = memoryview(out).cast("B")
        offset, done = self._offset(layer, start), 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError("the temporary row file ended early")
            done += got
        return torch.from_numpy(out)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


@dataclass
class Rows:
    """Residual rows of one corpus part, h_0 … h_L [L+1, N, d] float32, held in ``resid`` or in ``file``;
    and the token windows read. Read them through ``layer`` and ``depths``, which serve both."""

    resid: torch.Tensor | None
    windows: list[list[int]]
    file: RowFile | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n_rows = sum(len(w) - 1 for w in self.windows)
        if (self.resid is None) == (self.file is None):
            raise ValueError("rows are held either in memory (resid) or in a file, exactly one of them")
        shape = self.shape
        if len(shape) != 3 or shape[1] != n_rows:
            raise ValueError(f"resid has shape {tuple(shape)}, expected [L+1, {n_rows}, d]")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.resid.shape) if self.resid is not None else self.file.shape

    @property
    def n_rows(self) -> int:
        return self.shape[1]

    def layer(self, depth: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """h_depth at rows start … stop−1 -> [n, d]."""
        stop = self.n_rows if stop is None else stop
        depth = depth % self.shape[0]
        if self.resid is not None:
            return self.resid[depth, start:stop]
        return self.file.read(depth, start, stop)

    def depths(self, start: int, stop: int) -> torch.Tensor:
        """Every depth of rows start … stop−1 side by side: [n, (L+1)·d]."""
        if self.resid is not None:
            return self.resid[:, start:stop].permute(1, 0, 2).reshape(stop - start, -1)
        return torch.cat([self.file.read(depth, start, stop) for depth in range(self.shape[0])], dim=1)


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


def rows_bytes(n_layers: int, d_model: int, n_rows: int) -> int:
    """Bytes of the float32 rows h_0 … h_L of ``n_rows`` tokens."""
    return (n_layers + 1) * d_model * n_rows * 4


@torch.no_grad()
def residual_rows(model, windows: Sequence[Sequence[int]], progress: Progress | None = None,
                  stage: str = "residuals", spill_from: int | None = None,
                  directory: str | None = None) -> Rows:
    """h_0 … h_L at every position but the first of every window -> Rows (one forward per window).

    The rows are written into one buffer as they come (a concatenation at the end would hold them twice);
    past ``spill_from`` bytes (None: ``SPILL_FROM_BYTES``) that buffer is a temporary file in ``directory``
    (None: the system's, ``TMPDIR``)."""
    spill_from = SPILL_FROM_BYTES if spill_from is None else spill_from
    buffer: torch.Tensor | RowFile | None = None
    n_rows = sum(len(w) - 1 for w in windows)
    row = 0
    for index, ids in enumerate(windows):
        trace = capture(model, torch.tensor(ids, dtype=torch.long), logit_positions=[len(ids) - 1])
        block = trace.resid[:, 1:]  # [L+1, n, d]
        if buffer is None:
            shape = (block.shape[0], n_rows, block.shape[2])
            spill = rows_bytes(shape[0] - 1, shape[2], n_rows) > spill_from
            buffer = RowFile(shape, directory) if spill else torch.empty(shape)
        if isinstance(buffer, RowFile):
            buffer.write(row, block)
        else:
            buffer[:, row:row + block.shape[1]] = block
        row += block.shape[1]
        if progress is not None:
            progress(stage, (index + 1) / len(windows))
    if buffer is None:
        raise PromptError("the corpus part gave no token windows to fit on")
    windows = [list(w) for w in windows]
    if isinstance(buffer, RowFile):
        return Rows(resid=None, windows=windows, file=buffer)
    return Rows(resid=buffer, windows=windows)
