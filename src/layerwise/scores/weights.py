"""Weight-only scores: ZD (z-score share)."""
from __future__ import annotations

import torch


def zd(weights: list[torch.Tensor], tau: float = 1.0, two_sided: bool = False) -> float:
    """Share of the pooled weights whose z-score exceeds `tau` (smaller = more important)."""
    w = torch.cat([x.detach().reshape(-1).double() for x in weights])
    z = (w - w.mean()) / w.std()
    hit = z.abs() > tau if two_sided else z > tau
    return float(hit.double().mean())
