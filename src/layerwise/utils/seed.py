"""Seeded torch generators: the same seed gives the same draws on every machine."""
from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g
