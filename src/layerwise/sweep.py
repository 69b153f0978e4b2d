"""The inner column loop of the OBS sweeps (SparseGPT, GPTQ), compiled.

Inside one block of columns every output channel is independent: a column's error for channel i
depends only on channel i's weights. The Python loop dispatched 3 (SparseGPT) or 9 (GPTQ) torch
kernels per column — 60–165 µs per column at the 0.5B shape, the larger part of a solve — while
the arithmetic is a few hundred thousand multiply-adds. Here one numba call runs a whole block (or
the part of it up to the next group / N:M boundary) with the same IEEE operations in the same order as the torch reference loops below
(no fast-math, no contraction): the results are bit-identical, which the tests check.

Layout as in the callers: `W1` is Wᵀ's block [columns, channels], row t = column t of W.
"""
from __future__ import annotations

import numpy as np
import torch

_kernels = None


def _compile():
    """numba is imported (and the kernels compiled, or loaded from numba's cache) on first use only:
    importing layerwise stays fast for commands that never sweep."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import numba

    # One thread: the loops below run at memory speed (a block of 128 columns × 896 channels in
    # 0.4 ms); a second thread gained ≤ 10% and would compete with torch's OpenMP pool.
    @numba.njit(cache=True, nogil=True)
    def prune_cols(W1, U1, Err, mask, t0, t1):
        n, r = W1.shape
        for t in range(t0, t1):
            d = U1[t, t]
            w, e, m = W1[t], Err[t], mask[t]
            for i in range(r):
                e[i] = w[i] / d if m[i] else np.float32(0.0)
            for u in range(t + 1, n):
                c = U1[t, u]
                row = W1[u]  # a 1-d contiguous view: the loop over it vectorizes
                for i in range(r):
                    row[i] -= c * e[i]
            for i in range(r):
                if m[i]:
                    w[i] = np.float32(0.0)

    @numba.njit(cache=True, nogil=True)
    def quant_cols(W1, U1, Err, Q1, scale, zero, maxq, keep0, use_keep0, t0, t1):
        n, r = W1.shape
        for t in range(t0, t1):
            d = U1[t, t]
            w, e, q = W1[t], Err[t], Q1[t]
            for i in range(r):
                x = w[i]
                if use_keep0 and keep0[t, i]:
                    x = np.float32(0.0)
                c = min(max(np.rint(x / scale[i]) + zero[i], np.float32(0.0)), maxq)
                q[i] = c
                e[i] = (x - (c - zero[i]) * scale[i]) / d
            for u in range(t + 1, n):
                c = U1[t, u]
                row = W1[u]
                for i in range(r):
                    row[i] -= c * e[i]

    _kernels = (prune_cols, quant_cols)
    return _kernels


def _np(t: torch.Tensor) -> np.ndarray:
    assert t.is_contiguous() and t.device.type == "cpu", "sweep buffers must be contiguous CPU tensors"
    return t.numpy()


def prune_columns(W1: torch.Tensor, U1: torch.Tensor, Err: torch.Tensor, mask: torch.Tensor,
                  t0: int = 0, t1: int | None = None) -> None:
    """SparseGPT's step for columns t0..t1 of a block: zero the masked weights of each column, write
    the column's scaled error into `Err`, push it onto the block's later columns. In place."""
    prune_cols, _ = _compile()
    t1 = W1.shape[0] if t1 is None else t1
    prune_cols(_np(W1), _np(U1), _np(Err), _np(mask), t0, t1)


def quantize_columns(W1: torch.Tensor, U1: torch.Tensor, Err: torch.Tensor, Q1: torch.Tensor,
                     scale: torch.Tensor, zero: torch.Tensor, maxq: int, keep0: torch.Tensor | None,
                     t0: int = 0, t1: int | None = None) -> None:
    """GPTQ's step for columns t0..t1 of a block on one group's grid (scale, zero per channel): codes
    into `Q1`, scaled errors into `Err`, pushed onto the block's later columns. `keep0` marks weights
    quantized as exact zeros (a pruning mask GPTQ must not revive). In place."""
    _, quant_cols = _compile()
    t1 = W1.shape[0] if t1 is None else t1
    use = keep0 is not None
    k = _np(keep0) if use else np.zeros((1, 1), dtype=np.bool_)
    quant_cols(_np(W1), _np(U1), _np(Err), _np(Q1), _np(scale.contiguous()), _np(zero.contiguous()),
               np.float32(maxq), k, use, t0, t1)


# Reference loops: one torch step per column, obviously right; the tests hold the kernels to them.

def prune_columns_reference(W1, U1, Err, mask, t0=0, t1=None):
    t1 = W1.shape[0] if t1 is None else t1
    for t in range(t0, t1):
        err = torch.where(mask[t], W1[t] / U1[t, t], torch.zeros(()))
        Err[t] = err
        W1[t + 1:] -= U1[t, t + 1:, None] * err[None, :]
        W1[t][mask[t]] = 0.0


def quantize_columns_reference(W1, U1, Err, Q1, scale, zero, maxq, keep0, t0=0, t1=None):
    t1 = W1.shape[0] if t1 is None else t1
    for t in range(t0, t1):
        w = W1[t] if keep0 is None else W1[t].masked_fill(keep0[t], 0.0)
        q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
        Q1[t] = q
        err = (w - (q - zero) * scale) / U1[t, t]
        Err[t] = err
        W1[t + 1:] -= U1[t, t + 1:, None] * err[None, :]
