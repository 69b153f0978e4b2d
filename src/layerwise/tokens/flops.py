"""Analytic FLOPs of a Llama-style decoder forward with token routing (2 FLOPs per multiply-add).

A block computing n tokens (attention among those n):
    linears   2·n·(d·q + 2·d·kv + q·d + 3·d·m)      q = heads·head_dim, kv = kv_heads·head_dim, m = MLP
    attention 4·n²·q                                QKᵀ and AV over the full square, as kernels count it
plus the LM head on every position, and the selector's own work: the attention feature of the block
before a pruned site (2·n²·q for "all", 2·n·q for "last") and the router MLP.
"""
from __future__ import annotations

from ..models.adapters import get_adapter


def block_flops(n: int, d: int, q: int, kv: int, m: int) -> int:
    return 2 * n * (d * q + 2 * d * kv + q * d + 3 * d * m) + 4 * n * n * q


def forward_flops(model, kept: list[list[int]], seq_len: int, *, att_feature: str | None = None,
                  router_params: int = 0, pruned_sites: list[int] = ()) -> int:
    """FLOPs of one forward. kept[l][b]: tokens block l computed for sample b."""
    ad = get_adapter(model)
    lay = ad.attention_layout()
    d = model.config.hidden_size
    q, kv, m = lay["heads"] * lay["head_dim"], lay["kv_heads"] * lay["head_dim"], model.config.intermediate_size
    total = 0
    for l, per_sample in enumerate(kept):
        for n in per_sample:
            total += block_flops(n, d, q, kv, m)
            if att_feature and l + 1 in pruned_sites:
                total += 2 * n * n * q if att_feature == "all" else 2 * n * q
            if l in pruned_sites:
                total += 2 * seq_len * router_params
    batch = len(kept[0]) if kept else 0
    total += 2 * batch * seq_len * d * model.config.vocab_size
    return total


def dense_flops(model, batch: int, seq_len: int) -> int:
    L = get_adapter(model).num_blocks
    return forward_flops(model, [[seq_len] * batch for _ in range(L)], seq_len)


def encoder_flops(model, tokens: list[int], merged: list[int] | None = None, heads_metric: bool = False) -> int:
    """FLOPs of one image through a ViT-style encoder (2 per multiply-add): block l runs its attention on
    tokens[l] tokens and its MLP on merged[l] (the count after the block's merge; tokens[l] without one),
    plus the bipartite matching of a merge (an (n/2)² similarity of the head-averaged keys) when
    `heads_metric`. The classifier head is counted on the CLS token."""
    from ..models.adapters import get_adapter

    ad = get_adapter(model)
    c = model.config
    d, m = c.hidden_size, c.intermediate_size
    total = 0
    for l, block in enumerate(ad.block_list()):
        n = tokens[l]
        n2 = merged[l] if merged is not None else n
        q = block.attention.q_proj.out_features
        total += 2 * n * 4 * d * q + 4 * n * n * q         # q, k, v, o projections; QKᵀ and AV
        total += 2 * n2 * 2 * d * m                          # fc1, fc2
        if heads_metric and n2 < n:
            hd = block.attention.head_dim
            total += 2 * (n // 2) * ((n + 1) // 2) * hd
    return total + 2 * d * getattr(c, "num_labels", 0)
