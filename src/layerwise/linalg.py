"""Numerics shared by SparseGPT and GPTQ: damped Hessians and a Cholesky that retries."""
from __future__ import annotations

import torch

from .errors import LayerwiseError


def damped_inverse_cholesky(H: torch.Tensor, percdamp: float = 0.01, max_tries: int = 6
                            ) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = percdamp · mean(diag H).

    Dead inputs (zero diagonal) get a unit diagonal. If the factorization fails, λ grows ×10 and
    the factorization is retried. Returns U (float32 for the sweep) and the relative damping used.
    """
    # float64 for the factorizations, but as few n×n copies as possible: for an MLP down projection
    # (n = 4864 at the 0.5B shape) each copy is 190 MB, and building H + λI out of place with an
    # identity matrix used to hold six of them at once
    H = H.detach().to(torch.float64, copy=True)
    diag = H.diagonal()
    dead = diag == 0
    diag[dead] = 1.0
    mean_diag = float(diag.mean())
    if not torch.isfinite(H).all():
        raise LayerwiseError("non-finite values in the layer Hessian; check the calibration activations")
    damp, added = percdamp, 0.0
    for _ in range(max_tries):
        lam = damp * mean_diag
        diag.add_(lam - added)          # first try: exactly H + λI; later tries grow λ in place
        added = lam
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            del L
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            del Hinv
            if int(info2) == 0 and torch.isfinite(U).all():
                return U.float(), damp
        damp *= 10
    raise LayerwiseError(f"the layer Hessian is not positive definite even with damping {damp / 10:g}; "
                         "use more calibration samples")


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
