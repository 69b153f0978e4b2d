"""TAS's differentiable relaxation: Gumbel sampling of two sizes, channel-wise interpolation, τ, cost loss.

Kept apart from any network so each piece is tested on its own (spec pitfalls 2, 4, 11).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-6


def gumbel_logits(alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(log_softmax(α) + g) / τ with g ~ Gumbel(0, 1); u is clamped to [ε, 1−ε] so g is finite."""
    u = torch.rand(alpha.shape, generator=generator).clamp(EPS, 1 - EPS)
    g = -torch.log(-torch.log(u))
    return (F.log_softmax(alpha, -1) + g) / tau


def sample_two(alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None):
    """Two candidate indices drawn without replacement from the Gumbel-perturbed distribution (no
    gradient through the draw), and their weights: a softmax over the two perturbed logits, so the
    gradient reaches α through exactly those two entries. One candidate: (idx, idx), weights (1, 0)."""
    if alpha.numel() == 1:
        return (0, 0), torch.stack([alpha.new_ones(()), alpha.new_zeros(())])
    z = gumbel_logits(alpha, tau, generator)
    p = F.softmax(z.detach(), -1)
    picks = torch.multinomial(p, 2, replacement=False, generator=generator)
    j1, j2 = int(picks[0]), int(picks[1])
    w = F.softmax(torch.stack([z[j1], z[j2]]), -1)
    return (j1, j2), w


def gumbel_softmax(beta: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel-softmax over all choices (TAS's depth relaxation)."""
    return F.softmax(gumbel_logits(beta, tau, generator), -1)


def cwi(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Channel-wise interpolation: resize the channel axis of [B, C, H, W] to `channels` by adaptive
    average pooling over channels (output channel o is the mean of input channels
    ⌊o·C/C'⌋ … ⌈(o+1)·C/C'⌉−1). The identity when C = C'."""
    if x.shape[1] == channels:
        return x
    b, c, h, w = x.shape
    return F.adaptive_avg_pool3d(x.unsqueeze(1), (channels, h, w)).squeeze(1)


def zero_pad(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The ablation of CWI: align by zero-padding (or truncating) the channel axis."""
    c = x.shape[1]
    if c == channels:
        return x
    if c > channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - c))


ALIGN = {"cwi": cwi, "zero": zero_pad}


def tau_at(epoch: int, total: int, tau_max: float = 5.0, tau_min: float = 0.1) -> float:
    """Cosine schedule from τ_max at epoch 0 towards τ_min at the end."""
    return tau_min + (tau_max - tau_min) * (1 + math.cos(math.pi * epoch / max(1, total))) / 2


def cost_loss(expected: torch.Tensor, discrete: float, full: float, target: float, tolerance: float) -> tuple[torch.Tensor, str]:
    """TAS's FLOPs term, branch chosen by the argmax genotype's FLOPs, gradient through log E[FLOPs].

    The band is [target − tolerance, target] of the full FLOPs (the reference's one-sided band):
    above it the loss pushes the expected FLOPs down, below it up, inside it is zero."""
    ratio = discrete / full
    if ratio > target:
        return torch.log(expected), "down"
    if ratio < target - tolerance:
        return -torch.log(expected), "up"
    return expected.new_zeros(()), "in band"
