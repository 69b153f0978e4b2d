"""Linear probes and CKA over the residual stream (PPCL's redundancy map).

For every block i, hidden states entering (h_i) and leaving (h_{i+1}) are subsampled over calibration
tokens. A ridge map fitted in float64 from h_s to the update h_{e+1} − h_s says how well a linear map
stands in for blocks s..e ("span probe"); CKA between consecutive states gives the similarity curve
whose first-order difference marks functional transitions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def ridge_fit(X: torch.Tensor, Y: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """min ‖XWᵀ + b − Y‖² + λ‖W‖² in float64, λ = eps · tr(XᵀX)/d (Appendix B of the spec)."""
    X = X.double()
    Y = Y.double()
    n, d = X.shape
    Xa = torch.cat([X, torch.ones(n, 1, dtype=X.dtype)], 1)
    G = Xa.T @ Xa
    C = Xa.T @ Y
    lam = eps * float(torch.diagonal(G)[:d].sum()) / d
    reg = torch.full((d + 1,), lam, dtype=X.dtype)
    reg[d] = 0.0
    G = G + torch.diag(reg)
    L, info = torch.linalg.cholesky_ex(G)
    theta = torch.cholesky_solve(C, L) if int(info) == 0 else torch.linalg.lstsq(G, C).solution
    return theta[:d].T.contiguous(), theta[d].contiguous()


def cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    X = X.double() - X.double().mean(0)
    Y = Y.double() - Y.double().mean(0)
    num = (Y.T @ X).pow(2).sum()
    den = (X.T @ X).pow(2).sum().sqrt() * (Y.T @ Y).pow(2).sum().sqrt()
    return float(num / den) if den > 0 else 0.0


@dataclass
class DepthMap:
    num_blocks: int
    bi: list[float]                        # 1 − E[cos(h_i, h_{i+1})] (Block Influence)
    probe: list[float]                     # f_i: CKA(linear probe of block i, h_{i+1}) on held-out tokens
    cka: list[float]                       # c_i = CKA(h_i, h_{i+1})
    dcka: list[float]                      # first-order difference c_{i+1} − c_i
    intervals: list[dict] = field(default_factory=list)   # [s, e], removes e − s, cost g (held-out)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def depth_map(states: list[torch.Tensor], bi: list[float], max_len: int = 3, protect_head: int = 2,
              protect_tail: int = 2, eps: float = 1e-3, holdout: float = 0.25) -> DepthMap:
    """`states[i]`: [tokens, d] subsample of h_i, i = 0..L (same tokens for every i)."""
    L = len(states) - 1
    n = states[0].shape[0]
    cut = int(n * (1 - holdout))
    tr, te = slice(0, cut), slice(cut, n)
    probe, c = [], []
    for i in range(L):
        x, y = states[i], states[i + 1]
        W, b = ridge_fit(x[tr], (y - x)[tr], eps)
        pred = x[te].double() + x[te].double() @ W.T + b
        probe.append(cka(pred, y[te]))
        c.append(cka(x, y))
    dc = [c[i + 1] - c[i] for i in range(L - 1)]
    tau_d = float(np.median(np.abs(dc))) if dc else 0.0
    intervals = []
    for s in range(protect_head, L - protect_tail):
        for e in range(s + 1, min(L - protect_tail, s + max_len + 1)):
            x, y = states[s], states[e + 1]
            W, b = ridge_fit(x[tr], (y - x)[tr], eps)
            pred = x[te].double() + x[te].double() @ W.T + b
            g = 1.0 - cka(pred, y[te])
            # A spike of the similarity slope inside the span marks a functional transition.
            trend = max((abs(dc[i]) for i in range(s, e) if i < len(dc)), default=0.0)
            intervals.append({"start": s, "end": e, "removes": e - s, "cost": g,
                              "cost_per_block": g / (e - s), "max_slope": trend, "flat": trend <= 2 * tau_d})
    intervals.sort(key=lambda r: (not r["flat"], r["cost_per_block"], r["start"]))
    return DepthMap(L, list(bi), probe, c, dc, intervals)


def select_intervals(dmap: DepthMap, remove: int) -> list[dict]:
    """Greedy: cheapest (flat first) non-overlapping intervals until exactly `remove` blocks go."""
    chosen: list[dict] = []
    used: set[int] = set()
    left = remove
    for iv in dmap.intervals:
        if left == 0:
            break
        span = set(range(iv["start"], iv["end"] + 1))
        # Touching intervals would merge into one longer run; keep a gap so each stays contiguous.
        if iv["removes"] > left or span & used or (iv["start"] - 1) in used or (iv["end"] + 1) in used:
            continue
        chosen.append(iv)
        used |= span
        left -= iv["removes"]
    if left:
        for iv in sorted(dmap.intervals, key=lambda r: r["cost_per_block"]):
            span = set(range(iv["start"], iv["end"] + 1))
            if iv["removes"] <= left and not span & used:
                chosen.append(iv)
                used |= span
                left -= iv["removes"]
                if not left:
                    break
    if left:
        from ..errors import ConfigError

        raise ConfigError(f"cannot find non-overlapping intervals removing {remove} blocks outside the protected "
                          f"head/tail; lower --remove or --protect")
    return sorted(chosen, key=lambda r: r["start"])
