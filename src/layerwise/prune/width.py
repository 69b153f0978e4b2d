"""Structured width pruning of Llama-like blocks: whole KV-head groups and MLP channels.

A KV group g is k/v rows [g·hd, (g+1)·hd), the rows of its query heads g·rep … g·rep+rep−1 in q_proj
(repeat_kv's head-major layout) and the matching o_proj columns. An MLP channel j is row j of gate
and up and column j of down. Removing a group keeps every layer's q-heads-per-KV-head ratio, so the
attention code runs unchanged with per-layer head counts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..registry import Method, Registry
from ..errors import ConfigError
from ..models.adapters import get_adapter
from ..models.adapters.layout import LayerLayout, _mods, layouts, uniform_widths, widths  # noqa: F401



@dataclass
class LayerCut:
    block: int
    remove_groups: list[int] = field(default_factory=list)
    remove_channels: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _group_rows(lay: LayerLayout, g: int) -> tuple[slice, slice]:
    """(q rows / o columns, k/v rows) of KV group g."""
    hd, rep = lay.head_dim, lay.rep
    return slice(g * rep * hd, (g + 1) * rep * hd), slice(g * hd, (g + 1) * hd)


# --- importance of groups and channels ---------------------------------------------------------

class WidthCriterion(Method):
    """Element scores of a block's seven matrices (keys q k v o g u d, each out × in); a KV group's
    or an MLP channel's importance is the sum over the elements it owns. Higher = more important."""

    def element_scores(self, W: dict, stats: dict | None, grads: dict | None) -> dict:
        raise NotImplementedError


WIDTH_CRITERIA: Registry[type[WidthCriterion]] = Registry("width criterion", "--criterion", "width criterion")
register_criterion = WIDTH_CRITERIA.register


@register_criterion
class MagnitudeWidth(WidthCriterion):
    name = "magnitude"
    description = "squared weights of the unit"

    def element_scores(self, W, stats, grads):
        return {n: w.pow(2) for n, w in W.items()}


@register_criterion
class WandaWidth(WidthCriterion):
    name = "wanda"
    description = "|W| x input-feature norm, summed over the unit"
    needs = frozenset({"calibration"})

    def element_scores(self, W, stats, grads):
        return {n: W[n].abs() * stats[n].mean_sq.sqrt().view(1, -1) for n in W}


@register_criterion
class FLAPWidth(WidthCriterion):
    name = "flap"
    description = "FLAP: fluctuation of each removable input channel x its squared column norm"
    needs = frozenset({"calibration", "first_moment"})

    def element_scores(self, W, stats, grads):
        S = {n: torch.zeros_like(W[n]) for n in W}
        S["o"] = W["o"].pow(2) * stats["o"].variance.view(1, -1)
        S["d"] = W["d"].pow(2) * stats["d"].variance.view(1, -1)
        return S


@register_criterion
class TaylorWidth(WidthCriterion):
    name = "taylor"
    description = "first-order Taylor |W x dL/dW| of the language-model loss"
    needs = frozenset({"gradients"})

    def element_scores(self, W, stats, grads):
        if grads is None:
            raise ConfigError("the taylor criterion needs gradients")
        return {n: (W[n] * grads[n]).abs() for n in W}


_LOCAL = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
          "mlp.up_proj", "mlp.down_proj")


def unit_scores(model: nn.Module, criterion: str, stats: dict | None = None, grads: dict | None = None
                ) -> list[dict]:
    """Per block: {"groups": [G], "channels": [I]} (higher = more important)."""
    crit = WIDTH_CRITERIA.create(criterion)
    adapter = get_adapter(model)
    out = []
    for lay, block in zip(layouts(model), adapter.block_list()):
        q, k, v, o, g, u, d = _mods(block)
        W = {n: m.weight.detach().double() for n, m in zip("qkvogud", (q, k, v, o, g, u, d))}
        G = None if grads is None else {n: grads[f"{adapter.block_prefix(lay.block)}.{p}"].double()
                                        for n, p in zip("qkvogud", _LOCAL)}
        S = crit.element_scores(W, None if stats is None else stats[lay.block], G)
        groups = []
        for gi in range(lay.kv_heads):
            qs, ks = _group_rows(lay, gi)
            groups.append(float(S["q"][qs].sum() + S["k"][ks].sum() + S["v"][ks].sum() + S["o"][:, qs].sum()))
        channels = (S["g"].sum(1) + S["u"].sum(1) + S["d"].sum(0)).tolist()
        out.append({"groups": groups, "channels": channels})
    return out


# --- per-layer budgets ------------------------------------------------------------------------

def plan_cuts(model: nn.Module, scores: list[dict], remove_params: int, adaptive: bool,
              importance: list[float] | None = None, max_layer_removal: float = 0.9,
              amplitude: float = 1.0) -> list[LayerCut]:
    """Remove `remove_params` block parameters in total.

    Uniform: every layer gives up the same share. Adaptive (Adapt-Pruner): a layer's share is scaled
    by (1 − A·J_l), J_l = its importance −cos(h_in, h_out) centred and scaled to [−1, 1], so the layers
    that change their input most are pruned least. Within a layer, ⌊share · G⌋ KV groups go (whole
    groups; never the last), then MLP channels make up the layer's parameter count; the lowest-scoring
    units go first.
    """
    from ..allocate.budget import fit_budget

    lays = layouts(model)
    sizes = [lay.params for lay in lays]
    total = sum(sizes)
    if not 0 < remove_params < total:
        raise ConfigError(f"cannot remove {remove_params} of {total} block parameters")
    target = remove_params / total
    if adaptive:
        if importance is None:
            raise ConfigError("adaptive width needs layer importance")
        imp = np.asarray(importance, dtype=np.float64)
        c = imp - imp.mean()
        J = c / np.abs(c).max() if np.abs(c).max() > 0 else np.zeros_like(c)
        ratios = target * (1 - amplitude * J)
    else:
        ratios = np.full(len(lays), target)
    counts = fit_budget(sizes, ratios, target, 0.0, max_layer_removal, what="parameter share removed")
    cuts = []
    for lay, sc, n_rm in zip(lays, scores, counts):
        share = n_rm / lay.params
        g_rm = min(int(np.floor(share * lay.kv_heads + 1e-9)), lay.kv_heads - 1)
        rest = n_rm - g_rm * lay.group_params
        c_rm = int(np.clip(round(rest / lay.channel_params), 0, lay.intermediate - 1))
        groups = sorted(int(i) for i in np.argsort(np.asarray(sc["groups"]), kind="stable")[:g_rm])
        channels = sorted(int(i) for i in np.argsort(np.asarray(sc["channels"]), kind="stable")[:c_rm])
        cuts.append(LayerCut(lay.block, groups, channels))
    return cuts


def removed_params(model: nn.Module, cuts: list[LayerCut]) -> int:
    lays = {lay.block: lay for lay in layouts(model)}
    return sum(len(c.remove_groups) * lays[c.block].group_params + len(c.remove_channels) * lays[c.block].channel_params
               for c in cuts)


# --- masking and physical removal ---------------------------------------------------------------

def _keep(n: int, drop: list[int]) -> torch.Tensor:
    m = torch.ones(n, dtype=torch.bool)
    if drop:
        m[torch.tensor(drop)] = False
    return m


@torch.no_grad()
def apply_mask(model: nn.Module, cuts: list[LayerCut]) -> nn.Module:
    """Zero the removed groups and channels (weights and biases) in place: the reference for `shrink`."""
    adapter = get_adapter(model)
    lays = layouts(model)
    for cut in cuts:
        lay = lays[cut.block]
        q, k, v, o, g, u, d = _mods(adapter.block_list()[cut.block])
        for gi in cut.remove_groups:
            qs, ks = _group_rows(lay, gi)
            for lin, rows in ((q, qs), (k, ks), (v, ks)):
                lin.weight[rows] = 0
                if lin.bias is not None:
                    lin.bias[rows] = 0
            o.weight[:, qs] = 0
        for j in cut.remove_channels:
            for lin in (g, u):
                lin.weight[j] = 0
                if lin.bias is not None:
                    lin.bias[j] = 0
            d.weight[:, j] = 0
    return model


def _linear(w: torch.Tensor, b: torch.Tensor | None, like: nn.Linear) -> nn.Linear:
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=like.weight.dtype, device=like.weight.device)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    new.weight.requires_grad_(like.weight.requires_grad)
    return new


@torch.no_grad()
def shrink(model: nn.Module, cuts: list[LayerCut]) -> nn.Module:
    """Physically remove the groups and channels: the saved matrices are smaller."""
    adapter = get_adapter(model)
    lays = layouts(model)
    for cut in cuts:
        lay = lays[cut.block]
        block = adapter.block_list()[cut.block]
        attn, mlp = block.self_attn, block.mlp
        q, k, v, o, g, u, d = _mods(block)
        gk = _keep(lay.kv_heads, cut.remove_groups)
        qmask = gk.repeat_interleave(lay.rep * lay.head_dim)
        kmask = gk.repeat_interleave(lay.head_dim)
        attn.q_proj = _linear(q.weight[qmask], q.bias[qmask] if q.bias is not None else None, q)
        attn.k_proj = _linear(k.weight[kmask], k.bias[kmask] if k.bias is not None else None, k)
        attn.v_proj = _linear(v.weight[kmask], v.bias[kmask] if v.bias is not None else None, v)
        attn.o_proj = _linear(o.weight[:, qmask], o.bias, o)
        cm = _keep(lay.intermediate, cut.remove_channels)
        mlp.gate_proj = _linear(g.weight[cm], g.bias[cm] if g.bias is not None else None, g)
        mlp.up_proj = _linear(u.weight[cm], u.bias[cm] if u.bias is not None else None, u)
        mlp.down_proj = _linear(d.weight[:, cm], d.bias, d)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = int(cm.sum())
    return model


