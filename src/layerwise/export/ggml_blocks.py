"""Integer codes → ggml block types, exactly where the grids coincide.

A symmetric b-bit result stores w = s·(q − 2^(b−1)) with an fp16 scale s per (row, column group).
ggml's legacy blocks hold 32 consecutive weights of one row with one fp16 scale d:

    Q4_0: w = d·(q − 8),   q ∈ [0, 15]        Q5_0: w = d·(q − 16), q ∈ [0, 31]
    Q8_0: w = d·q,         q ∈ [−128, 127]

so with d = s and q' = q − 2^(b−1) + offset the weights are reproduced bit for bit, for every group
size that is a multiple of 32 (each 32-block inside a group repeats the group's scale): b ≤ 4 → Q4_0,
b = 5 → Q5_0, b ≤ 8 → Q8_0. An asymmetric grid (zero point per group) fits Q8_0 exactly for b ≤ 7
(q − z ∈ [−127, 127]). Everything else (act-order, groups not aligned to 32) is requantized from the
dequantized weights by gguf's reference quantizer, and the error is measured and reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32
EXACT_TYPES = ("Q4_0", "Q5_0", "Q8_0")


@dataclass
class Codes:
    """One quantized weight: codes q [out, in], scales/zeros [out, groups], g_idx [in] (group of each column)."""

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        g = self.g_idx.long()
        return self.scales.float()[:, g] * (self.q.float() - self.zeros.float()[:, g])

    def permute_rows(self, order: torch.Tensor) -> "Codes":
        return Codes(self.q[order], self.scales[order], self.zeros[order], self.g_idx, self.bits)


def exact_type(c: Codes) -> str | None:
    """The smallest ggml block type that holds these codes bit for bit, or None."""
    rows, cols = c.q.shape
    if cols % BLOCK:
        return None
    blocks = torch.arange(cols) // BLOCK
    # every 32-block must lie inside one group, in column order (no act-order permutation)
    first = c.g_idx[::BLOCK].long()
    if not torch.equal(c.g_idx.long(), first[blocks]):
        return None
    if not torch.equal(first, torch.sort(first).values):
        return None
    z = c.zeros.float()
    sym = bool((z == 2 ** (c.bits - 1)).all())
    if sym and c.bits <= 4:
        return "Q4_0"
    if sym and c.bits == 5:
        return "Q5_0"
    if sym and c.bits <= 8:
        return "Q8_0"
    if c.bits <= 7:
        return "Q8_0"
    return None


def _block_params(c: Codes) -> tuple[np.ndarray, np.ndarray]:
    """Per-32-block fp16 scale [rows, nb] and signed codes q − zero [rows, cols]."""
    rows, cols = c.q.shape
    g = c.g_idx.long()
    per_col_zero = c.zeros.float()[:, g]
    signed = (c.q.float() - per_col_zero).round().to(torch.int16).numpy()
    d = c.scales.float()[:, g[::BLOCK]].numpy().astype(np.float16)
    return d, signed


def pack_exact(c: Codes, qtype: str) -> np.ndarray:
    """Bytes [rows, nb · block bytes] of `qtype` holding `c` exactly (see the module docstring)."""
    d, s = _block_params(c)
    rows, cols = s.shape
    nb = cols // BLOCK
    s = s.reshape(rows, nb, BLOCK)
    dbytes = d.reshape(rows, nb, 1).view(np.uint8)                           # 2 bytes, little endian
    if qtype == "Q8_0":
        qs = s.astype(np.int8).view(np.uint8)
        return np.concatenate([dbytes, qs], axis=2).reshape(rows, -1)
    if qtype == "Q4_0":
        u = (s + 8).astype(np.uint8)
        qs = u[..., :16] | (u[..., 16:] << 4)
        return np.concatenate([dbytes, qs], axis=2).reshape(rows, -1)
    if qtype == "Q5_0":
        u = (s + 16).astype(np.uint32)
        low = (u & 0x0F).astype(np.uint8)
        qs = low[..., :16] | (low[..., 16:] << 4)
        high = (u >> 4) & 1                                                   # bit j = 5th bit of weight j
        qh = (high << np.arange(BLOCK, dtype=np.uint32)).sum(axis=2, dtype=np.uint32)
        qh = qh.astype("<u4").reshape(rows, nb, 1).view(np.uint8)
        return np.concatenate([dbytes, qh, qs], axis=2).reshape(rows, -1)
    raise ValueError(f"no exact packing for {qtype}")


def requantize(w: torch.Tensor, bits: int, asym: bool) -> tuple[str, np.ndarray]:
    """The smallest legacy type with at least `bits` bits, quantized by gguf's reference code (lossy)."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    name = ("Q4_1" if asym else "Q4_0") if bits <= 4 else ("Q5_1" if asym else "Q5_0") if bits <= 5 else "Q8_0"
    return name, quants.quantize(w.float().numpy(), T[name])


def dequantize(data: np.ndarray, qtype: str) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    return quants.dequantize(data, T[qtype])


# --- K-quants for 2-, 3-, 4-, 5- and 6-bit codes ---------------------------------------------------------------
# Super-blocks of 256 weights in 16 sub-blocks of 16. The codes are kept; what is lossy is the per-sub-block
# scale, which K-quants store as a small integer times one fp16 per super-block:
#   Q2_K: w = d·sc·q − dmin·m,  q ∈ [0, 3], sc and m 4-bit      (a 2-bit grid s·(q − 2): sc·d ≈ s, m·dmin ≈ 2s)
#   Q3_K: w = d·(sc − 32)·v,    v ∈ [−4, 3], sc 6-bit           (a 3-bit grid s·(q − 4): v = q − 4)
#   Q6_K: w = d·sc·v,           v ∈ [−32, 31], sc int8           (a 6-bit grid s·(q − 32): v = q − 32)
#   Q4_K / Q5_K: 8 sub-blocks of 32, w = d·sc·q − dmin·m, q ∈ [0, 15] / [0, 31], sc and m 6-bit
#                (any 4/5-bit grid s·(q − z), symmetric or not: sc·d ≈ s, m·dmin ≈ s·z)
# Inside a super-block, weight e sits in half n = e // 128, shift j = (e % 128) // 32 and byte l = e % 32;
# its sub-block is 8n + 2j + l // 16.
QK = 256
K_TYPES = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 5: "Q5_K", 6: "Q6_K"}


def _k_layout():
    e = np.arange(QK)
    n, w = e // 128, e % 128
    j, lane = w // 32, w % 32
    return n, j, lane, 8 * n + 2 * j + lane // 16


def k_fits(c: Codes) -> bool:
    """Codes a K-quant can carry: rows of whole super-blocks, and one scale per sub-block (16 weights for
    2/3/6 bits, which must be symmetric; 32 for 4/5 bits, symmetric or not)."""
    rows, cols = c.q.shape
    if c.bits not in K_TYPES or cols % QK:
        return False
    if c.bits not in (4, 5) and not bool((c.zeros == 2 ** (c.bits - 1)).all()):
        return False
    sub = c.g_idx.long().view(-1, 32 if c.bits in (4, 5) else 16)
    return bool((sub == sub[:, :1]).all())


def _sub_scales(c: Codes) -> np.ndarray:
    rows, cols = c.q.shape
    g = c.g_idx.long()[::16]
    return c.scales.float()[:, g].numpy().reshape(rows, cols // QK, 16)


def _pack_q6k(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Q6_K: per 128-half n, weight l + 32k (k = 0..3, l = 0..31) keeps its low nibble in ql[64n + l + 32(k % 2)]
    (high nibble when k ≥ 2), its top two bits in qh[32n + l] at bit 2k, and uses scale 8n + 2k + l // 16."""
    rows, nb, _ = q.shape
    v = (q - 32 + 32).astype(np.uint8)                                       # stored with offset 32
    d = (s.max(-1) / 127).astype(np.float16)
    df = np.where(d.astype(np.float32) > 0, d.astype(np.float32), 1.0)[..., None]
    sc = np.clip(np.rint(s / df), -128, 127).astype(np.int8)
    ql = np.zeros((rows, nb, 128), dtype=np.uint8)
    qh = np.zeros((rows, nb, 64), dtype=np.uint8)
    e = np.arange(QK)
    n, w = e // 128, e % 128
    k, lane = w // 32, w % 32
    low, high = v & 0x0F, v >> 4
    for kk in range(4):
        for nn in range(2):
            sel = (k == kk) & (n == nn)
            ql_idx = 64 * nn + lane[sel] + 32 * (kk % 2)
            np.bitwise_or.at(ql, (slice(None), slice(None), ql_idx), low[..., sel] << (4 * (kk // 2)))
            np.bitwise_or.at(qh, (slice(None), slice(None), 32 * nn + lane[sel]), high[..., sel] << (2 * kk))
    out = np.concatenate([ql, qh, sc.view(np.uint8), d[..., None].view(np.uint8).reshape(rows, nb, 2)], axis=2)
    return out.reshape(rows, -1)


def _six_bit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative sub-block values [rows, nb, 8] → (fp16 super-block factor [rows, nb], 6-bit ints)."""
    f = (x.max(-1) / 63).astype(np.float16)
    ff = np.where(f.astype(np.float32) > 0, f.astype(np.float32), 1.0)[..., None]
    return f, np.clip(np.rint(x / ff), 0, 63).astype(np.uint8)


def _pack_q45k(c: Codes) -> tuple[str, np.ndarray]:
    """Q4_K / Q5_K: weight 64k + l (l < 32) sits in the low nibble of qs[32k + l], weight 64k + 32 + l in its
    high nibble; Q5_K keeps their fifth bits in qh[l] at bits 2k and 2k + 1. Sub-block j = weight // 32 uses
    (sc_j, m_j), six bits each, packed into 12 bytes as ggml's get_scale_min_k4 reads them."""
    rows, cols = c.q.shape
    nb = cols // QK
    q = c.q.numpy().astype(np.uint8).reshape(rows, nb, 4, 2, 32)           # [.., chunk k, half, lane l]
    g = c.g_idx.long()[::32]
    s = c.scales.float()[:, g].numpy().reshape(rows, nb, 8)
    mn = (c.scales.float() * c.zeros.float())[:, g].numpy().reshape(rows, nb, 8)
    d, sc = _six_bit(s)
    dmin, m = _six_bit(np.maximum(mn, 0))
    scales = np.zeros((rows, nb, 12), dtype=np.uint8)
    scales[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    scales[..., 4:8] = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    scales[..., 8:12] = (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4)
    qs = ((q[..., 0, :] & 0x0F) | ((q[..., 1, :] & 0x0F) << 4)).reshape(rows, nb, 128)
    head = [d[..., None].view(np.uint8).reshape(rows, nb, 2), dmin[..., None].view(np.uint8).reshape(rows, nb, 2),
            scales]
    if c.bits == 4:
        return "Q4_K", np.concatenate([*head, qs], axis=2).reshape(rows, -1)
    hi = (q >> 4) & 1                                                       # [.., k, half, l]
    shift = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)[..., None]
    qh = (hi << shift).sum(axis=(2, 3), dtype=np.uint32).astype(np.uint8)   # [.., 32]
    return "Q5_K", np.concatenate([*head, qh, qs], axis=2).reshape(rows, -1)


def pack_k(c: Codes) -> tuple[str, np.ndarray]:
    """(type, bytes [rows, nb · block bytes]) of 2/3/4/5/6-bit codes as Q2_K … Q6_K (scales rounded, codes
    kept)."""
    if c.bits in (4, 5):
        return _pack_q45k(c)
    rows, cols = c.q.shape
    nb = cols // QK
    q = c.q.numpy().astype(np.int64).reshape(rows, nb, QK)
    s = _sub_scales(c)                                                      # [rows, nb, 16]
    if c.bits == 6:
        return "Q6_K", _pack_q6k(q, s)
    n, j, lane, sub = _k_layout()
    byte = 32 * n + lane
    if c.bits == 2:
        d = (s.max(-1) / 15).astype(np.float16)
        df = np.where(d.astype(np.float32) > 0, d.astype(np.float32), 1.0)[..., None]
        sc = np.clip(np.rint(s / df), 0, 15).astype(np.uint8)
        dmin = (2 * s.max(-1) / 15).astype(np.float16)
        mf = np.where(dmin.astype(np.float32) > 0, dmin.astype(np.float32), 1.0)[..., None]
        m = np.clip(np.rint(2 * s / mf), 0, 15).astype(np.uint8)
        scales = sc | (m << 4)                                              # [rows, nb, 16]
        qs = np.zeros((rows, nb, 64), dtype=np.uint8)
        for jj in range(4):
            for nn in range(2):
                sel = (j == jj) & (n == nn)
                np.bitwise_or.at(qs, (slice(None), slice(None), byte[sel]), (q[..., sel] << (2 * jj)).astype(np.uint8))
        out = np.concatenate([scales, qs, d[..., None].view(np.uint8).reshape(rows, nb, 2),
                              dmin[..., None].view(np.uint8).reshape(rows, nb, 2)], axis=2)
        return "Q2_K", out.reshape(rows, -1)
    v = q - 4                                                               # [−4, 3]
    d = (s.max(-1) / 31).astype(np.float16)
    df = np.where(d.astype(np.float32) > 0, d.astype(np.float32), 1.0)[..., None]
    sc6 = (np.clip(np.rint(s / df), -32, 31) + 32).astype(np.uint8)        # 6-bit, offset 32
    low2 = np.where(v >= 0, v, v + 4).astype(np.uint8)
    high = (v >= 0).astype(np.uint8)
    qs = np.zeros((rows, nb, 64), dtype=np.uint8)
    hmask = np.zeros((rows, nb, 32), dtype=np.uint8)
    for jj in range(4):
        for nn in range(2):
            sel = (j == jj) & (n == nn)
            np.bitwise_or.at(qs, (slice(None), slice(None), byte[sel]), low2[..., sel] << (2 * jj))
            np.bitwise_or.at(hmask, (slice(None), slice(None), lane[sel]), high[..., sel] << (4 * nn + jj))
    packed = np.zeros((rows, nb, 12), dtype=np.uint8)
    for k in range(16):
        packed[..., k % 8] |= (sc6[..., k] & 0x0F) << (4 * (k // 8))
        packed[..., 8 + k % 4] |= ((sc6[..., k] >> 4) & 0x03) << (2 * (k // 4))
    out = np.concatenate([hmask, qs, packed, d[..., None].view(np.uint8).reshape(rows, nb, 2)], axis=2)
    return "Q3_K", out.reshape(rows, -1)
