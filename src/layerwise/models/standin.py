"""A residual linear map h ↦ h + W h + b that stands in for a contiguous run of blocks (PPCL).

It is called like a block of the model it sits in (hidden states first; masks, rotary tables,
timestep and class embeddings are accepted and ignored) and returns a tensor, as stock blocks do.
"""
from __future__ import annotations

import torch
from torch import nn


class LinearStandIn(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)    # the zero map: a plain bypass until fitted
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states + self.proj(hidden_states)
