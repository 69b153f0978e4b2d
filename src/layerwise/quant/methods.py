"""Round-to-nearest and GPTQ."""
from __future__ import annotations

import torch
from pydantic import Field

from ..linalg import inverse_cholesky_
from ..registry import MethodConfig
from ..sweep import quantize_columns
from .base import QuantResult, QuantSpec, Quantizer, find_params, quantize_col, register


@register
class RTN(Quantizer):
    """Round each weight to the nearest level of its row-and-group grid; no data needed."""

    name = "rtn"
    description = "round-to-nearest per channel / per group"

    def quantize(self, weight, stats, spec: QuantSpec) -> QuantResult:
        W = weight.float()
        r, c = W.shape
        g = spec.group(c)
        ng = spec.groups(c)
        scales = torch.empty(r, ng)
        zeros = torch.empty(r, ng)
        q = torch.empty(r, c)
        for k in range(ng):
            cols = slice(k * g, min(c, (k + 1) * g))
            s, z = find_params(W[:, cols], spec)
            scales[:, k], zeros[:, k] = s, z
            q[:, cols] = quantize_col(W[:, cols], s.view(-1, 1), z.view(-1, 1), spec.maxq)
        g_idx = torch.arange(c, dtype=torch.int32) // g
        return QuantResult(q.to(torch.uint8), scales, zeros, g_idx, spec, {})


@register
class GPTQ(Quantizer):
    """Column-by-column rounding with inverse-Hessian error feedback (Frantar et al., 2023).

    Shares SparseGPT's machinery: the same damped Cholesky factor of H⁻¹, blocks of columns with
    lazy updates. A group's scale and zero are fixed when the sweep reaches its first column, from
    the weights as updated so far. With `act_order`, columns are visited by decreasing diag(H) and
    `g_idx` maps each original column to its group.
    """

    name = "gptq"
    description = "second-order rounding with error feedback from the layer Hessian"
    needs = frozenset({"calibration", "gram"})

    class Config(MethodConfig):
        blocksize: int = Field(128, ge=1, description="columns per lazy-update block")
        percdamp: float = Field(0.01, gt=0, lt=1, description="damping, a fraction of mean diag(H)")
        act_order: bool = Field(False, description="visit columns by decreasing diag(H)")
        preserve_zeros: bool = Field(True, description="weights that are exactly zero (a pruning mask) stay "
                                                       "zero: error feedback never revives them")

    def quantize(self, weight, stats, spec: QuantSpec) -> QuantResult:
        r, c = weight.shape
        if self.config.act_order:
            perm = torch.argsort(torch.diag(stats.H), descending=True, stable=True)
            U, damp = inverse_cholesky_(stats.hessian[perm][:, perm], self.config.percdamp)
        else:
            perm = torch.arange(c)
            U, damp = stats.inverse_factor(self.config.percdamp)
        # The sweep runs on Wᵀ (column t of W is the contiguous row t), as in SparseGPT.
        Wt = weight.detach().float()[:, perm].t().contiguous()
        M = (Wt == 0) if self.config.preserve_zeros and bool((Wt == 0).any()) else None
        g = spec.group(c)
        ng = spec.groups(c)
        scales = torch.empty(ng, r)
        zeros = torch.empty(ng, r)
        Qt = torch.empty(c, r)
        B = self.config.blocksize
        s = z = None
        for i1 in range(0, c, B):
            i2 = min(i1 + B, c)
            W1 = Wt[i1:i2]
            Err = torch.empty_like(W1)
            U1 = U[i1:i2, i1:i2].contiguous()
            # the block's columns in runs that share one group grid: a run starts at the block's
            # start or at a group's first column, where the grid is fixed
            cuts = sorted({i1, *range(-(-i1 // g) * g, i2, g), i2})
            for a, b in zip(cuts[:-1], cuts[1:]):
                if a % g == 0:
                    k = a // g
                    # The group's grid comes from its columns as updated so far (this block's part
                    # is already in Wt, later blocks' part has had the lazy updates up to here).
                    end = min(c, a + g)
                    grp = Wt[a:end] if M is None else Wt[a:end].masked_fill(M[a:end], 0.0)
                    s, z = find_params(grp.t(), spec)
                    scales[k], zeros[k] = s, z
                quantize_columns(W1, U1, Err, Qt[i1:i2], s, z, spec.maxq,
                                 None if M is None else M[i1:i2], a - i1, b - i1)
            if i2 < c:
                Wt[i2:].sub_(U[i1:i2, i2:].t() @ Err)
        Q, scales, zeros = Qt.t(), scales.t().contiguous(), zeros.t().contiguous()
        inv = torch.argsort(perm)
        g_idx = (torch.arange(c, dtype=torch.int32) // g)[inv]
        return QuantResult(Q[:, inv].to(torch.uint8), scales, zeros, g_idx, spec,
                           {"damping": damp, "act_order": self.config.act_order})
