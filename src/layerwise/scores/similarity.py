"""Input–output similarity of blocks: LIM and Block Influence."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_token_cosine(inputs: list[torch.Tensor], outputs: list[torch.Tensor], skip_first: bool = True) -> float:
    """E over sequences and positions of cos(h_in[t], h_out[t]), accumulated in float64."""
    total, n = 0.0, 0
    for a, b in zip(inputs, outputs):
        if a.ndim == 3 and skip_first and a.shape[1] > 1:
            a, b = a[:, 1:], b[:, 1:]
        c = F.cosine_similarity(a.double(), b.double(), dim=-1)
        total += float(c.sum())
        n += c.numel()
    return total / max(1, n)
