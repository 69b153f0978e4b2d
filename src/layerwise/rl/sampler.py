"""The stochastic sampler of a rectified-flow model and the exact log-probability of each transition.

Convention: `x_σ = (1 − σ)·x₀ + σ·ε`, σ from 1 (noise) to 0 (data), the model predicts the velocity
`v = ε − x₀`. One SDE step from σ_j to σ_{j+1} (Δ = σ_{j+1} − σ_j < 0) is the Euler step plus the
score drift correction, with Gaussian noise of standard deviation `η·sqrt(σ_j − σ_{j+1})`:

    x̂₀    = x − σ_j·v
    score = −(x − (1 − σ_j)·x̂₀) / σ_j²
    mean  = x + Δ·v − ½·η²·score·Δ
    x'    = mean + std·scale·z

`scale` is 1 except at the split steps of a tree, where the reference code multiplies the noise by
its split noise scale but keeps `std` in the log-probability (its log-probability is then not the
density the child was drawn from; `consistent=True` uses `std·scale` in both). The log-probability
is the **mean** over a sample's dimensions of the Gaussian log-density, as in the reference (so
ratio clipping means the same at every sample size). ODE steps (`eta = 0` or the deterministic steps
of the mixed sampler) have no density and carry log-probability 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)


def sigmas(steps: int, shift: float = 1.0) -> torch.Tensor:
    """σ_0 = 1 > σ_1 > … > σ_S = 0: `shift·s / (1 + (shift − 1)·s)` of s = linspace(1, 0, S + 1)."""
    if steps < 1:
        raise ValueError(f"the sampler needs at least one step (got {steps})")
    if shift <= 0:
        raise ValueError(f"shift must be positive (got {shift})")
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * s / (1 + (shift - 1) * s)).float()


@dataclass(frozen=True)
class Sampler:
    steps: int = 20
    shift: float = 1.0
    eta: float = 0.3

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (got {self.steps})")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0 (got {self.eta})")

    @property
    def sigma(self) -> torch.Tensor:
        return sigmas(self.steps, self.shift)

    # Every function below takes the step index of each row (a long tensor), so that the rollout
    # (one step for all rows) and the policy update (rows of many steps) run the same arithmetic:
    # with unchanged weights the recomputed log-probabilities equal the stored ones.
    def _col(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def std(self, j: torch.Tensor) -> torch.Tensor:
        s = self.sigma.to(j.device)
        return self.eta * torch.sqrt(s[j] - s[j + 1])

    def mean(self, x: torch.Tensor, v: torch.Tensor, j: torch.Tensor, sde: bool = True) -> torch.Tensor:
        """The mean of x_{j+1} given x_j and the velocity there (the Euler step for an ODE step)."""
        s = self.sigma.to(x.device)
        sj = self._col(s[j], x)
        delta = self._col(s[j + 1] - s[j], x)
        mean = x + delta * v
        if sde and self.eta > 0:
            x0 = x - sj * v
            score = -(x - (1 - sj) * x0) / (sj * sj)
            mean = mean - 0.5 * self.eta ** 2 * score * delta
        return mean

    def x0(self, x: torch.Tensor, v: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return x - self._col(self.sigma.to(x.device)[j], x) * v

    def logp(self, x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Mean over each sample's dimensions of log N(x_next; mean, std²); one value per row."""
        std = self._col(torch.as_tensor(std, device=mean.device).expand(mean.shape[0]), mean)
        lp = -((x_next - mean) ** 2) / (2 * std ** 2) - torch.log(std) - 0.5 * LOG_2PI
        return lp.reshape(lp.shape[0], -1).mean(dim=1)


def gaussian_logp_reference(x_next: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """The same density through `torch.distributions` (the tests' independent reference)."""
    d = torch.distributions.Normal(mean.double(), torch.full_like(mean.double(), std))
    return d.log_prob(x_next.double()).reshape(x_next.shape[0], -1).mean(dim=1)
