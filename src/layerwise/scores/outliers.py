"""OWL's outlier ratio: share of Wanda scores much larger than their block's mean."""
from __future__ import annotations

import torch


def outlier_ratio(weights: list[torch.Tensor], mean_sq: list[torch.Tensor], m: float = 5.0) -> float:
    """100 · mean(S > m · mean(S)) with S = |W| · sqrt(E[x²]) pooled over the block's linears."""
    scores = torch.cat([(w.detach().abs().double() * s.double().sqrt().view(1, -1)).reshape(-1)
                        for w, s in zip(weights, mean_sq)])
    return float(100.0 * (scores > m * scores.mean()).double().mean())
