"""Local pruners: given one weight matrix, its input statistics and a budget, choose and apply a mask."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..engine.stats import InputStats
from ..registry import Method, Registry
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


class Pruner(Method):
    """A pruning criterion for one weight matrix. `needs` says which input statistics it reads:
    'calibration' (first and second moments of each input feature), 'gram' (X^T X)."""

    needs: ClassVar[frozenset[str]] = frozenset({"calibration"})

    @property
    def needs_gram(self) -> bool:
        return "gram" in self.needs

    def prune(self, weight: torch.Tensor, stats: InputStats | None, budget: Budget) -> PruneOutput:
        raise NotImplementedError


PRUNERS: Registry[type[Pruner]] = Registry("pruner", "--method", "pruning method")
register = PRUNERS.register


def get_pruner(name: str, config=None, **options) -> Pruner:
    return PRUNERS.create(name, config, **options)
