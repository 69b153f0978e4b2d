"""Heavy-tail (HT-SR) metrics of weight matrices: ESD power-law α, plain and FARMS.

The ESD of W is the set of eigenvalues of WᵀW (squared singular values). A power law is fitted to
its tail with the Hill estimator and the tail start (xmin) chosen by the Kolmogorov–Smirnov distance.
Smaller α = heavier tail = better trained = more important.

FARMS (fixed-aspect-ratio matrix subsampling): α of a random matrix depends on its aspect ratio, so
layers of different shapes are not comparable. FARMS pools the eigenvalues of many equally shaped
m × ⌊mQ⌋ windows of W and fits one α on the pooled spectrum.

`fit_power_law` returns exactly the fit of the plain per-candidate search (`fit_power_law_loop`),
by branch and bound: every candidate's α from suffix sums in O(N), lower bounds of the KS distances
from a few points, and exact distances only for the candidates whose bound can still win.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

XMIN_RULES = ("peak", "mid", "search")


@dataclass
class PowerLawFit:
    alpha: float
    xmin: float
    ks: float
    n_tail: int
    n_eigs: int
    evaluated: int            # candidates whose exact KS distance was computed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def esd(W: torch.Tensor) -> np.ndarray:
    """Ascending eigenvalues of WᵀW (min(r, c) of them), float64."""
    s = torch.linalg.svdvals(W.detach().double())
    return np.sort((s * s).numpy())


def farms_windows(shape: tuple[int, int], m: int = 128, q: float = 1.0, k: int = 8) -> list[tuple[int, int, int, int]]:
    """Window origins and sizes (a, b, rows, cols) of the FARMS sampling of an r × c matrix."""
    r, c = shape
    m = int(min(m, r, c))
    kc = int(m * q)
    if kc > c:
        kc = c
    if k <= 1:
        return [(0, 0, m, kc)]
    rs = max(1, (r - m) // (k - 1))
    cs = max(1, (c - kc) // (k - 1))
    nr = min(k, max(1, (r - m) // rs + 1))
    nc = min(k, max(1, (c - kc) // cs + 1))
    return [(min(i * rs, r - m), min(j * cs, c - kc), m, kc) for i in range(nr) for j in range(nc)]


def farms_esd(W: torch.Tensor, m: int = 128, q: float = 1.0, k: int = 8) -> np.ndarray:
    """Pooled (concatenated) ascending eigenvalues of all FARMS windows of W."""
    W = W.detach().double()
    wins = farms_windows(tuple(W.shape), m, q, k)
    blocks = torch.stack([W[a:a + h, b:b + w] for a, b, h, w in wins])
    s = torch.linalg.svdvals(blocks)
    return np.sort((s * s).reshape(-1).numpy())


def _clean(eigs: np.ndarray, filter_zeros: bool) -> np.ndarray:
    eigs = np.sort(np.asarray(eigs, dtype=np.float64))
    if filter_zeros and eigs.size:
        eigs = eigs[eigs > max(1e-12, 1e-5 * eigs[-1])]
    return eigs


def _candidates(eigs: np.ndarray, rule: str, bins: int, reference_peak: bool) -> np.ndarray:
    n = eigs.size
    if rule == "mid":
        return np.array([n // 2])
    if rule == "search":
        return np.arange(0, n - 1)
    if rule != "peak":
        raise ValueError(f"unknown xmin rule {rule!r}; choose one of {XMIN_RULES}")
    logs = np.log10(eigs)
    hist, edges = np.histogram(logs, bins=bins)
    peak = 10 ** edges[int(np.argmax(hist))]
    hi = eigs <= 1.5 * peak
    # The reference compares eigenvalues to log10(0.95·peak), which rarely binds; offered for parity.
    lo = eigs >= (math.log10(0.95 * peak) if reference_peak else 0.95 * peak)
    idx = np.nonzero(hi & lo)[0]
    return idx[idx < n - 1]


def _alphas(eigs: np.ndarray) -> np.ndarray:
    """α_i = 1 + n_i / Σ_{j≥i} ln(λ_j/λ_i) for every start index i (suffix sums, O(N))."""
    logs = np.log(eigs)
    suffix = np.cumsum(logs[::-1])[::-1]
    n_tail = eigs.size - np.arange(eigs.size)
    denom = suffix - n_tail * logs
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 + n_tail / denom


def _ks_lower_bounds(logs: np.ndarray, cands: np.ndarray, alphas: np.ndarray, pts: np.ndarray,
                     chunk_elems: int = 1_000_000) -> np.ndarray:
    """Each candidate's KS deviation restricted to the points `pts` (those at or after it):
    a max over fewer points than the exact distance, hence a lower bound of it."""
    N = logs.size
    out = np.zeros(cands.size)
    lp = logs[pts]
    step = max(1, chunk_elems // max(1, pts.size))
    for s0 in range(0, cands.size, step):
        c = cands[s0:s0 + step]
        a = alphas[s0:s0 + step]
        n = (N - c).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.abs(1.0 - np.exp((1.0 - a[:, None]) * (lp[None, :] - logs[c][:, None]))
                       - (pts[None, :] - c[:, None]) / n[:, None])
        d[pts[None, :] < c[:, None]] = 0.0
        out[s0:s0 + step] = np.nanmax(d, axis=1)
    return out


def _exact(eigs: np.ndarray, i: int) -> tuple[float, float, int]:
    """α, KS distance and the index of the largest deviation — the same arithmetic as the loop."""
    tail = eigs[i:]
    n = tail.size
    alpha = 1.0 + n / np.sum(np.log(tail / eigs[i]))
    dev = np.abs(1.0 - (tail / eigs[i]) ** (1.0 - alpha) - np.arange(n) / n)
    k = int(np.argmax(dev))
    return float(alpha), float(dev[k]), i + k


def fit_power_law(eigs: np.ndarray, xmin: str = "peak", bins: int = 100, filter_zeros: bool = True,
                  reference_peak: bool = False, grid_points: int = 100, window: int = 64) -> PowerLawFit:
    eigs = _clean(eigs, filter_zeros)
    N = eigs.size
    if N < 3:
        return PowerLawFit(float("nan"), float("nan"), float("nan"), 0, N, 0)
    cands = _candidates(eigs, xmin, bins, reference_peak)
    alphas = _alphas(eigs)
    cands = cands[np.isfinite(alphas[cands]) & (alphas[cands] > 1)]
    if cands.size == 0:  # nothing to fit: fall back to the median eigenvalue
        cands = np.array([N // 2]) if xmin != "mid" else cands
        if cands.size == 0 or not alphas[cands[0]] > 1:
            return PowerLawFit(float("nan"), float("nan"), float("nan"), 0, N, 0)
    if cands.size == 1:
        i = int(cands[0])
        a, d, _ = _exact(eigs, i)
        return PowerLawFit(a, float(eigs[i]), d, N - i, N, 1)
    # Branch and bound, exact: lower bounds of every candidate's KS distance from a coarse grid;
    # evaluate the most promising candidate exactly; the largest deviations of neighbouring
    # candidates sit at nearly the same eigenvalue, so the points around each exact argmax tighten
    # everyone's bound; stop when no bound can beat the best exact distance.
    logs = np.log(eigs)
    ac = alphas[cands]
    grid = np.unique(np.append(np.arange(0, N, max(8, N // grid_points)), N - 1))
    lower = _ks_lower_bounds(logs, cands, ac, grid)
    alive = np.ones(cands.size, dtype=bool)
    dense: set[int] = set()
    best_d, best_i, best_a, evaluated = math.inf, -1, float("nan"), 0
    slack = 1e-12
    while True:
        idx = np.nonzero(alive)[0]
        if idx.size == 0:
            break
        j = idx[np.argmin(lower[idx])]
        if lower[j] > best_d + slack:
            break
        i = int(cands[j])
        a, d, jstar = _exact(eigs, i)
        evaluated += 1
        alive[j] = False
        if d < best_d or (d == best_d and i < best_i):
            best_d, best_i, best_a = d, i, a
        if jstar // window not in dense:
            dense.add(jstar // window)
            pts = np.arange(max(0, jstar - window), min(N, jstar + window + 1))
            idx = np.nonzero(alive)[0]
            if idx.size:
                lower[idx] = np.maximum(lower[idx], _ks_lower_bounds(logs, cands[idx], ac[idx], pts))
        alive &= lower <= best_d + slack
    return PowerLawFit(best_a, float(eigs[best_i]), best_d, N - best_i, N, evaluated)


def fit_power_law_loop(eigs: np.ndarray, xmin: str = "peak", bins: int = 100, filter_zeros: bool = True,
                       reference_peak: bool = False) -> PowerLawFit:
    """The plain reference search: every candidate's α and KS distance in a Python loop."""
    eigs = _clean(eigs, filter_zeros)
    N = eigs.size
    cands = _candidates(eigs, xmin, bins, reference_peak)
    best = (math.inf, -1, float("nan"))
    for i in cands:
        i = int(i)
        tail = eigs[i:]
        n = tail.size
        alpha = 1.0 + n / np.sum(np.log(tail / eigs[i]))
        if not alpha > 1:
            continue
        d = float(np.max(np.abs(1.0 - (tail / eigs[i]) ** (1.0 - alpha) - np.arange(n) / n)))
        if d < best[0]:
            best = (d, i, alpha)
    d, i, alpha = best
    if i < 0:
        return PowerLawFit(float("nan"), float("nan"), float("nan"), 0, N, len(cands))
    return PowerLawFit(float(alpha), float(eigs[i]), d, N - i, N, len(cands))


def alpha(W: torch.Tensor, xmin: str = "peak", **kw) -> PowerLawFit:
    return fit_power_law(esd(W), xmin=xmin, **kw)


def farms_alpha(W: torch.Tensor, m: int = 128, q: float = 1.0, k: int = 8, xmin: str = "peak", **kw) -> PowerLawFit:
    return fit_power_law(farms_esd(W, m, q, k), xmin=xmin, **kw)
