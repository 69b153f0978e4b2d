"""Width surgery: remove attention groups and MLP channels from blocks, as their adapter declares them.

Used by width pruning (on real weights) and by the per-layer-width loader (on an empty skeleton, to
give each block the saved shapes before the weights are read).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .base import CONV1D, get_adapter
from .layout import Member, layouts, module_at, weight_out_in


@dataclass
class LayerCut:
    block: int
    remove_groups: list[int] = field(default_factory=list)
    remove_channels: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _removed_index(m: Member, drop: list[int]) -> list[int]:
    return [m.offset + u * m.per_unit + j for u in drop for j in range(m.per_unit)]


def cut_index(block, lay, cut: LayerCut) -> dict[tuple[str, int], list[int]]:
    """(module path, axis) → indices of the out × in weight that the cut removes."""
    out: dict[tuple[str, int], list[int]] = {}
    for members, drop in ((lay.groups, cut.remove_groups), (lay.channels, cut.remove_channels)):
        for m in members:
            out.setdefault((m.path, m.axis), []).extend(_removed_index(m, drop))
    return out


def _resized(mod: nn.Module, keep: dict[int, torch.Tensor]) -> nn.Module:
    """A module of the same kind holding only the kept outputs (axis 0) and inputs (axis 1)."""
    w = weight_out_in(mod).detach()
    b = mod.bias.detach() if mod.bias is not None else None
    if 0 in keep:
        w = w.index_select(0, keep[0])
        b = b.index_select(0, keep[0]) if b is not None else None
    if 1 in keep:
        w = w.index_select(1, keep[1])
    dev, dtype = mod.weight.device, mod.weight.dtype
    if CONV1D and isinstance(mod, CONV1D):
        new = type(mod)(w.shape[0], w.shape[1]).to(device=dev, dtype=dtype)
        new.weight = nn.Parameter(w.t().contiguous(), requires_grad=mod.weight.requires_grad)
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=dtype, device=dev)
        new.weight = nn.Parameter(w.contiguous(), requires_grad=mod.weight.requires_grad)
    if b is not None:
        new.bias = nn.Parameter(b.contiguous(), requires_grad=mod.bias.requires_grad)
    return new


def _set_module(block: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(module_at(block, parent) if parent else block, name, new)


@torch.no_grad()
def shrink(model: nn.Module, cuts: list[LayerCut]) -> nn.Module:
    """Physically remove the groups and channels: the saved matrices are smaller."""
    adapter = get_adapter(model)
    lays = layouts(model)
    for cut in cuts:
        lay = lays[cut.block]
        block = adapter.block_list()[cut.block]
        per_module: dict[str, dict[int, torch.Tensor]] = {}
        for (path, axis), idx in cut_index(block, lay, cut).items():
            n = weight_out_in(module_at(block, path)).shape[axis]
            keep = torch.ones(n, dtype=torch.bool)
            if idx:
                keep[torch.tensor(idx)] = False
            per_module.setdefault(path, {})[axis] = torch.nonzero(keep).view(-1)
        for path, keep in per_module.items():
            _set_module(block, path, _resized(module_at(block, path), keep))
        adapter.set_widths(block, lay.kv_heads - len(cut.remove_groups),
                           lay.intermediate - len(cut.remove_channels))
    return model
