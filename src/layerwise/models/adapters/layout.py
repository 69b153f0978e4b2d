"""Width structure of Llama-like blocks: KV groups (query heads with their KV head) and MLP channels.

What a width pruner may remove and what an exporter must record: per block, the head dimension, the
query heads per KV head, the KV heads and the MLP channels, read from the block's linears.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...errors import ConfigError
from .base import get_adapter


@dataclass
class LayerLayout:
    block: int
    hidden: int
    head_dim: int
    rep: int                  # query heads per KV head
    kv_heads: int
    intermediate: int

    @property
    def heads(self) -> int:
        return self.kv_heads * self.rep

    @property
    def group_params(self) -> int:
        hd, h = self.head_dim, self.hidden
        return self.rep * hd * h + 2 * hd * h + h * self.rep * hd

    @property
    def channel_params(self) -> int:
        return 3 * self.hidden

    @property
    def params(self) -> int:
        return self.kv_heads * self.group_params + self.intermediate * self.channel_params


def _mods(block):
    a, m = block.self_attn, block.mlp
    return a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj


def layouts(model: nn.Module) -> list[LayerLayout]:
    adapter = get_adapter(model)
    if adapter.name != "llama":
        raise ConfigError(f"width pruning supports Llama-like decoders (Llama, Qwen2, Mistral), not "
                          f"{model.config.model_type}")
    lay = adapter.attention_layout()
    hd = lay["head_dim"]
    rep = lay["heads"] // lay["kv_heads"]
    out = []
    for i, block in enumerate(adapter.block_list()):
        q, k, v, o, g, u, d = _mods(block)
        out.append(LayerLayout(i, q.in_features, hd, rep, k.out_features // hd, g.out_features))
    return out


def widths(model: nn.Module) -> list[dict]:
    return [{"block": lay.block, "num_attention_heads": lay.heads, "num_key_value_heads": lay.kv_heads,
             "intermediate_size": lay.intermediate} for lay in layouts(model)]


def uniform_widths(model: nn.Module) -> dict | None:
    w = widths(model)
    keys = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
    first = {k: w[0][k] for k in keys}
    return first if all({k: x[k] for k in keys} == first for x in w) else None
