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


@REWARDS.register
class JudgeLogProb(Reward):
    """log p(prompt class | sample) under a frozen judge classifier (the image setting's reward)."""

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = ("images: log-probability of the prompt's class under a frozen judge classifier "
                                  "(default zoo:judge-digits); metric: the judge's accuracy")

    class Config(MethodConfig):
        judge: str = "zoo:judge-digits"

    _model = None

    def judge(self):
        if self._model is None:
            from ..io.load import load_model

            self._model = load_model(self.config.judge).model.eval()
            for p in self._model.parameters():
                p.requires_grad_(False)
        return self._model

    def _logp(self, x, cond):
        with torch.no_grad():
            logits = self.judge()(pixel_values=x.float().clamp(-1, 1)).logits.float()
        return torch.log_softmax(logits, dim=-1), cond.long()

    def __call__(self, x, cond):
        lp, c = self._logp(x, cond)
        return lp[torch.arange(c.numel()), c]

    def metrics(self, x, cond):
        lp, c = self._logp(x, cond)
        return {"accuracy": float((lp.argmax(-1) == c).float().mean())}
