"""Magnitude, Wanda and SparseGPT."""
from __future__ import annotations

import torch
from pydantic import Field

from ..engine.stats import InputStats
from ..linalg import largest_remainder
from ..registry import MethodConfig
from ..sweep import prune_columns
from .base import PruneOutput, Pruner, register
from .masks import lowest_in_matrix, lowest_per_row, nm_mask, row_counts


@register
class Magnitude(Pruner):
    """Smallest |W| over the whole matrix (per-matrix threshold, the literature's baseline)."""

    name = "magnitude"
    description = "remove the smallest |W| of each matrix; no data needed"
    needs = frozenset()

    def prune(self, weight, stats, budget):
        score = weight.abs()
        if budget.nm:
            mask = nm_mask(score, *budget.nm)
        else:
            mask = lowest_in_matrix(score, budget.planned_zeros(tuple(weight.shape)))
        return PruneOutput(weight.masked_fill(mask, 0.0), {})


@register
class Wanda(Pruner):
    """|W_ij| · ‖x_j‖ compared within each output row (Sun et al., 2024)."""

    name = "wanda"
    description = "|W| x input-feature norm, per output row; one forward pass, no weight update"

    def prune(self, weight, stats: InputStats, budget):
        score = weight.abs() * stats.mean_sq.sqrt().float().view(1, -1)
        if budget.nm:
            mask = nm_mask(score, *budget.nm)
        else:
            k = budget.planned_zeros(tuple(weight.shape))
            mask = lowest_per_row(score, row_counts(weight.shape[0], k))
        return PruneOutput(weight.masked_fill(mask, 0.0), {})


@register
class SparseGPT(Pruner):
    """OBS column sweep with inverse-Hessian compensation (Frantar & Alistarh, 2023).

    Columns are processed left to right in blocks of `blocksize`; inside a block the mask is chosen
    jointly over rows × block columns from W²/diag(U)², each pruned column's error is pushed onto
    the remaining columns of the block, and a lazy update carries it to later blocks. The count of
    pruned entries is exact: the total is split over column blocks by largest remainder.
    """

    name = "sparsegpt"
    description = "second-order (OBS) pruning with weight reconstruction from the layer Hessian"
    needs = frozenset({"calibration", "gram"})

    class Config(MethodConfig):
        blocksize: int = Field(128, ge=1, description="columns per OBS block")
        percdamp: float = Field(0.01, gt=0, lt=1, description="damping, a fraction of mean diag(H)")

    def prune(self, weight, stats: InputStats, budget):
        r, c = weight.shape
        U, damp = stats.inverse_factor(self.config.percdamp)
        # The sweep runs on Wᵀ: column t of W is row t here, contiguous, so each step's update of
        # the later columns is a row-major outer product (1.4x faster than strided columns).
        Wt = weight.detach().t().float().contiguous()
        B = self.config.blocksize
        starts = list(range(0, c, B))
        if budget.nm is None:
            k_total = budget.planned_zeros((r, c))
            k_blocks = largest_remainder(k_total, [min(B, c - s) for s in starts])
        else:
            n_keep, m = budget.nm
        for bi, i1 in enumerate(starts):
            i2 = min(i1 + B, c)
            W1 = Wt[i1:i2]
            U1 = U[i1:i2, i1:i2].contiguous()
            d = torch.diag(U1)
            Err = torch.empty_like(W1)
            if budget.nm is None:
                # chosen jointly over rows x block columns, on W's layout (ties broken as in W)
                mask1 = lowest_in_matrix((W1.pow(2) / d.pow(2).view(-1, 1)).t(), k_blocks[bi]).t().contiguous()
                prune_columns(W1, U1, Err, mask1)
            else:
                mask1 = torch.zeros_like(W1, dtype=torch.bool)
                # each group of m columns is masked from its weights as updated by the columns before it
                for t in range(0, i2 - i1, m):
                    seg = W1[t:t + m].pow(2) / d[t:t + m].pow(2).view(-1, 1)
                    mask1[t:t + m] = nm_mask(seg.t(), n_keep, m).t()
                    prune_columns(W1, U1, Err, mask1, t, min(t + m, i2 - i1))
            if i2 < c:
                Wt[i2:].sub_(U[i1:i2, i2:].t() @ Err)
        W = Wt.t().contiguous()
        return PruneOutput(W, {"damping": damp})
