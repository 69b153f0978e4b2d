"""Quantizer results in the GPTQ checkpoint layout (the codec itself is `io.gptq_pack`)."""
from __future__ import annotations

import torch

from ..io import gptq_pack
from ..io.gptq_pack import from_gptq, pack_rows, unpack_rows
from .base import QuantResult, QuantSpec


def to_gptq(res: QuantResult) -> dict[str, torch.Tensor]:
    """QuantResult → GPTQ (v1) tensors: qweight, qzeros (zero − 1), scales (fp16), g_idx."""
    return gptq_pack.to_gptq_tensors(res.q, res.zeros, res.scales, res.g_idx, res.spec.bits)


def gptq_compatible(spec: QuantSpec, rows: int, cols: int) -> bool:
    return gptq_pack.gptq_compatible(spec.bits, rows, cols)


__all__ = ["to_gptq", "from_gptq", "pack_rows", "unpack_rows", "gptq_compatible"]
