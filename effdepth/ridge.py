"""Closed-form ridge regression over token rows, summed in float64 chunk by chunk (docs/SPEC.md §15).

The linear maps between two models and the linear shortcut lens both fit y ≈ x W + b over many token
rows. The normal equations need only Σx, Σy, XᵀX and XᵀY, so rows arrive in chunks and memory stays at
the size of those sums. The bias is fitted by centring; the ridge penalty is ``alpha`` times each input
feature's own variance (scale-free: residual streams hold a few features thousands of times larger than
the rest, and one shared λ would shrink only the small ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: the default penalty, relative to each feature's variance
DEFAULT_ALPHA = 1e-3


@dataclass
class Affine:
    """y = x @ weight + bias, float32: weight [d_in, d_out], bias [d_out]."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self) -> None:
        if self.weight.dim() != 2 or self.bias.shape != (self.weight.shape[1],):
            raise ValueError(f"an affine map needs weight [d_in, d_out] and bias [d_out], not "
                             f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d_in] -> [n, d_out] (in the map's dtype)."""
        return torch.addmm(self.bias, x.to(self.weight.dtype), self.weight)


class RidgeSums:
    """Σx, Σy, XᵀX and XᵀY of the rows added so far, float64; ``solve`` gives the ridge map."""

    def __init__(self, d_in: int, d_out: int) -> None:
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.xtx = torch.zeros(d_in, d_in, dtype=torch.float64)
        self.xty = torch.zeros(d_in, d_out, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows x [n, d_in] with targets y [n, d_out]."""
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"rows x [n, d_in] and y [n, d_out] must pair up, not {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        x64, y64 = x.double(), y.double()
        self.n += x.shape[0]
        self.sum_x += x64.sum(0)
        self.sum_y += y64.sum(0)
        self.xtx.addmm_(x64.T, x64)
        self.xty.addmm_(x64.T, y64)

    def solve(self, alpha: float = DEFAULT_ALPHA) -> Affine:
        """The ridge map: minimises Σ‖x W + b − y‖² + Σ_k alpha·var_k·n·‖W_k‖² (bias unpenalised)."""
        if self.n < 2:
            raise ValueError("a ridge fit needs at least 2 rows")
        mean_x, mean_y = self.sum_x / self.n, self.sum_y / self.n
        cov_xx = self.xtx - self.n * torch.outer(mean_x, mean_x)  # n · Cov(x)
        cov_xy = self.xty - self.n * torch.outer(mean_x, mean_y)
        variance = cov_xx.diagonal().clamp_min(0)
        # plus a tiny share of each raw second moment: above the centring's round-off, so a constant feature
        # (or one the text never varies) gets a small penalty rather than none
        floor = 1e-12 * self.xtx.diagonal().clamp_min(0) + 1e-30
        factor, info = torch.linalg.cholesky_ex(cov_xx + torch.diag(alpha * variance + floor))
        jitter = float(floor.mean())
        while int(info) != 0 and jitter < float(self.xtx.diagonal().mean()):  # near-singular: more penalty
            jitter *= 100
            factor, info = torch.linalg.cholesky_ex(cov_xx + torch.diag(alpha * variance + floor + jitter))
        if int(info) != 0:
            raise ValueError("the ridge system is not positive definite (are the rows finite?)")
        weight = torch.cholesky_solve(cov_xy, factor)  # [d_in, d_out]
        bias = mean_y - mean_x @ weight
        return Affine(weight=weight.float(), bias=bias.float())


def relative_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """P2's relative error per row: ‖ŷ − y‖ / ‖y‖ for [n, d] rows -> [n] (the caller takes the mean)."""
    return (predicted.float() - target.float()).norm(dim=-1) / target.float().norm(dim=-1).clamp_min(1e-30)
