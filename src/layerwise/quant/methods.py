"""Round-to-nearest and GPTQ."""
from __future__ import annotations

import torch
from pydantic import Field

from ..linalg import damped_inverse_cholesky
from ..registry import MethodConfig
from .base import QuantResult, QuantSpec, Quantizer, dequant, find_params, quantize_col, register


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
        W = weight.float().clone()
        r, c = W.shape
        H = stats.hessian.clone()
        perm = torch.argsort(torch.diag(H), descending=True, stable=True) if self.config.act_order else torch.arange(c)
        W = W[:, perm]
        H = H[perm][:, perm]
        M = (W == 0) if self.config.preserve_zeros and bool((W == 0).any()) else None
        U, damp = damped_inverse_cholesky(H, self.config.percdamp)
        g = spec.group(c)
        ng = spec.groups(c)
        scales = torch.empty(r, ng)
        zeros = torch.empty(r, ng)
        Q = torch.empty(r, c)
        B = self.config.blocksize
        s = z = None
        for i1 in range(0, c, B):
            i2 = min(i1 + B, c)
            W1 = W[:, i1:i2].clone()
            Err = torch.zeros_like(W1)
            U1 = U[i1:i2, i1:i2]
            for t in range(i2 - i1):
                col = i1 + t
                if col % g == 0:
                    k = col // g
                    # The group's grid comes from its columns as updated so far (this block's part
                    # from W1, later blocks' part from W).
                    end = min(c, col + g)
                    grp = torch.cat([W1[:, t:], W[:, i2:end]], 1)[:, : end - col]
                    if M is not None:
                        grp = grp.masked_fill(M[:, col:end], 0.0)
                    s, z = find_params(grp, spec)
                    scales[:, k], zeros[:, k] = s, z
                w = W1[:, t] if M is None else W1[:, t].masked_fill(M[:, col], 0.0)
                qc = quantize_col(w, s, z, spec.maxq)
                dq = dequant(qc, s, z)
                err = (w - dq) / U1[t, t]
                W1[:, t:] -= err.view(-1, 1) * U1[t, t:].view(1, -1)
                Q[:, col] = qc
                Err[:, t] = err
            W[:, i1:i2] = W1
            if i2 < c:
                W[:, i2:] -= Err @ U[i1:i2, i2:]
        inv = torch.argsort(perm)
        g_idx = (torch.arange(c, dtype=torch.int32) // g)[inv]
        return QuantResult(Q[:, inv].to(torch.uint8), scales, zeros, g_idx, spec,
                           {"damping": damp, "act_order": self.config.act_order})
