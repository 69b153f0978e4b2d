"""Baseline shapes at equal FLOPs: uniform width scaling and random shapes.

Both land in the same band as TAS ([flops − tolerance, flops] of the dense FLOPs), so a comparison
after identical training measures the shape, not the budget.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..errors import ConfigError
from .base import SEARCHERS, Genotype, SearchConfig, ShapeSearch


def _full(supernet) -> dict:
    g = {w.name: w.full for w in supernet.width_dims}
    g.update({d.name: max(d.candidates) for d in supernet.depth_dims})
    return g


@SEARCHERS.register
class Uniform(ShapeSearch):
    name = "uniform"
    description = "every searchable width scaled by one factor (depth kept), the largest that meets the FLOPs target"
    needs = frozenset({"whole_model"})

    def search(self, supernet, train=None) -> Genotype:
        cfg = self.config
        full = supernet.full_flops()
        base = _full(supernet)

        def shape(f: float) -> dict:
            g = dict(base)
            for w in supernet.width_dims:
                if len(w.candidates) > 1:
                    g[w.name] = max(1, int(round(f * w.full)))
            return g

        lo, hi = 0.0, 1.0            # bisection on the factor: FLOPs grow monotonically with it
        for _ in range(40):
            mid = (lo + hi) / 2
            if supernet.genotype_flops(shape(mid)) <= cfg.flops * full:
                lo = mid
            else:
                hi = mid
        g = shape(lo)
        return Genotype(g, supernet.genotype_flops(g), full, self.name, notes={"factor": lo})


class RandomConfig(SearchConfig):
    tries: int = Field(100, ge=1)


@SEARCHERS.register
class RandomShape(ShapeSearch):
    name = "random"
    description = ("a seeded random genotype (random depths, random widths moved into the FLOPs band along random "
                   "preferences)")
    Config = RandomConfig
    needs = frozenset({"whole_model"})

    def search(self, supernet, train=None) -> Genotype:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        full = supernet.full_flops()
        lo, hi = (cfg.flops - cfg.tolerance) * full, cfg.flops * full
        # Rejection sampling alone almost never lands in a 5% band far from the mean of random shapes;
        # random widths walked into the band along random per-layer preferences stay random in shape.
        from .tas import repair

        for t in range(cfg.tries):
            g = {w.name: w.candidates[int(torch.randint(len(w.candidates), (1,), generator=gen))]
                 for w in supernet.width_dims}
            g.update({d.name: d.candidates[int(torch.randint(len(d.candidates), (1,), generator=gen))]
                      for d in supernet.depth_dims})
            prefs = [torch.randn(len(w.candidates), generator=gen) for w in supernet.width_dims]
            flat = [torch.zeros(len(d.candidates)) for d in supernet.depth_dims]
            g = repair(supernet, g, cfg.flops, cfg.tolerance, prefs, flat)
            f = supernet.genotype_flops(g)
            if lo <= f <= hi:
                return Genotype(g, f, full, self.name, notes={"tries": t + 1})
        raise ConfigError(f"no random shape in the FLOPs band [{cfg.flops - cfg.tolerance:.2f}, {cfg.flops:.2f}] "
                          f"after {cfg.tries} tries (random depths too shallow for it?); widen the tolerance")
