"""Structured width pruning: whole attention groups (KV groups, or heads) and MLP channels.

What a unit owns comes from the adapter (`models.adapters.layout`): for a Llama-like block a KV
group is its k/v rows, the rows of its query heads and the matching o_proj columns; for GPT-2 a head
is its rows in each q/k/v section of the fused c_attn and its c_proj columns; for BERT its
query/key/value rows and output.dense columns. Removing whole groups keeps the heads-per-KV ratio,
so the stock attention code runs with per-layer head counts.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..registry import Method, Registry
from ..errors import ConfigError
from ..models.adapters import get_adapter
from ..models.adapters.surgery import LayerCut, cut_index, shrink  # noqa: F401
from ..models.adapters.layout import (LayerLayout, Member, layouts, module_at, uniform_widths,  # noqa: F401
                                     weight_out_in, widths)



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


def _section(lay, m: Member, n_units: int, t: torch.Tensor) -> torch.Tensor:
    """The rows (axis 0) or columns (axis 1) of `t` that belong to member m's units."""
    span = slice(m.offset, m.offset + n_units * m.per_unit)
    return t[span] if m.axis == 0 else t[:, span]


def _per_unit(S: torch.Tensor, m: Member, n_units: int) -> torch.Tensor:
    """Sum of an element-score section per unit."""
    if m.axis == 0:
        return S.reshape(n_units, m.per_unit, -1).sum((1, 2))
    return S.reshape(S.shape[0], n_units, m.per_unit).sum((0, 2))


def _block_inputs(adapter, lay, block, stats, grads):
    """Weights, statistics and gradients of a block by scoring key (sections of fused matrices)."""
    W, St, G = {}, {}, {}
    for kind, n in (("groups", lay.kv_heads), ("channels", lay.intermediate)):
        for m in getattr(lay, kind):
            mod = module_at(block, m.path)
            W[m.key] = _section(lay, m, n, weight_out_in(mod).detach().double())
            if stats is not None:
                St[m.key] = stats[lay.block][m.path]
            if grads is not None:
                g = grads[f"{adapter.block_prefix(lay.block)}.{m.path}"]
                g = g.t() if weight_out_in(mod) is not mod.weight else g
                G[m.key] = _section(lay, m, n, g.double())
    return W, (St if stats is not None else None), (G if grads is not None else None)


def unit_scores(model: nn.Module, criterion: str, stats: dict | None = None, grads: dict | None = None
                ) -> list[dict]:
    """Per block: {"groups": [G], "channels": [I]} (higher = more important)."""
    crit = WIDTH_CRITERIA.create(criterion)
    adapter = get_adapter(model)
    out = []
    for lay, block in zip(layouts(model), adapter.block_list()):
        W, St, G = _block_inputs(adapter, lay, block, stats, grads)
        S = crit.element_scores(W, St, G)
        groups = sum(_per_unit(S[m.key], m, lay.kv_heads) for m in lay.groups)
        channels = sum(_per_unit(S[m.key], m, lay.intermediate) for m in lay.channels)
        out.append({"groups": [float(x) for x in groups], "channels": [float(x) for x in channels]})
    return out


# --- per-layer budgets ------------------------------------------------------------------------

def plan_cuts(model: nn.Module, scores: list[dict], remove_params: int, adaptive: bool,
              importance: list[float] | None = None, max_layer_removal: float = 0.9,
              amplitude: float = 1.0, multiple_of: int = 1) -> list[LayerCut]:
    """Remove `remove_params` block parameters in total.

    Uniform: every layer gives up the same share. Adaptive (Adapt-Pruner): a layer's share is scaled
    by (1 − A·J_l), J_l = its importance −cos(h_in, h_out) centred and scaled to [−1, 1], so the layers
    that change their input most are pruned least. Within a layer, ⌊share · G⌋ KV groups go (whole
    groups; never the last), then MLP channels make up the layer's parameter count; the lowest-scoring
    units go first. `multiple_of` N > 1: every layer keeps a multiple of N MLP channels (or all of
    them), the total kept as close to the budget as multiples of N allow (kernels run whole tiles).
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
    g_rms, c_rms = [], []
    for lay, n_rm in zip(lays, counts):
        share = n_rm / lay.params
        g_rms.append(min(int(np.floor(share * lay.kv_heads + 1e-9)), lay.kv_heads - 1))
        rest = n_rm - g_rms[-1] * lay.group_params
        c_rms.append(int(np.clip(round(rest / lay.channel_params), 0, lay.intermediate - 1)))
    if multiple_of > 1:
        kept = keep_multiples([lay.intermediate - c for lay, c in zip(lays, c_rms)],
                              [lay.intermediate for lay in lays], multiple_of)
        c_rms = [lay.intermediate - k for lay, k in zip(lays, kept)]
    cuts = []
    for lay, sc, g_rm, c_rm in zip(lays, scores, g_rms, c_rms):
        groups = sorted(int(i) for i in np.argsort(np.asarray(sc["groups"]), kind="stable")[:g_rm])
        channels = sorted(int(i) for i in np.argsort(np.asarray(sc["channels"]), kind="stable")[:c_rm])
        cuts.append(LayerCut(lay.block, groups, channels))
    return cuts


def keep_multiples(kept: list[int], full: list[int], n: int) -> list[int]:
    """Round each layer's kept count to a multiple of `n` (at least n, at most its full width; a full
    width that is not a multiple stays whole), the total as close to sum(kept) as the multiples allow:
    floors first, then one more multiple for the largest remainders."""
    if n < 1:
        raise ConfigError(f"--multiple-of must be >= 1 (got {n})")
    if any(f < n for f in full):
        raise ConfigError(f"--multiple-of {n} exceeds a layer's width ({min(full)} MLP channels)")
    units = [k / n for k in kept]
    top = [f // n for f in full]
    base = [min(max(1, int(np.floor(u))), t) for u, t in zip(units, top)]
    extra = int(round(sum(units))) - sum(base)
    order = sorted(range(len(kept)), key=lambda i: (-(units[i] - np.floor(units[i])), i))
    for i in order:
        if extra <= 0:
            break
        if base[i] < top[i]:
            base[i] += 1
            extra -= 1
    return [f if k == f else b * n for b, k, f in zip(base, kept, full)]


def removed_params(model: nn.Module, cuts: list[LayerCut]) -> int:
    lays = {lay.block: lay for lay in layouts(model)}
    return sum(len(c.remove_groups) * lays[c.block].group_params + len(c.remove_channels) * lays[c.block].channel_params
               for c in cuts)


# --- masking and physical removal ---------------------------------------------------------------

@torch.no_grad()
def apply_mask(model: nn.Module, cuts: list[LayerCut]) -> nn.Module:
    """Zero the removed groups and channels (weights and output biases) in place: the reference for
    `shrink`."""
    adapter = get_adapter(model)
    lays = layouts(model)
    for cut in cuts:
        block = adapter.block_list()[cut.block]
        for (path, axis), idx in cut_index(block, lays[cut.block], cut).items():
            if not idx:
                continue
            mod = module_at(block, path)
            w = weight_out_in(mod)
            if axis == 0:
                w[idx] = 0
                if mod.bias is not None:
                    mod.bias[idx] = 0
            else:
                w[:, idx] = 0
    return model
