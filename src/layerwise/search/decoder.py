"""TAS supernet of a Llama-like decoder: every block's KV groups and MLP channels, and the depth.

Candidate width c keeps the c most important units of the block (ranked once, before the search, by
a width criterion of `prune.width`; default weight magnitude), so a genotype is exactly a width-pruning
plan and exports through the same surgery. The mixture needs no channel-wise interpolation: an MLP's
down-projection and an attention's output projection return to the hidden size, so mixing two widths
is mixing the projections' inputs with the mask Σ_j w_j·1[rank < c_j] (the projections are linear).
Depth mixes the residual stream after each candidate depth, Σ_d q_d·h_d, in front of the final norm;
all blocks run during the search, as in TAS.

FLOPs are per token at `seqlen` (2 per multiply-add; projections plus the attention products over the
full window, as dense attention computes them), over the blocks only (embedding and head excluded).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.adapters import get_adapter
from ..models.adapters.layout import layouts, module_at
from ..models.adapters.space import SearchSpace
from ..models.adapters.surgery import LayerCut
from .base import Supernet
from .relax import gumbel_softmax, sample_two


def block_flops(hidden: int, head_dim: int, rep: int, groups: float, channels: float, seqlen: int):
    """FLOPs per token of one decoder block with `groups` KV groups and `channels` MLP channels."""
    heads = groups * rep
    proj = 2 * hidden * head_dim * (2 * heads + 2 * groups)        # q, o and k, v
    attn = 2 * 2 * seqlen * head_dim * heads                        # q·kᵀ and p·v over the window
    mlp = 2 * 3 * hidden * channels                                 # gate, up, down
    return proj + attn + mlp


class SearchDecoder(Supernet):
    def __init__(self, model: nn.Module, space: SearchSpace, scores: list[dict] | None = None, seqlen: int = 256):
        super().__init__()
        if space.family != "decoder":
            raise ValueError(f"a {space.family} search space cannot build a decoder supernet")
        self.model = copy.deepcopy(model)
        self.space, self.seqlen, self.align_name = space, seqlen, "mask"
        self.width_dims, self.depth_dims = space.widths, space.depths
        self.adapter = get_adapter(self.model)
        self.lays = layouts(self.model)
        if scores is None:
            from ..prune.width import unit_scores

            scores = unit_scores(self.model, "magnitude")
        self.ranks = {}
        for lay, sc in zip(self.lays, scores):
            for unit, key in (("kv_group", "groups"), ("mlp_channel", "channels")):
                order = torch.argsort(torch.tensor(sc[key]), descending=True, stable=True)
                rank = torch.empty_like(order)
                rank[order] = torch.arange(order.numel())
                self.ranks[(lay.block, unit)] = rank
        self.alphas = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(w.candidates))) for w in space.widths)
        self.betas = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(d.candidates))) for d in space.depths)
        self._masks: dict = {}          # (block, unit) → unit mask
        self._depth = None              # (exit ranks, weights) or None
        self._exits: dict = {}
        self._handles: list = []
        self._attach()

    # --- hooks: masks on the projections' inputs, depth mixture before the final norm -------------
    def _attach(self) -> None:
        for lay, block in zip(self.lays, self.adapter.block_list()):
            for unit, members in (("kv_group", lay.groups), ("mlp_channel", lay.channels)):
                for m in members:
                    if m.axis == 1:
                        self._handles.append(module_at(block, m.path).register_forward_pre_hook(
                            self._mask_hook(lay.block, unit, m.per_unit)))
            self._handles.append(block.register_forward_hook(self._exit_hook(lay.block)))
        norm = self.adapter._resolve(self.model, self.adapter.final_norm_path)
        self._handles.append(norm.register_forward_pre_hook(self._norm_hook))

    def _detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _mask_hook(self, block: int, unit: str, per_unit: int):
        def hook(module, args):
            m = self._masks.get((block, unit))
            if m is None:
                return None
            return (args[0] * m.repeat_interleave(per_unit).to(args[0].dtype),) + tuple(args[1:])
        return hook

    def _exit_hook(self, block: int):
        def hook(module, args, out):
            if self._depth is not None:
                self._exits[block + 1] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    def _norm_hook(self, module, args):
        if self._depth is None:
            return None
        ranks, weights = self._depth
        mixed = sum(w * self._exits[r] for r, w in zip(ranks, weights))
        return (mixed,) + tuple(args[1:])

    # --- parameters ------------------------------------------------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @staticmethod
    def task_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))

    # --- genotypes -------------------------------------------------------------------------------
    def _kept(self, genotype: dict) -> list[int]:
        keep = set(range(len(self.lays)))
        for d in self.depth_dims:
            keep -= set(d.blocks[genotype[d.name]:])
        return sorted(keep)

    def _widths(self, genotype: dict, block: int) -> tuple[int, int]:
        return genotype[f"layers.{block}.attn"], genotype[f"layers.{block}.mlp"]

    def _genotype_flops(self, genotype: dict) -> int:
        total = 0
        for i in self._kept(genotype):
            lay = self.lays[i]
            g, c = self._widths(genotype, i)
            total += block_flops(lay.hidden, lay.head_dim, lay.rep, g, c, self.seqlen)
        return int(total)

    def full_flops(self) -> int:
        return int(sum(block_flops(lay.hidden, lay.head_dim, lay.rep, lay.kv_heads, lay.intermediate, self.seqlen)
                       for lay in self.lays))

    def expected_flops(self) -> torch.Tensor:
        dims = {w.name: (F.softmax(a, -1), torch.tensor(w.candidates, dtype=torch.float32))
                for w, a in zip(self.width_dims, self.alphas)}
        keep = {}                      # block → P(the depth keeps it); blocks of no depth dim stay
        for d, b in zip(self.depth_dims, self.betas):
            p = F.softmax(b, -1)
            vals = torch.tensor(d.candidates)
            for rank, i in enumerate(d.blocks, 1):
                keep[i] = p[vals >= rank].sum()
        total = 0
        for lay in self.lays:
            pg, vg = dims[f"layers.{lay.block}.attn"]
            pc, vc = dims[f"layers.{lay.block}.mlp"]
            total = total + keep.get(lay.block, 1.0) * block_flops(lay.hidden, lay.head_dim, lay.rep, pg @ vg, pc @ vc,
                                                          self.seqlen)
        return total

    # --- forward passes --------------------------------------------------------------------------
    def _unit_masks(self, picks: dict) -> None:
        """picks: width dim name → ((j1, j2), weights) or an int index."""
        self._masks = {}
        for w in self.width_dims:
            block, kind = w.block, w.unit
            rank = self.ranks[(block, kind)]
            choice = picks[w.name]
            if isinstance(choice, int):
                m = (rank < w.candidates[choice]).float()
            else:
                (j1, j2), wt = choice
                m = wt[0] * (rank < w.candidates[j1]).float() + wt[1] * (rank < w.candidates[j2]).float()
            self._masks[(block, kind)] = m

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        try:
            return self.model(input_ids=ids, use_cache=False).logits
        finally:
            self._exits = {}

    def _search_logits(self, ids: torch.Tensor, tau: float, generator: torch.Generator | None = None):
        self._unit_masks({w.name: sample_two(a, tau, generator) for w, a in zip(self.width_dims, self.alphas)})
        self._depth = None
        for d, b in zip(self.depth_dims, self.betas):   # one stack in a decoder
            if len(d.candidates) > 1:
                self._depth = (list(d.candidates), gumbel_softmax(b, tau, generator))
        try:
            return self._logits(ids)
        finally:
            self._depth = None

    def forward_genotype(self, ids: torch.Tensor, genotype: dict) -> torch.Tensor:
        self._unit_masks({w.name: w.candidates.index(genotype[w.name]) for w in self.width_dims})
        self._depth = None
        for d in self.depth_dims:
            if genotype[d.name] < len(d.blocks):
                self._depth = ([genotype[d.name]], [1.0])
        try:
            return self._logits(ids)
        finally:
            self._depth, self._masks = None, {}

    # --- export ----------------------------------------------------------------------------------
    def cuts(self, genotype: dict) -> list[LayerCut]:
        """The width-pruning cuts of a genotype: the units ranked at or beyond each kept width."""
        removed = {(w.block, w.unit): self.removed_units(genotype, w) for w in self.width_dims}
        return [LayerCut(lay.block, removed[(lay.block, "kv_group")], removed[(lay.block, "mlp_channel")])
                for lay in self.lays]

    def removed_units(self, genotype: dict, dim) -> list[int]:
        """Units a width choice removes: those ranked at or beyond the kept width."""
        return sorted(int(u) for u in (self.ranks[(dim.block, dim.unit)] >= genotype[dim.name]).nonzero())

    def removed_blocks(self, genotype: dict) -> list[int]:
        return sorted(set(range(len(self.lays))) - set(self._kept(genotype)))

    @torch.no_grad()
    def export(self, genotype: dict, weights: nn.Module | None = None) -> nn.Module:
        """The searched decoder, physically smaller (per-block widths, fewer blocks), with the weights of
        `weights` (default: the supernet's own, as trained by the search)."""
        from ..prune.depth import remove_blocks
        from ..prune.width import shrink

        self._detach()
        try:
            model = copy.deepcopy(weights if weights is not None else self.model)
        finally:
            self._attach()
        shrink(model, self.cuts(genotype))
        removed = self.removed_blocks(genotype)
        if removed:
            remove_blocks(model, removed)
        return model.eval()
