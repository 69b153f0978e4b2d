"""The 2-D Gaussian mixture of the BranchGRPO CPU setting: 8 modes on a circle, one class per mode."""
from __future__ import annotations

import math

import torch

MODES = 8
RADIUS = 2.0
STD = 0.15


def means(modes: int = MODES, radius: float = RADIUS) -> torch.Tensor:
    angle = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)).float()


def sample(n: int, generator: torch.Generator, label_noise: float = 0.0, modes: int = MODES,
           std: float = STD) -> tuple[torch.Tensor, torch.Tensor]:
    """(points, labels): points of uniformly chosen modes; with probability `label_noise` a label is
    replaced by a uniformly random class (the misaligned conditioning of the base model)."""
    mode = torch.randint(0, modes, (n,), generator=generator)
    x = means(modes)[mode] + std * torch.randn(n, 2, generator=generator)
    flip = torch.rand(n, generator=generator) < label_noise
    labels = torch.where(flip, torch.randint(0, modes, (n,), generator=generator), mode)
    return x, labels


def nearest_mode(x: torch.Tensor, modes: int = MODES) -> torch.Tensor:
    return torch.cdist(x.reshape(-1, 2).float(), means(modes)).argmin(dim=-1)
