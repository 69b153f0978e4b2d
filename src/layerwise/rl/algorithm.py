"""The RL algorithms `layerwise rl --algo` runs, and what they share.

An algorithm decides how a prompt's samples are drawn (its rollout forest) and which edges of that
forest are trained with which advantage; the trainer (`rl.trainer`) does the rest identically for
all of them: rewards, the clipped policy update, logging, checkpoints.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from ..errors import ConfigError
from ..registry import Method, Registry
from .sampler import Sampler
from .tree import Forest, Transitions

RL_ALGORITHMS: Registry = Registry("rl_algorithm", "--algo", "RL algorithm")


class RLAlgorithm(Method):
    needs: ClassVar[frozenset[str]] = frozenset({"whole_model", "training"})

    def check(self, sampler: Sampler) -> None:
        """Raise ConfigError if the settings do not fit the sampler (e.g. split points past the last step)."""

    def leaves_per_prompt(self) -> int:
        raise NotImplementedError

    def rollout(self, fn, cond: torch.Tensor, sampler: Sampler, shape, generators, iteration: int,
                total: int, on_step=None) -> Forest:
        raise NotImplementedError

    def select(self, forest: Forest, leaf_reward: torch.Tensor, iteration: int, total: int,
               generator: torch.Generator) -> Transitions:
        """The transitions trained this iteration (advantages attached)."""
        raise NotImplementedError


def check_steps(points, steps: int, what: str) -> None:
    bad = [p for p in points if not 0 <= p < steps]
    if bad:
        raise ConfigError(f"{what} {bad} lie beyond the {steps} sampling steps (valid: 0 to {steps - 1})")
