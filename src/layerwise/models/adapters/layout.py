"""Width structure of a block, declared by its adapter: coupled unit groups and the matrices they own.

Two unit kinds per block: attention groups (a KV head with its query heads; one head in multi-head
attention) and MLP channels. Each kind lists its `Member`s: a matrix of the block, the axis of its
`out × in` weight the units live on (0: rows/outputs, 1: columns/inputs), how many rows or columns
one unit owns, and where the kind's units start (fused q/k/v in one matrix). Width criteria score
units through this description, surgery removes them through it, and exporters record the result:
none of them knows a model class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...errors import ConfigError
from .base import CONV1D, get_adapter


@dataclass(frozen=True)
class Member:
    key: str            # scoring key: q k v o (attention), g u d (MLP)
    path: str           # module path inside the block
    axis: int           # 0: units are rows (outputs) of the out × in weight; 1: columns (inputs)
    per_unit: int       # rows or columns one unit owns
    offset: int = 0     # first row/column of this kind's units in the matrix (fused q/k/v)


@dataclass
class LayerLayout:
    block: int
    hidden: int
    head_dim: int
    rep: int                  # query heads per group (1 for multi-head attention)
    kv_heads: int             # attention groups
    intermediate: int         # MLP channels
    groups: list[Member] = field(default_factory=list)
    channels: list[Member] = field(default_factory=list)
    group_params: int = 0     # weights one group owns, over all its members
    channel_params: int = 0

    @property
    def heads(self) -> int:
        return self.kv_heads * self.rep

    @property
    def params(self) -> int:
        return self.kv_heads * self.group_params + self.intermediate * self.channel_params


def module_at(block: nn.Module, path: str) -> nn.Module:
    m = block
    for part in path.split("."):
        m = getattr(m, part)
    return m


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight as `out × in` (GPT-2's Conv1D stores `in × out`)."""
    w = module.weight
    return w.t() if CONV1D and isinstance(module, CONV1D) else w


def _other_dim(module: nn.Module, axis: int) -> int:
    return weight_out_in(module).shape[1 - axis]


def layouts(model: nn.Module) -> list[LayerLayout]:
    adapter = get_adapter(model)
    if not hasattr(adapter, "width_units"):
        raise ConfigError(f"width pruning is not described for {model.config.model_type} models "
                          "(its adapter declares no unit groups)")
    out = []
    for i, block in enumerate(adapter.block_list()):
        u = adapter.width_units(block)
        gp = sum(m.per_unit * _other_dim(module_at(block, m.path), m.axis) for m in u["groups"])
        cp = sum(m.per_unit * _other_dim(module_at(block, m.path), m.axis) for m in u["channels"])
        out.append(LayerLayout(i, u["hidden"], u["head_dim"], u["rep"], u["groups_n"], u["channels_n"],
                               u["groups"], u["channels"], gp, cp))
    return out


def widths(model: nn.Module) -> list[dict]:
    return [{"block": lay.block, "num_attention_heads": lay.heads, "num_key_value_heads": lay.kv_heads,
             "intermediate_size": lay.intermediate} for lay in layouts(model)]


def uniform_widths(model: nn.Module) -> dict | None:
    w = widths(model)
    keys = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
    first = {k: w[0][k] for k in keys}
    return first if all({k: x[k] for k in keys} == first for x in w) else None
