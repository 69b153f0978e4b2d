"""Attention a token receives, from a block's hooked q/k projections (never eager attention for the
whole model): the model keeps its fast attention kernel and only the rows a selector needs are
computed here, in chunks of queries so memory stays O(chunk × N).
"""
from __future__ import annotations

import math

import torch


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, n, _ = x.shape
    return x.view(B, n, n_heads, -1).transpose(1, 2)


@torch.no_grad()
def attention_received(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary,
                       n_heads: int, n_kv: int, allowed: torch.Tensor | None, last: torch.Tensor | None = None,
                       chunk: int = 256) -> torch.Tensor:
    """Mean attention each key receives, per sample: [B, n].

    q, k: q_proj / k_proj outputs [B, n, H·hd] / [B, n, Hkv·hd] of the computed tokens; cos/sin their
    rotary tables; allowed [B, n, n] (query i may see key j; None = causal). `last_only`: only the last
    query's row (FastV). Otherwise the attention a key receives is summed over the queries and heads
    that can see it and divided by their number, which removes the causal head start of early tokens.
    """
    qh, kh = _heads(q, n_heads), _heads(k, n_kv)
    qh, kh = rotary(qh, kh, cos, sin)
    if n_heads != n_kv:
        kh = kh.repeat_interleave(n_heads // n_kv, dim=1)
    B, H, n, hd = qh.shape
    scale = 1.0 / math.sqrt(hd)
    if last is not None:
        b = torch.arange(B, device=q.device)
        qh = qh[b, :, last][:, :, None]                                  # [B, H, 1, hd]
        ok = allowed[b, last][:, None] if allowed is not None else (
            torch.arange(n, device=q.device)[None, None] <= last[:, None, None])
        s = (qh.float() @ kh.float().transpose(-1, -2)) * scale
        p = torch.softmax(s.masked_fill(~ok[:, None], float("-inf")), dim=-1).nan_to_num(0.0)
        return p.sum(dim=(1, 2)) / H
    total = torch.zeros(B, n, dtype=torch.float32, device=q.device)
    seen = torch.zeros(B, n, dtype=torch.float32, device=q.device)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        s = (qh[:, :, r0:r1].float() @ kh.float().transpose(-1, -2)) * scale          # [B, H, c, n]
        if allowed is None:
            qi = torch.arange(r0, r1, device=q.device).view(-1, 1)
            ok = (torch.arange(n, device=q.device).view(1, -1) <= qi).expand(B, -1, -1)
        else:
            ok = allowed[:, r0:r1]
        s = s.masked_fill(~ok[:, None], float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)
        total += p.sum(dim=(1, 2))
        seen += ok.float().sum(dim=1) * H
    return total / seen.clamp_min(1.0)
