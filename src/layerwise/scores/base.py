"""The score registry. Each score's direction is defined here, once.

`higher_is_important=True` means a larger value marks a block/linear that matters more (keep it
denser / at more bits); `False` means the opposite. `importance(name, values)` converts any score to
"higher = more important" for allocators and rankings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    level: str                 # "block" or "linear" (linear scores are also averaged per block)
    higher_is_important: bool
    source: str                # "data" (calibration forward), "weights" (none), "loss" (forward with labels)
    description: str
    block_agg: str = "mean"    # how a linear-level score becomes a block score

    @property
    def needs(self) -> frozenset[str]:
        """In the registry's vocabulary (registry.NEEDS)."""
        return {"data": frozenset({"calibration"}), "weights": frozenset(),
                "loss": frozenset({"loss", "whole_model"})}[self.source]


SCORES: Registry[ScoreSpec] = Registry("score", "--scores", "score")
_BUILT_IN = [
    ScoreSpec("lim", "block", True, "data",
              "Layer Input Modification: -E[cos(h_in, h_out)] over tokens (position 0 skipped)"),
    ScoreSpec("bi", "block", True, "data",
              "Block Influence (ShortGPT): 1 - E[cos(h_in, h_out)] over tokens (position 0 skipped)"),
    ScoreSpec("zd", "block", False, "weights",
              "z-score share: fraction of a block's pooled weights with z = (w-mean)/std > 1"),
    ScoreSpec("alpha", "linear", False, "weights",
              "ESD power-law exponent (Hill, xmin by KS over the peak rule) of each weight matrix"),
    ScoreSpec("farms", "linear", False, "weights",
              "ESD power-law exponent on the pooled spectrum of fixed-aspect-ratio windows (FARMS)"),
    ScoreSpec("owl", "block", True, "data",
              "OWL outlier ratio: % of Wanda scores |W|·‖x‖ above M × the block mean"),
    ScoreSpec("zeroth_order", "linear", True, "loss",
              "ECoFLaP forward-only gradient-norm estimate Σ|L(θ+εz) - L(θ-εz)|/2ε per weight tensor",
              block_agg="sum"),
]
for _spec in _BUILT_IN:
    SCORES.register(_spec)



def get_score(name: str) -> ScoreSpec:
    return SCORES.get(name)


def parse_scores(spec: str | list[str]) -> list[str]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if "all" in names:
        names = list(SCORES)
    for n in names:
        get_score(n)
    return list(dict.fromkeys(names))


def importance(name: str, values) -> np.ndarray:
    """The score oriented so that higher always means more important."""
    v = np.asarray(values, dtype=np.float64)
    return v if get_score(name).higher_is_important else -v
