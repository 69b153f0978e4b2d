"""Integer weight quantization: the grid, its parameters, and the result every quantizer returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..linalg import dequantize_groups
from ..registry import Method, Registry
from ..errors import ConfigError

MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 4
    group_size: int = 128          # -1 or 0 = one group per row (per channel)
    sym: bool = True
    min_zero: int = 0              # GPTQ's v1 checkpoint format cannot store a zero point of 0

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def groups(self, columns: int) -> int:
        g = self.group(columns)
        return (columns + g - 1) // g

    def group(self, columns: int) -> int:
        return columns if self.group_size <= 0 else min(self.group_size, columns)


def check_bits(bits: int, what: str = "bits") -> int:
    if not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS} (got {bits})")
    return bits


def find_params(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and zero point of one column group `w` [rows, g].

    Scales are rounded to float16 here, because that is how they are stored: dequantizing the packed
    checkpoint then reproduces the fake-quantized weights bit for bit.
    """
    w = w.float()
    lo = torch.minimum(w.min(1).values, torch.zeros(w.shape[0]))
    hi = torch.maximum(w.max(1).values, torch.zeros(w.shape[0]))
    if spec.sym:
        amax = torch.maximum(lo.abs(), hi)
        scale = 2 * amax / spec.maxq
        zero = torch.full_like(scale, float((spec.maxq + 1) // 2))
    else:
        scale = (hi - lo) / spec.maxq
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scale = scale.half().float()
    if not spec.sym:
        zero = torch.round(-lo / scale)
    zero = zero.clamp(spec.min_zero, spec.maxq)
    return scale, zero


def quantize_col(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes of a weight column (or matrix broadcasting against scale/zero)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)



@dataclass
class QuantResult:
    """Integer codes and their parameters for one `out × in` weight.

    `q` [out, in] codes in [0, 2^bits − 1]; `scales`, `zeros` [out, groups]; `g_idx` [in] = the group of
    each input column (columns may be processed in another order under act-order).
    """

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    spec: QuantSpec
    info: dict

    def dequantize(self) -> torch.Tensor:
        return dequantize_groups(self.q, self.scales, self.zeros, self.g_idx)


class Quantizer(Method):
    """Rounds one weight matrix to a `QuantSpec` grid; `needs` as for pruners."""

    needs: ClassVar[frozenset[str]] = frozenset()

    @property
    def needs_gram(self) -> bool:
        return "gram" in self.needs

    def quantize(self, weight: torch.Tensor, stats, spec: QuantSpec) -> QuantResult:
        raise NotImplementedError


QUANTIZERS: Registry[type[Quantizer]] = Registry("quantizer", "--quantizer", "quantizer")
register = QUANTIZERS.register


def get_quantizer(name: str, config=None, **options) -> Quantizer:
    return QUANTIZERS.create(name, config, **options)
