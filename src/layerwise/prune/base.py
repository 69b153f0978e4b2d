"""Local pruners: given one weight matrix, its input statistics and a budget, choose and apply a mask."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..engine.stats import InputStats
from .masks import zeros_for


@dataclass(frozen=True)
class Budget:
    sparsity: float = 0.0
    nm: tuple[int, int] | None = None

    def planned_zeros(self, shape: tuple[int, int]) -> int:
        r, c = shape
        if self.nm is not None:
            n, m = self.nm
            return r * (c // m) * (m - n)
        return zeros_for(r * c, self.sparsity)

    @property
    def effective_sparsity(self) -> float:
        return 1 - self.nm[0] / self.nm[1] if self.nm else self.sparsity


@dataclass
class PruneOutput:
    weight: torch.Tensor          # out × in, pruned (and possibly updated)
    info: dict


class Pruner:
    name: ClassVar[str]
    description: ClassVar[str]
    needs_calibration: ClassVar[bool] = True
    needs_gram: ClassVar[bool] = False

    def prune(self, weight: torch.Tensor, stats: InputStats | None, budget: Budget) -> PruneOutput:
        raise NotImplementedError


PRUNERS: dict[str, type[Pruner]] = {}


def register(cls: type[Pruner]) -> type[Pruner]:
    PRUNERS[cls.name] = cls
    return cls


def get_pruner(name: str, **kwargs) -> Pruner:
    from ..errors import ConfigError

    if name not in PRUNERS:
        raise ConfigError(f"unknown pruning method '{name}'; choose one of {', '.join(sorted(PRUNERS))}")
    return PRUNERS[name](**kwargs)
