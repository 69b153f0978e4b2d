"""Shape search: methods that choose a width for every searchable layer and a depth for every stack
under a FLOPs target. Each returns a `Genotype`; the pipeline turns it into a physically smaller
network, optionally distils it, and records it as Plan rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field
from torch import nn

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


class Supernet(nn.Module):
    """What every supernet shares: the architecture logits (`alphas` per width dim, `betas` per depth
    dim), the argmax genotype, and FLOPs of genotypes (memoised: the search asks at every step, mostly
    for the same argmax). Subclasses build `width_dims`, `depth_dims`, the logits, and implement
    `_search_logits`, `expected_flops`, `_genotype_flops` and `full_flops`."""

    def __init__(self):
        super().__init__()
        self._flops_cache: dict = {}

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas) + list(self.betas)

    def argmax_genotype(self) -> dict:
        g = {w.name: w.candidates[int(a.argmax())] for w, a in zip(self.width_dims, self.alphas)}
        g.update({d.name: d.candidates[int(b.argmax())] for d, b in zip(self.depth_dims, self.betas)})
        return g

    def genotype_flops(self, genotype: dict) -> int:
        key = tuple(sorted(genotype.items()))
        if key not in self._flops_cache:
            self._flops_cache[key] = self._genotype_flops(genotype)
        return self._flops_cache[key]

    def forward_search(self, x, tau: float, generator=None, cost: bool = True):
        """(logits, expected FLOPs or None) of sampled widths and Gumbel-mixed depths; the weight step
        needs no cost term, so it skips computing one."""
        logits = self._search_logits(x, tau, generator)
        return logits, (self.expected_flops() if cost else None)


class ShapeSearch(Method):
    """Chooses a genotype for a supernet under `config.flops`."""

    Config: ClassVar[type[SearchConfig]] = SearchConfig
    needs = frozenset({"whole_model"})

    def search(self, supernet, train) -> Genotype:
        raise NotImplementedError


SEARCHERS: Registry[type[ShapeSearch]] = Registry("shape search", "--method", "shape search method")
