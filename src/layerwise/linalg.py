"""Numerics shared by SparseGPT and GPTQ: damped Hessians and a Cholesky that retries."""
from __future__ import annotations

import numpy as np
import torch

from .errors import LayerwiseError


def inverse_cholesky_(H: torch.Tensor, percdamp: float = 0.01, max_tries: int = 6) -> tuple[torch.Tensor, float]:
    """U with Uᵀ U = (H + λI)⁻¹, upper triangular, computed in the memory of H (which it overwrites):
    λ = percdamp · mean(diag H); dead inputs (zero diagonal) get a unit diagonal first. If the
    factorization fails, λ grows ×10 and it is retried. Returns U and the relative damping used.

    U is the reversal P L⁻¹ P of the inverse of the lower Cholesky factor L of the reversed matrix
    P H P (P the anti-identity): then Uᵀ U = P (L Lᵀ)⁻¹ P = H⁻¹. One Cholesky and one triangular
    inverse (⅔ n³ flops) instead of Cholesky, inverse, Cholesky (4/3 n³), and no n × n matrix
    besides H: at the 1.5B shape a down projection's H is 321 MB. LAPACK touches one triangle, so
    the other one keeps H for a retry with more damping.
    """
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits

    if H.dtype != torch.float32 or not H.is_contiguous():
        H = H.float().contiguous()
    if not _finite(H):
        raise LayerwiseError("non-finite values in the layer Hessian; check the calibration activations")
    _reverse_(H)
    diag = _dead_to_one(H.diagonal())
    mean = float(diag.mean())
    F = H.numpy().T   # column-major view of the same memory: LAPACK's upper triangle is our lower one
    damp = percdamp
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        for _ in range(max_tries):
            H.diagonal().copy_(diag + damp * mean)
            _, info = lapack.spotrf(F, lower=0, clean=0, overwrite_a=1)
            if info == 0:
                _, info = lapack.strtri(F, lower=0, overwrite_c=1)
                if info == 0 and _finite(H):
                    H.tril_()
                    _reverse_(H)
                    return H, damp
            fill_lower_from_upper(H)
            damp *= 10
    raise LayerwiseError(f"the layer Hessian is not positive definite even with damping {damp / 10:g}; "
                         "use more calibration samples")


def _dead_to_one(diag: torch.Tensor) -> torch.Tensor:
    d = diag.clone()
    d[d == 0] = 1.0
    return d


def damping_shift(diag: torch.Tensor, damp: float) -> torch.Tensor:
    """What `inverse_cholesky_` added to the diagonal of a Hessian whose diagonal was `diag`, when it
    returned relative damping `damp`: H + diag(shift) is the matrix U factors."""
    d = _dead_to_one(diag)
    return d - diag + damp * float(d.mean())


def relative_error_from_factor(D: torch.Tensor, U: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per row d of D, d H dᵀ from the inverse factor of H + diag(shift) alone (UᵀU = (H + S)⁻¹, so
    H + S = U⁻¹U⁻ᵀ and d H dᵀ = ‖d U⁻¹‖² − Σ_j s_j d_j²): one triangular solve of D's rows, for when
    H itself was factored in place. float64 results."""
    Y = torch.linalg.solve_triangular(U, D.float(), upper=True, left=False)
    D = D.double()
    return Y.double().pow(2).sum(1) - (D * D * shift.double()).sum(1)


def syrk_(H: torch.Tensor, x: torch.Tensor) -> bool:
    """H's upper triangle += that of xᵀx through BLAS ssyrk, in H's memory; False (H untouched) where
    it does not apply. ssyrk does half the multiply-adds of a product and runs ~25% faster than the
    blocked triangle of torch products at an MLP's 4864 columns; it is used only when scipy's
    OpenBLAS threads stop spinning after each call (`OPENBLAS_THREAD_TIMEOUT`, set when layerwise is
    imported before scipy), since their spinning slowed torch's next kernels by more than it saves."""
    from ._blas import SPIN_BOUNDED

    if not (SPIN_BOUNDED and H.dtype == x.dtype == torch.float32 and H.is_contiguous()
            and x.is_contiguous() and H.device.type == x.device.type == "cpu" and not x.requires_grad):
        return False
    from scipy.linalg import blas
    from threadpoolctl import threadpool_limits

    # column-major views of the same memory: BLAS's A = xᵀ (n × tokens), and BLAS's lower triangle
    # of C is our upper one
    C = H.numpy().T
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        out = blas.ssyrk(1.0, x.numpy().T, beta=1.0, c=C, trans=0, lower=1, overwrite_c=1)
    if out is not C and not np.shares_memory(out, C):   # a scipy whose wrapper copied C
        raise LayerwiseError("BLAS ssyrk did not update the Gram matrix in place")
    return True


def _finite(A: torch.Tensor, rows: int = 256) -> bool:
    """torch.isfinite(A).all() without its n × n temporaries (an |A| copy: 95 MB for an MLP's H). The
    sum is non-finite whenever an element is; only then (or if a finite sum overflowed) are the rows
    tested one chunk at a time."""
    if bool(torch.isfinite(A.sum())):
        return True
    return all(bool(torch.isfinite(A[i:i + rows]).all()) for i in range(0, A.shape[0], rows))


def _reverse_(A: torch.Tensor, chunk: int = 1 << 18) -> None:
    """A ← P A P in place (the matrix turned by 180°: its flat storage reversed), with chunk-sized temporaries."""
    f = A.view(-1)
    n = f.numel()
    for s in range(0, n // 2, chunk):
        e = min(s + chunk, n // 2)
        head = f[s:e].clone()
        f[s:e] = f[n - e:n - s].flip(0)
        f[n - e:n - s] = head.flip(0)


def fill_lower_from_upper(A: torch.Tensor, chunk: int = 512) -> None:
    """Rebuild the lower triangle (and diagonal block mirrors) from the untouched strict upper one."""
    n = A.shape[0]
    for i in range(0, n, chunk):
        A[i:i + chunk, :i] = A[:i, i:i + chunk].t()
        sub = A[i:i + chunk, i:i + chunk]
        sub.copy_(torch.triu(sub) + torch.triu(sub, 1).t())


def dequantize_groups(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    """w = s · (q − z) with each column's scale and zero from its group `g_idx[col]`. Contiguous groups
    (no act-order) broadcast per group instead of gathering rows × columns copies of both."""
    rows, cols = q.shape
    groups = scales.shape[1]
    g_idx = g_idx.long()
    if cols % groups == 0 and torch.equal(g_idx, torch.arange(cols) // (cols // groups)):
        return (scales.unsqueeze(2) * (q.view(rows, groups, -1).float() - zeros.float().unsqueeze(2))).view(rows, cols)
    return scales[:, g_idx] * (q.float() - zeros[:, g_idx].float())


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split the integer `total` proportionally to `weights` so that the parts sum to `total` exactly."""
    s = float(sum(weights))
    if s <= 0:
        out = [0] * len(weights)
        if weights:
            out[0] = total
        return out
    raw = [total * w / s for w in weights]
    base = [int(x) for x in raw]
    rest = total - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return base
