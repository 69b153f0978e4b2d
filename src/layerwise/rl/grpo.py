"""Flat GRPO (DanceGRPO): G independent SDE trajectories per prompt from one shared initial noise,
the group-normalised terminal reward as the advantage of every step, and per trajectory a random
subset of ⌊timestep_fraction·S⌋ steps trained."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..registry import MethodConfig
from .algorithm import RL_ALGORITHMS, RLAlgorithm
from .tree import fuse_rewards, leaf_advantages, rollout, transitions


@RL_ALGORITHMS.register
class GRPO(RLAlgorithm):
    name: ClassVar[str] = "grpo"
    description: ClassVar[str] = ("flat GRPO (DanceGRPO): G independent SDE trajectories per prompt, group-normalised "
                                  "reward on every step, a timestep_fraction of the steps trained")

    class Config(MethodConfig):
        generations: int = Field(16, ge=2)
        timestep_fraction: float = Field(1.0, gt=0, le=1)
        same_noise: bool = True

    def leaves_per_prompt(self) -> int:
        return self.config.generations

    def rollout(self, fn, cond, sampler, shape, generators, iteration, total, on_step=None):
        return rollout(fn, cond, sampler, shape, generators, roots=self.config.generations, branch=1,
                       same_noise=self.config.same_noise, on_step=on_step)

    def select(self, forest, leaf_reward, iteration, total, generator):
        adv = leaf_advantages(forest, fuse_rewards(forest, leaf_reward))
        edges = forest.edges()
        S = forest.steps
        k = int(self.config.timestep_fraction * S)
        if k < S:
            keep = torch.zeros(forest.x.shape[0], dtype=torch.bool)
            roots = torch.nonzero(forest.parent < 0).flatten()
            depth_kept = torch.zeros(forest.x.shape[0], S, dtype=torch.bool)
            for r in roots.tolist():     # one permutation of the steps per trajectory
                depth_kept[r, torch.randperm(S, generator=generator)[:k]] = True
            keep[edges] = depth_kept[forest.root[edges], forest.depth[edges] - 1]
            edges = edges[keep[edges]]
        return transitions(forest, edges, adv)
