"""Layer-wise quantization-aware training with a learned rate: integer weights, per-layer decoders, per-layer
entropy models (the LilNetX / NIRVANA reparameterization), on any `nn.Module`.

Each selected weight W (a `nn.Linear` or `nn.Conv*` weight) is reparameterized by a real latent tensor L of
the same shape (registered with `torch.nn.utils.parametrize`, so the module's forward is unchanged):

    W = (round(L) + shift) · scale          round with a straight-through gradient

`scale` (a learned quantization step) and `shift` are the layer's decoder. A per-layer monotone CDF F
(Ballé's factorized prior: four elementwise stages x ← x·softplus(h) + b, x ← x + tanh(x)·tanh(a), then a
sigmoid) gives each integer q the probability F(q + ½) − F(q − ½), so Σ −log2 p(round(L)) is the layer's
rate in bits and differentiable in L (through the STE) and in F. Training minimises task loss + λ·bits.
At the end the integers round(L) are what gets stored (entropy coded), the decoder as two floats.

Latents move in integer units, so each layer's latent learning rate is the weight-space learning rate
divided by its step (`param_groups`): a step of 1e-3 and an Adam lr of 1e-3 in weight units make the
latents move one integer per step at most, whatever the layer's scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from ..registry import Method, MethodConfig, Registry

QAT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return _RoundSTE.apply(x)


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y)) if y < 20 else y


class BitEstimator(nn.Module):
    """A learned monotone CDF over the reals; `bits(q)` = Σ −log2 (F(q+½) − F(q−½)) for integer q."""

    def __init__(self, spread: float = 1.0):
        super().__init__()
        self.h = nn.Parameter(torch.tensor([_inv_softplus(1.0 / max(spread, 1e-3))] + [_inv_softplus(1.0)] * 3))
        self.b = nn.Parameter(torch.zeros(4))
        self.a = nn.Parameter(torch.zeros(3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        sp = nn.functional.softplus(self.h)
        ta = torch.tanh(self.a)
        for i in range(4):
            x = x * sp[i] + self.b[i]
            if i < 3:
                x = x + torch.tanh(x) * ta[i]
        return x

    def probability(self, q: torch.Tensor) -> torch.Tensor:
        lo, hi = self.logits(q - 0.5), self.logits(q + 0.5)
        # evaluate in the tail where the sigmoid is far from 1, so tiny masses do not cancel to 0
        sign = -torch.sign(lo + hi).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * hi) - torch.sigmoid(sign * lo)).clamp_min(1e-9)

    def bits(self, q: torch.Tensor) -> torch.Tensor:
        return -torch.log2(self.probability(q)).sum()


class EntropyQATWeight(nn.Module):
    """The parametrization W = (round(L) + shift)·scale, with its layer's entropy model."""

    def __init__(self, step: float, spread: float):
        super().__init__()
        if not step > 0:
            raise ConfigError(f"quantization step must be positive (got {step})")
        # the step is learned in log space, so one learning rate moves every layer's step by the same fraction
        self.log_scale = nn.Parameter(torch.tensor(math.log(float(step))))
        self.shift = nn.Parameter(torch.tensor(0.0))
        self.prob = BitEstimator(spread)
        self.step0 = float(step)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return (round_ste(latent) + self.shift) * self.scale

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach() / self.scale.detach() - self.shift.detach()

    def bits(self, latent: torch.Tensor) -> torch.Tensor:
        return self.prob.bits(round_ste(latent))

    def integers(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.round(latent.detach()).to(torch.int64)


@dataclass
class QATLayer:
    name: str
    module: nn.Module

    @property
    def param(self) -> EntropyQATWeight:
        return self.module.parametrizations.weight[0]

    @property
    def latent(self) -> nn.Parameter:
        return self.module.parametrizations.weight.original

    def bits(self) -> torch.Tensor:
        return self.param.bits(self.latent)

    def integers(self) -> torch.Tensor:
        return self.param.integers(self.latent)


class QATModel:
    """The handle `attach` returns: the reparameterized layers of a model, their rate and optimiser groups."""

    def __init__(self, model: nn.Module, layers: list[QATLayer]):
        self.model, self.layers = model, layers

    def __iter__(self) -> Iterator[QATLayer]:
        return iter(self.layers)

    def bits(self) -> torch.Tensor:
        """Estimated rate of every quantized weight, in bits (differentiable)."""
        return torch.stack([lay.bits() for lay in self.layers]).sum()

    def integers(self) -> dict[str, torch.Tensor]:
        return {lay.name: lay.integers() for lay in self.layers}

    def decoders(self) -> dict[str, tuple[float, float]]:
        return {lay.name: (float(lay.param.scale.detach()), float(lay.param.shift.detach())) for lay in self.layers}

    def param_groups(self, lr: float, decoder_lr: float | None = None, other: list | None = None) -> list[dict]:
        """Adam groups: each latent at lr / its initial step (integer units), decoders and entropy models at
        `decoder_lr`, the model's remaining parameters (biases, unquantized layers) at `lr`."""
        decoder_lr = lr if decoder_lr is None else decoder_lr
        groups = [{"params": [lay.latent], "lr": lr / lay.param.step0} for lay in self.layers]
        groups.append({"params": [p for lay in self.layers for p in (lay.param.log_scale, lay.param.shift)],
                       "lr": decoder_lr})
        groups.append({"params": [p for lay in self.layers for p in lay.param.prob.parameters()], "lr": decoder_lr})
        quantized = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in (other if other is not None else self.model.parameters()) if id(p) not in quantized]
        if rest:
            groups.append({"params": rest, "lr": lr})
        return groups

    def entropy_parameters(self) -> set[int]:
        return {id(p) for lay in self.layers for p in lay.param.prob.parameters()}

    def materialize(self) -> nn.Module:
        """Remove the reparameterization, leaving plain weights equal to the decoded integers."""
        for lay in self.layers:
            parametrize.remove_parametrizations(lay.module, "weight", leave_parametrized=True)
        return self.model


def _spread(latent: torch.Tensor) -> float:
    return float(latent.detach().float().std()) if latent.numel() > 1 else 1.0


def attach(model: nn.Module, *, bits: int | None = 8, step: Callable[[str, nn.Module], float] | None = None,
           select: Callable[[str, nn.Module], bool] = lambda n, m: True,
           init: Callable[[str, nn.Module], tuple[float, float]] | None = None) -> QATModel:
    """Reparameterize the weights of every selected Linear/Conv of `model` in place.

    The step of a layer is `step(name, module)` if given, else max|W| / (2^(bits−1) − 1) (so the current
    weights are kept to `bits` bits; 16 bits reproduces a float layer to ~1e-5 relative). `init(name, module)`
    = (r, β) instead draws fresh latents uniform in [−β, β] with step r/β (decoded weights ≈ U(−r, r), e.g.
    SIREN's initialisation)."""
    if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 24):
        raise ConfigError(f"QAT bits must be an integer from 2 to 24 (got {bits})")
    layers = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, QAT_TYPES) or not select(name, mod) or parametrize.is_parametrized(mod, "weight"):
            continue
        W = mod.weight.detach()
        if init is not None:
            r, beta = init(name, mod)
            s = r / beta
            with torch.no_grad():
                mod.weight.copy_((torch.rand_like(W) * 2 - 1) * beta * s)
        elif step is not None:
            s = float(step(name, mod))
        else:
            s = float(W.abs().max()) / (2 ** (bits - 1) - 1) or 1e-8
        spread = float(W.std() / s) if W.numel() > 1 else 1.0
        parametrize.register_parametrization(mod, "weight", EntropyQATWeight(s, spread))
        layers.append(QATLayer(name, mod))
    if not layers:
        raise ConfigError("no Linear or Conv layer selected for quantization-aware training")
    return QATModel(model, layers)


class QATMethod(Method):
    """Quantization-aware training: how weights are reparameterized and what the rate term is."""

    def attach(self, model: nn.Module, select=lambda n, m: True) -> QATModel:
        raise NotImplementedError


QAT: Registry[type[QATMethod]] = Registry("qat", "--qat", "quantization-aware training method")


@QAT.register
class EntropyQAT(QATMethod):
    name: ClassVar[str] = "entropy"
    description: ClassVar[str] = ("integer latents with a learned per-layer step and shift, straight-through "
                                  "rounding, a learned per-layer entropy model; loss + λ·bits")
    needs: ClassVar[frozenset[str]] = frozenset({"training"})

    class Config(MethodConfig):
        bits: int = 8          # initial grid of an existing layer: max|W| / (2^(bits−1) − 1)

    def attach(self, model: nn.Module, select=lambda n, m: True) -> QATModel:
        return attach(model, bits=self.config.bits, select=select)


__all__ = ["round_ste", "BitEstimator", "EntropyQATWeight", "QATLayer", "QATModel", "attach", "QAT", "EntropyQAT"]
