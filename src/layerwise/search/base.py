"""Shape search: methods that choose a width for every searchable layer and a depth for every stack
under a FLOPs target. Each returns a `Genotype`; the pipeline turns it into a physically smaller
network, optionally distils it, and records it as Plan rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field

from ..registry import Method, MethodConfig, Registry


class SearchConfig(MethodConfig):
    flops: float = Field(0.5, gt=0, le=1, description="target FLOPs as a fraction of the dense network's")
    tolerance: float = Field(0.05, gt=0, lt=1, description="band [flops − tolerance, flops] the result must land in")
    seed: int = 0


@dataclass
class Genotype:
    choices: dict                  # width dim name → width, depth dim name → blocks kept
    flops: int                     # analytic FLOPs of the resulting network
    full_flops: int
    method: str
    history: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.flops / self.full_flops

    def to_dict(self) -> dict:
        return {"choices": self.choices, "flops": self.flops, "full_flops": self.full_flops,
                "flops_ratio": self.ratio, "method": self.method, "notes": self.notes, "history": self.history}


class ShapeSearch(Method):
    """Chooses a genotype for a supernet under `config.flops`."""

    Config: ClassVar[type[SearchConfig]] = SearchConfig
    needs = frozenset({"whole_model"})

    def search(self, supernet, train) -> Genotype:
        raise NotImplementedError


SEARCHERS: Registry[type[ShapeSearch]] = Registry("shape search", "--method", "shape search method")
