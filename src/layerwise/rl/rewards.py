"""Rewards for aligning a generator, registered under the names `--reward` takes.

A reward scores a batch of samples against their conditions, `reward(x, cond) → (n,)`, frozen
during training; `metrics(x, cond)` adds what a report shows beside it (prompt accuracy, ...).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..data import gmm
from ..registry import Method, MethodConfig, Registry

REWARDS: Registry = Registry("reward", "--reward", "reward")


class Reward(Method):
    def __call__(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, x: torch.Tensor, cond: torch.Tensor) -> dict:
        return {}


@REWARDS.register
class GMMTarget(Reward):
    """The smooth reward of the 2-D mixture setting: exp(−‖x − μ_c‖² / (2·width²)) for prompt c."""

    name: ClassVar[str] = "gmm"
    description: ClassVar[str] = ("2-D mixture: exp(-|x - mu_c|^2 / (2 w^2)) of the sample to its prompt's mode "
                                  "(smooth, in [0, 1])")

    class Config(MethodConfig):
        width: float = Field(0.5, gt=0)
        modes: int = Field(gmm.MODES, ge=2)

    def __call__(self, x, cond):
        mu = gmm.means(self.config.modes)[cond.long()]
        d2 = ((x.reshape(x.shape[0], -1).float() - mu) ** 2).sum(dim=-1)
        return torch.exp(-d2 / (2 * self.config.width ** 2))

    def metrics(self, x, cond):
        hit = gmm.nearest_mode(x, self.config.modes) == cond.long()
        return {"accuracy": float(hit.float().mean())}


def check_rewards(r: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if not isinstance(r, torch.Tensor) or r.shape != (n,):
        from ..errors import ConfigError

        raise ConfigError(f"reward '{name}' must return one value per sample, shape ({n},) "
                          f"(got {getattr(r, 'shape', type(r).__name__)})")
    return r.detach().float()
