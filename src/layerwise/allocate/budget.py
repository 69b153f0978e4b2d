"""Turn desired per-layer ratios into exact per-layer counts that meet one global budget.

`fit_budget` shifts the desired ratios by one common offset (found by bisection) so that, after
clipping each ratio to [lo, hi], the parameter-weighted mean equals the target; then it rounds to
integers by largest remainder, so that the total count is exactly round(target · Σn) and no layer
leaves its bounds. Water-filling by a common shift keeps the allocator's ordering and spread where
no bound binds, and hands what a clipped layer cannot take to the others.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def fit_budget(sizes, ratios, target: float, lo: float = 0.0, hi: float = 0.99, what: str = "sparsity") -> np.ndarray:
    """Integer counts c_l with Σc_l = round(target·Σn_l) and lo·n_l ≤ c_l ≤ hi·n_l (up to rounding)."""
    n = np.asarray(sizes, dtype=np.float64)
    r = np.asarray(ratios, dtype=np.float64)
    if n.size == 0:
        raise ConfigError("nothing to allocate: no layers selected")
    if not np.all(np.isfinite(r)):
        raise ConfigError(f"the allocation produced non-finite ratios for {int((~np.isfinite(r)).sum())} layers")
    if not (0.0 <= lo <= hi < 1.0):
        raise ConfigError(f"bounds must satisfy 0 <= lo <= hi < 1 (got {lo}, {hi})")
    if not (lo - 1e-12 <= target <= hi + 1e-12):
        raise ConfigError(f"target {what} {target:g} is outside what the per-layer bounds allow "
                          f"[{lo:g}, {hi:g}]; raise --max-sparsity or lower the target")
    N = n.sum()
    K = int(math.floor(target * N + 0.5))

    def mass(t: float) -> float:
        return float((n * np.clip(r + t, lo, hi)).sum())

    a, b = lo - r.max() - 1.0, hi - r.min() + 1.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if mass(mid) < K:
            a = mid
        else:
            b = mid
    x = n * np.clip(r + b, lo, hi)
    caps_hi = np.floor(hi * n + 1e-9)
    caps_lo = np.ceil(lo * n - 1e-9)
    # Integer caps can make the exact count unreachable for tiny layers; within one weight per
    # layer that is accepted, beyond it the request is infeasible.
    if not caps_lo.sum() - n.size <= K <= caps_hi.sum() + n.size:
        raise ConfigError(f"cannot place {what} {target:g} within the per-layer bounds")
    K = int(min(max(K, caps_lo.sum()), caps_hi.sum()))
    base = np.clip(np.floor(x), caps_lo, caps_hi)
    rest = K - int(base.sum())
    frac = x - base
    # Largest remainder first; layers at a bound take nothing, so repeat until the count is exact.
    while rest != 0:
        sign = 1 if rest > 0 else -1
        room = base < caps_hi if sign > 0 else base > caps_lo
        if not room.any():
            break
        key = -frac if sign > 0 else frac
        order = [i for i in np.lexsort((np.arange(n.size), key)) if room[i]][: abs(rest)]
        for i in order:
            base[i] += sign
            frac[i] -= sign
        rest -= sign * len(order)
    if rest != 0:
        raise ConfigError(f"cannot place {what} {target:g} exactly within the per-layer bounds")
    return base.astype(np.int64)


def linear_map(values, spread: float) -> np.ndarray:
    """AlphaPruning's map: min→1−spread, max→1+spread (a constant vector maps to ones)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.nanmin(v), np.nanmax(v)
    if not np.isfinite(lo) or hi - lo < 1e-12:
        return np.ones_like(v)
    return (1 - spread) + (v - lo) / (hi - lo) * (2 * spread)
