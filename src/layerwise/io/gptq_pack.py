"""Bit packing in the GPTQ checkpoint layout (the one vLLM and GPTQModel read).

Codes are packed as a continuous little-endian bit stream into int32 words: value j of a stream
occupies bits j·b … j·b+b−1. For 2, 4 and 8 bits this is GPTQ's layout; for 3 bits it is exactly its
"10⅔ values per word" layout. `qweight` packs along the input dimension ([in·b/32, out]); `qzeros`
along the output dimension ([groups, out·b/32]) and, in the GPTQ (v1) format, stores zero − 1.
"""
from __future__ import annotations

import math

import torch


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """values [n, k] in [0, 2^bits) → int32 [ceil(n·bits/32), k], packing along dim 0."""
    v = values.to(torch.int64)
    n, k = v.shape
    if 32 % bits == 0:      # 2, 4, 8 bits: each word holds whole values; the fields never overlap, so + is |
        per = 32 // bits
        words = -(-n // per)
        if words * per != n:
            v = torch.cat([v, v.new_zeros(words * per - n, k)])
        shifts = (torch.arange(per) * bits).view(1, -1, 1)
        return _to_int32((v.view(words, per, k) << shifts).sum(1))
    words = math.ceil(n * bits / 32)
    out = torch.zeros(words + 1, k, dtype=torch.int64)       # one spare word for the last spill
    # The layout repeats every `period` values (`span` words): one vectorized step per position in
    # the period instead of one per row (4864 rows of a down projection → at most 32 steps).
    period = 32 // math.gcd(bits, 32)
    span = period * bits // 32
    for j in range(min(period, n)):
        rows = v[j::period]
        word = (j * bits) // 32 + span * torch.arange(rows.shape[0])
        off = (j * bits) % 32
        out[word] |= (rows << off) & 0xFFFFFFFF
        spill = off + bits - 32
        if spill > 0:
            out[word + 1] |= rows >> (bits - spill)
    return _to_int32(out[:words])


def unpack_rows(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_rows`: int32 [words, k] → int64 [n, k]."""
    if 32 % bits == 0:      # 2, 4, 8 bits: no value spans two words, one shift per position in a word
        per = 32 // bits
        shifts = (torch.arange(per, dtype=torch.int32) * bits).view(1, -1, 1)
        vals = (packed.unsqueeze(1) >> shifts) & ((1 << bits) - 1)          # [words, per, k]
        return vals.reshape(-1, packed.shape[1])[:n].to(torch.int64)
    p = packed.to(torch.int64) & 0xFFFFFFFF
    pos = torch.arange(n) * bits
    w_idx, b_off = pos // 32, pos % 32
    lo = p[w_idx] >> b_off.view(-1, 1)
    spill = (b_off + bits - 32).clamp(min=0)
    hi_words = p[(w_idx + 1).clamp(max=p.shape[0] - 1)]
    hi = (hi_words << (bits - spill).view(-1, 1)) * (spill > 0).view(-1, 1)
    return (lo | hi) & ((1 << bits) - 1)


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    x = x & 0xFFFFFFFF
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def to_gptq_tensors(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor,
                    bits: int) -> dict[str, torch.Tensor]:
    """Codes q [out, in], zeros/scales [out, groups], g_idx [in] → GPTQ (v1) tensors."""
    if int(zeros.min()) < 1:
        raise ValueError("the GPTQ v1 format cannot store a zero point of 0 (quantize with min_zero=1)")
    return {"qweight": pack_rows(q.t(), bits),                           # [in·b/32, out]
            "qzeros": pack_rows(zeros - 1, bits).t().contiguous(),       # [groups, out·b/32]
            "scales": scales.t().contiguous().half(),                    # [groups, out]
            "g_idx": g_idx.to(torch.int32)}                              # [in]


def gptq_codes(t: dict[str, torch.Tensor], bits: int, in_features: int, out_features: int):
    """GPTQ (v1) tensors → codes q [out, in], zeros [out, groups], scales [out, groups] (float32), g_idx [in]."""
    q = unpack_rows(t["qweight"], bits, in_features).t()                           # [out, in]
    zeros = unpack_rows(t["qzeros"].t().contiguous(), bits, out_features) + 1      # [out, groups]
    return q, zeros, t["scales"].float().t(), t["g_idx"].long()


def from_gptq(t: dict[str, torch.Tensor], bits: int, in_features: int, out_features: int) -> torch.Tensor:
    """GPTQ (v1) tensors → dequantized float32 weight [out, in]."""
    q, zeros, scales, g = gptq_codes(t, bits, in_features, out_features)
    return scales[:, g] * (q.float() - zeros[:, g].float())


def packed_bits(bits: int, groups: int, rows: int, cols: int) -> dict:
    """Storage of one quantized linear in the GPTQ layout, in bits."""
    return {"weights": 32 * math.ceil(cols * bits / 32) * rows,
            "zeros": 32 * math.ceil(rows * bits / 32) * groups,
            "scales": 16 * rows * groups,
            "g_idx": 32 * cols}


def gptq_compatible(bits: int, rows: int, cols: int) -> bool:
    return (cols * bits) % 32 == 0 and (rows * bits) % 32 == 0 and bits in (2, 3, 4, 8)
