"""BranchGRPO: tree rollouts with shared prefixes, reward fusion up the tree, depth-wise advantages,
and width / depth / mixed ODE-SDE pruning of the edges that are trained.

One root per prompt (or `generations / branch^|P|` roots) splits into `branch` children at each split
point; the children of a split draw noise scaled by `split_noise_scale` while their log-probability
keeps the step's std, as in the reference (`consistent_split_logprob` uses the scaled std in both).
Pruning only changes which edges are trained, never the rollout or the rewards (Mix also makes the
steps outside its sliding window deterministic), and only while
`iteration < pruning_step_ratio · iterations`.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError
from ..registry import MethodConfig
from .algorithm import RL_ALGORITHMS, RLAlgorithm, check_steps
from .tree import (depth_advantages, depth_prune, fuse_rewards, leaf_advantages, rollout, transitions,
                   width_prune)


@RL_ALGORITHMS.register
class BranchGRPO(RLAlgorithm):
    name: ClassVar[str] = "branchgrpo"
    description: ClassVar[str] = ("BranchGRPO: tree rollouts sharing prefixes, fused rewards, depth-wise advantages, "
                                  "width/depth/mix pruning of the trained edges")

    class Config(MethodConfig):
        split_points: list[int] = Field(default_factory=lambda: [0, 3, 6, 9])
        branch: int = Field(2, ge=1)
        roots: int = Field(1, ge=1)
        split_noise_scale: float = Field(4.0, gt=0)
        consistent_split_logprob: bool = False
        fusion: Literal["mean", "prob"] = "mean"
        advantage: Literal["depth", "leaf"] = "depth"
        prune: Literal["none", "width", "depth", "mix"] = "none"
        width_ratio: float = Field(0.5, gt=0, le=1)
        width_mode: Literal[1, 2] = 2
        depth_prune: list[int] = Field(default_factory=lambda: [15, 16, 17, 18])
        depth_slide: bool = True
        slide_interval: int = Field(30, ge=1)
        stop_depth: int = Field(9, ge=1)
        mix_window: int = Field(4, ge=1)
        mix_stride: int = Field(4, ge=1)
        pruning_step_ratio: float = Field(1.0, ge=0, le=1)
        same_noise: bool = True

        @model_validator(mode="after")
        def _points(self):
            if len(set(self.split_points)) != len(self.split_points):
                raise ValueError(f"split_points repeat a step: {self.split_points}")
            return self

    def check(self, sampler):
        c = self.config
        check_steps(c.split_points, sampler.steps, "split points")
        if c.prune == "depth":
            bad = [d for d in c.depth_prune if not 1 <= d <= sampler.steps]
            if bad:
                raise ConfigError(f"depth_prune depths {bad} do not exist (child depths are 1 to {sampler.steps})")
        if c.prune == "mix" and c.mix_window > sampler.steps:
            raise ConfigError(f"mix_window {c.mix_window} is longer than the {sampler.steps} sampling steps")

    def leaves_per_prompt(self) -> int:
        return self.config.roots * self.config.branch ** len(self.config.split_points)

    def _pruning(self, iteration: int, total: int) -> bool:
        return self.config.prune != "none" and iteration < self.config.pruning_step_ratio * total

    def sde_window(self, iteration: int, steps: int) -> tuple[int, int]:
        c = self.config
        start = min((iteration // c.slide_interval) * c.mix_stride, steps - c.mix_window)
        return start, start + c.mix_window

    def pruned_depths(self, iteration: int) -> list[int]:
        c = self.config
        if not c.depth_prune:
            return []
        shift = iteration // c.slide_interval if c.depth_slide else 0
        shift = max(0, min(shift, min(c.depth_prune) - c.stop_depth))
        return [d - shift for d in c.depth_prune]

    def rollout(self, fn, cond, sampler, shape, generators, iteration, total, on_step=None):
        c = self.config
        ode = ()
        if c.prune == "mix" and self._pruning(iteration, total):
            lo, hi = self.sde_window(iteration, sampler.steps)
            ode = [j for j in range(sampler.steps) if not lo <= j < hi]
        return rollout(fn, cond, sampler, shape, generators, roots=c.roots, split_points=c.split_points,
                       branch=c.branch, split_noise_scale=c.split_noise_scale,
                       consistent_split_logprob=c.consistent_split_logprob, ode_steps=ode,
                       same_noise=c.same_noise, on_step=on_step)

    def select(self, forest, leaf_reward, iteration, total, generator):
        c = self.config
        fused = fuse_rewards(forest, leaf_reward, c.fusion)
        adv = depth_advantages(forest, fused) if c.advantage == "depth" else leaf_advantages(forest, fused)
        edges = forest.edges()
        edges = edges[forest.sde[edges]]            # ODE edges have no density to train
        if self._pruning(iteration, total):
            if c.prune == "width" and c.split_points and c.branch > 1:
                edges = width_prune(forest, edges, adv, max(c.split_points), c.width_ratio, c.width_mode)
            elif c.prune == "depth":
                edges = depth_prune(forest, edges, self.pruned_depths(iteration))
        return transitions(forest, edges, adv)
