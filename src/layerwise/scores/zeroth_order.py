"""ECoFLaP's zeroth-order (forward-only) global importance of every weight tensor.

For each tensor P, for each calibration batch: draw a seeded direction z, evaluate the loss at
P + εz and P − εz, accumulate |L₊ − L₋| / 2ε (the magnitude of the directional derivative, an
estimate of ‖∇_P L‖ up to a constant). The tensor is restored by copy, so weights end bit-identical.
The same batches are used for every tensor; directions depend only on (seed, tensor, batch).
"""
from __future__ import annotations

import torch

from ..console import track
from ..errors import ConfigError


@torch.no_grad()
def _loss(model, ids: torch.Tensor) -> float:
    out = model(input_ids=ids, labels=ids, use_cache=False)
    return float(out.loss.double())


@torch.no_grad()
def zeroth_order_scores(model, linears, samples: torch.Tensor, n_samples: int = 32, batch_size: int = 8,
                        eps: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """`linears`: LinearRef list. Returns {linear name: score} (higher = more important)."""
    from ..models.loader import is_causal_lm

    if not is_causal_lm(model):
        raise ConfigError("the zeroth_order score needs a causal LM loss; this model has no LM head")
    batches = [samples[i:i + batch_size] for i in range(0, min(n_samples, samples.shape[0]), batch_size)]
    scores: dict[str, float] = {}
    for t, ref in enumerate(track(linears, "zeroth-order scores")):
        P = ref.module.weight
        orig = P.detach().clone()
        total = 0.0
        for b, ids in enumerate(batches):
            g = torch.Generator().manual_seed(seed * 1_000_003 + t * 1009 + b)
            z = torch.randn(P.shape, generator=g, dtype=torch.float32).to(P.dtype)
            P.add_(z, alpha=eps)
            lp = _loss(model, ids)
            P.copy_(orig)
            P.sub_(z, alpha=eps)
            lm = _loss(model, ids)
            P.copy_(orig)
            total += abs(lp - lm) / (2 * eps)
        scores[ref.name] = total
    return scores
