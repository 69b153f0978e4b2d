"""The inner column loop of the OBS sweeps (SparseGPT, GPTQ), compiled.

Inside one block of columns every output channel is independent: a column's error for channel i
depends only on channel i's weights. The Python loop dispatched 3 (SparseGPT) or 9 (GPTQ) torch
kernels per column — 60–165 µs per column at the 0.5B shape, the larger part of a solve — while
the arithmetic is a few hundred thousand multiply-adds. Here one numba call runs a whole block (or
the part of it up to the next group / N:M boundary) with the same IEEE operations in the same order
as the torch loops below (no fast-math, no contraction): the results are bit-identical, which the
tests check. Models whose blocks are all small (a 3M-parameter model's) take the torch loops: there,
loading numba (~0.7 s, ~100 MB of resident memory) would cost more than it saves; so does any machine
where numba cannot load or compile.

Layout as in the callers: `W1` is Wᵀ's block [columns, channels], row t = column t of W.
"""
from __future__ import annotations

import numpy as np
import torch

# A block of at least this many weights (128 columns × 512 channels) runs compiled.
KERNEL_MIN_WEIGHTS = 1 << 16

_kernels = None          # (prune_cols, quant_cols), False where numba is unusable


def _compile():
    """numba is imported (and the kernels compiled, or loaded from numba's cache) on first use only:
    importing layerwise stays fast for commands that never sweep. False if that fails."""
    global _kernels
    if _kernels is None:
        try:
            _kernels = _build(cache=True)
        except Exception:   # noqa: BLE001 — no writable cache, an unsupported platform: compile uncached
            try:
                _kernels = _build(cache=False)
            except Exception:  # noqa: BLE001 — numba unusable here: the torch loops give the same bits
                _kernels = False
    return _kernels


def _build(cache: bool):
    import numba

    # One thread: the loops below run at memory speed (a block of 128 columns × 896 channels in
    # 0.4 ms); a second thread gained ≤ 10% and would compete with torch's OpenMP pool.
    @numba.njit(cache=cache, nogil=True)
    def prune_cols(W1, U1, Err, mask, t0, t1):
        n, r = W1.shape
        for t in range(t0, t1):
            d = U1[t, t]
            w, e, m = W1[t], Err[t], mask[t]
            for i in range(r):
                # w·1 or w·0 (a signed zero), as torch's `w * mask`
                e[i] = (w[i] * (np.float32(1.0) if m[i] else np.float32(0.0))) / d
            for u in range(t + 1, n):
                c = U1[t, u]
                row = W1[u]  # a 1-d contiguous view: the loop over it vectorizes
                for i in range(r):
                    row[i] -= c * e[i]
            for i in range(r):
                if m[i]:
                    w[i] = np.float32(0.0)

    @numba.njit(cache=cache, nogil=True)
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

    # compile (or load) now, on a tiny problem, so that failures surface here
    W = np.zeros((2, 2), np.float32)
    prune_cols(W, np.eye(2, dtype=np.float32), W.copy(), np.zeros((2, 2), np.bool_), 0, 2)
    quant_cols(W, np.eye(2, dtype=np.float32), W.copy(), W.copy(), np.ones(2, np.float32), W[0].copy(),
               np.float32(15), np.zeros((1, 1), np.bool_), False, 0, 2)
    return prune_cols, quant_cols


def _kernel(W1: torch.Tensor, which: int):
    # once numba is loaded every block uses it (a 0.5B model's k/v blocks are 128 × 128)
    if _kernels is None and W1.numel() < KERNEL_MIN_WEIGHTS:
        return None
    k = _compile()
    return k[which] if k else None


def _np(t: torch.Tensor) -> np.ndarray:
    assert t.is_contiguous() and t.device.type == "cpu", "sweep buffers must be contiguous CPU tensors"
    return t.numpy()


def prune_columns(W1: torch.Tensor, U1: torch.Tensor, Err: torch.Tensor, mask: torch.Tensor,
                  t0: int = 0, t1: int | None = None) -> None:
    """SparseGPT's step for columns t0..t1 of a block: zero the masked weights of each column, write
    the column's scaled error into `Err`, push it onto the block's later columns. In place."""
    t1 = W1.shape[0] if t1 is None else t1
    kernel = _kernel(W1, 0)
    if kernel is None:
        prune_columns_torch(W1, U1, Err, mask, t0, t1)
    else:
        kernel(_np(W1), _np(U1), _np(Err), _np(mask), t0, t1)


def quantize_columns(W1: torch.Tensor, U1: torch.Tensor, Err: torch.Tensor, Q1: torch.Tensor,
                     scale: torch.Tensor, zero: torch.Tensor, maxq: int, keep0: torch.Tensor | None,
                     t0: int = 0, t1: int | None = None) -> None:
    """GPTQ's step for columns t0..t1 of a block on one group's grid (scale, zero per channel): codes
    into `Q1`, scaled errors into `Err`, pushed onto the block's later columns. `keep0` marks weights
    quantized as exact zeros (a pruning mask GPTQ must not revive). In place."""
    t1 = W1.shape[0] if t1 is None else t1
    kernel = _kernel(W1, 1)
    if kernel is None:
        quantize_columns_torch(W1, U1, Err, Q1, scale, zero, maxq, keep0, t0, t1)
        return
    use = keep0 is not None
    k = _np(keep0) if use else np.zeros((1, 1), dtype=np.bool_)
    kernel(_np(W1), _np(U1), _np(Err), _np(Q1), _np(scale.contiguous()), _np(zero.contiguous()),
           np.float32(maxq), k, use, t0, t1)


# The same steps as torch loops, one column at a time: the kernels' reference in the tests and the path
# for small blocks. Each product is rounded before it is subtracted, as in the kernels (torch's `addr_`
# may fuse the two).

def prune_columns_torch(W1, U1, Err, mask, t0=0, t1=None):
    t1 = W1.shape[0] if t1 is None else t1
    for t in range(t0, t1):
        w = W1[t]
        err = torch.mul(w, mask[t], out=Err[t]).div_(U1[t, t])
        W1[t + 1:].sub_(torch.outer(U1[t, t + 1:], err))
        w.masked_fill_(mask[t], 0.0)


def quantize_columns_torch(W1, U1, Err, Q1, scale, zero, maxq, keep0, t0=0, t1=None):
    t1 = W1.shape[0] if t1 is None else t1
    for t in range(t0, t1):
        w = W1[t] if keep0 is None else W1[t].masked_fill(keep0[t], 0.0)
        q = torch.div(w, scale, out=Q1[t]).round_().add_(zero).clamp_(0, maxq)
        deq = torch.sub(q, zero, out=Err[t]).mul_(scale)
        err = torch.sub(w, deq, out=Err[t]).div_(U1[t, t])
        W1[t + 1:].sub_(torch.outer(U1[t, t + 1:], err))
