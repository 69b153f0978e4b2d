"""Allocators: per-block sparsity from scores and one global target.

Every allocator returns desired block ratios; `allocate` expands them to the linears of each block,
fits the exact budget (`fit_budget`) and writes the result into the Plan. Block granularity is what
the reference implementations use (OWL, AlphaPruning `block_wise`, ECoFLaP `block`).
"""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..registry import Method, MethodConfig, Registry
from .budget import fit_budget, linear_map


class Allocator(Method):
    """Desired per-block ratios from block scores and one target; `allocate` makes the budget exact."""

    scores: ClassVar[tuple[str, ...]] = ()     # block scores it reads (names in the score registry)

    def ratios(self, target: float, block_params: list[int], scores: dict) -> np.ndarray:
        raise NotImplementedError

    def esd_options(self):
        """How the ESD scores this allocator reads are computed (None: the defaults)."""
        return None


ALLOCATORS: Registry[type[Allocator]] = Registry("allocator", "--allocation", "allocation")
register = ALLOCATORS.register


@register
class Uniform(Allocator):
    name = "uniform"
    description = "every linear at the target sparsity"

    def ratios(self, target, block_params, scores):
        return np.full(len(block_params), target)


@register
class OWL(Allocator):
    name = "owl"
    description = "OWL: lower sparsity for blocks with more activation outliers (±λ)"
    scores = ("owl",)
    needs = frozenset({"calibration"})

    class Config(MethodConfig):
        owl_lambda: float = Field(0.08, ge=0, lt=1, description="sparsities spread over target ± lambda")

    def ratios(self, target, block_params, scores):
        d = np.asarray(scores["owl"], dtype=np.float64)
        if d.max() - d.min() < 1e-12:
            return np.full(d.size, target)
        dn = (d - d.min()) / (d.max() - d.min()) * 2 * self.config.owl_lambda
        w = np.asarray(block_params, dtype=np.float64)
        return target - (dn - (w * dn).sum() / w.sum())


@register
class AlphaPruning(Allocator):
    """Larger α (lighter tail, less trained) → more sparsity; mapped to [1−ε, 1+ε] × scale."""

    name = "alpha"
    description = "AlphaPruning: ESD α → sparsity, heavier-tailed blocks kept denser"
    scores = ("alpha",)

    class Config(MethodConfig):
        epsilon: float = Field(0.2, ge=0, lt=1, description="sparsity scale spread [1-eps, 1+eps]")
        xmin: Literal["peak", "mid", "search"] = Field("peak", description="power-law tail start rule")
        reference_exact: bool = Field(False, description="the reference repositories' exact fit (their "
                                                         "tail-start comparison, no zero-eigenvalue filter)")
        farms_rows: int | None = Field(None, ge=2, description="FARMS window rows m (default: smallest dim)")
        farms_windows: int = Field(8, ge=1, description="FARMS windows per dimension K")

    def esd_options(self):
        from ..scores.analyze import ESDOptions

        c = self.config
        return ESDOptions(xmin=c.xmin, reference_exact=c.reference_exact, farms_rows=c.farms_rows,
                          farms_windows=c.farms_windows)

    def ratios(self, target, block_params, scores):
        raw = linear_map(scores[self.scores[0]], self.config.epsilon)
        w = np.asarray(block_params, dtype=np.float64)
        return raw * target * w.sum() / (w * raw).sum()


@register
class FARMS(AlphaPruning):
    name = "farms"
    description = "FARMS: AlphaPruning's map on aspect-ratio-corrected α"
    scores = ("farms",)


@register
class ECoFLaP(Allocator):
    """Keep counts proportional to the zeroth-order block scores on top of a (1 − p_max) floor."""

    name = "ecoflap"
    description = "ECoFLaP: keep budget proportional to forward-only gradient scores, capped at p_max"
    scores = ("zeroth_order",)
    needs = frozenset({"loss", "whole_model"})

    class Config(MethodConfig):
        p_max: float | None = Field(None, gt=0, lt=1, description="maximum block sparsity (default target + 0.1)")

    def ratios(self, target, block_params, scores):
        p_max = self.config.p_max
        if p_max is None:
            p_max = min(target + 0.1, 0.99)
        if p_max < target:
            raise ConfigError(f"ECoFLaP's maximum block sparsity {p_max:g} is below the target {target:g}")
        n = np.asarray(block_params, dtype=np.float64)
        s = np.clip(np.asarray(scores["zeroth_order"], dtype=np.float64), 0, None)
        K = (1 - target) * n.sum()
        keep = np.ceil(n * (1 - p_max))
        active = (s > 0) & (keep < n)
        for _ in range(1000):
            R = K - keep.sum()
            if R <= 1e-9 or not active.any():
                break
            add = s * active / s[active].sum() * R
            keep = np.minimum(keep + add, n)
            active &= keep < n
        if K - keep.sum() > 1e-6:  # scores were all zero: spread the rest uniformly
            room = n - keep
            keep += room / room.sum() * (K - keep.sum())
        return 1 - keep / n


def get_allocator(name: str) -> type[Allocator]:
    return ALLOCATORS.get(name)


def allocator_options(name: str, options: dict) -> dict:
    """The subset of `options` that allocator `name` takes (CLI options are shared by all)."""
    fields = ALLOCATORS.get(name).Config.model_fields
    return {k: v for k, v in options.items() if k in fields and v is not None}


def allocate(name: str, plan, block_scores: dict[str, list[float]], target: float,
             max_sparsity: float = 0.99, **hparams):
    """Fill `plan` rows' sparsity with allocator `name` so the weighted mean is exactly `target`."""
    spec = get_allocator(name)
    if any(r.pattern != "unstructured" for r in plan.rows) and name != "uniform":
        raise ConfigError(f"allocation '{name}' works with unstructured sparsity, not N:M patterns")
    if not 0 <= target < 1:
        raise ConfigError(f"sparsity must be in [0, 1) (got {target:g})")
    if target > max_sparsity:
        raise ConfigError(f"target sparsity {target:g} exceeds --max-sparsity {max_sparsity:g}")
    blocks = sorted({r.block for r in plan.rows})
    bparams = [sum(r.params for r in plan.rows if r.block == b) for b in blocks]
    bscores = {k: [v[b] for b in blocks] for k, v in block_scores.items()}
    for k in spec.scores:
        if k not in bscores or not np.all(np.isfinite(bscores[k])):
            raise ConfigError(f"allocation '{name}' needs the '{k}' score for every block")
    desired = np.asarray(spec(hparams).ratios(target, bparams, bscores), dtype=np.float64)
    pos = {b: i for i, b in enumerate(blocks)}
    ratios = [desired[pos[r.block]] for r in plan.rows]
    counts = fit_budget([r.params for r in plan.rows], ratios, target, 0.0, max_sparsity)
    for r, c in zip(plan.rows, counts):
        r.sparsity = float(c) / r.params
        r.zeros_planned = int(c)
        for k in spec.scores:
            r.scores[k] = float(bscores[k][pos[r.block]])
    plan.meta.update({"allocation": name, "target_sparsity": target, "allocation_params": hparams,
                      "max_sparsity": max_sparsity})
    return plan
