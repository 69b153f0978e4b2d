"""Numerics shared by SparseGPT and GPTQ: damped Hessians and a Cholesky that retries."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import LayerwiseError


def damped_inverse_cholesky(make_H: Callable[[], torch.Tensor], percdamp: float = 0.01, max_tries: int = 6
                            ) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of (H + λI)⁻¹ with λ = percdamp · mean(diag H), in float32.

    `make_H()` returns a fresh H that this function may overwrite: it is damped in place and freed
    as soon as it is factorized, and rebuilt if a larger damping is needed. Dead inputs (zero
    diagonal) get a unit diagonal. If either factorization fails, λ grows ×10 and it is retried.
    Returns U and the relative damping used.
    """
    # float32 like the reference implementations (the damping keeps H well conditioned), and never
    # more than two n×n matrices alive here: at the 1.5B shape a down projection's H is 321 MB
    damp = percdamp
    for _ in range(max_tries):
        H = _damped(make_H(), damp)
        L, info = torch.linalg.cholesky_ex(H)
        del H
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            del L
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            del Hinv
            if int(info) == 0 and torch.isfinite(U).all():
                return U, damp
        damp *= 10
    raise LayerwiseError(f"the layer Hessian is not positive definite even with damping {damp / 10:g}; "
                         "use more calibration samples")


def _damped(H: torch.Tensor, damp: float) -> torch.Tensor:
    if H.dtype != torch.float32:
        H = H.float()
    if not torch.isfinite(H).all():
        raise LayerwiseError("non-finite values in the layer Hessian; check the calibration activations")
    diag = H.diagonal()
    diag[diag == 0] = 1.0
    diag.add_(damp * float(diag.mean()))
    return H


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
