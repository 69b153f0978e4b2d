"""TAS supernet of the CIFAR-style ResNet: every convolution's width and every stage's depth relaxed.

Built from a trained dense network (weights shared: candidate width c uses the first c filters and
the first c input channels), with one batch-norm per candidate width (initialised from the dense
batch-norm's first c channels). Three ways to run it:

- `forward_search`: two widths sampled per convolution and mixed (channel-wise interpolation or
  zero-padding to the wider one), all blocks run and each stage's exits mixed by a Gumbel-softmax
  over its depth choices; returns the logits and the expected FLOPs (differentiable in α, β);
- `forward_genotype`: one width per convolution, one depth per stage, nothing mixed;
- `export(genotype)`: the physically smaller `CifarResNetForImageClassification` with the inherited
  weights, whose outputs equal `forward_genotype` (a block whose identity shortcut changes width gets
  a 1×1 convolution that selects or zero-pads channels, as the supernet does).

Deviation from the reference (recorded in the method's notes): it searches from random weights for
600 epochs; we warm-start the shared weights from the trained network and search for tens of epochs.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.adapters.space import SearchSpace
from ..models.resnet import (CifarResNetConfig, CifarResNetForImageClassification, conv_out, resnet_flops)
from .base import Supernet
from .relax import ALIGN, gumbel_softmax, sample_two, zero_pad


def _bn_list(dense: nn.BatchNorm2d, candidates) -> nn.ModuleList:
    out = nn.ModuleList()
    for c in candidates:
        bn = nn.BatchNorm2d(c, momentum=dense.momentum, eps=dense.eps)
        with torch.no_grad():
            bn.weight.copy_(dense.weight[:c])
            bn.bias.copy_(dense.bias[:c])
            bn.running_mean.copy_(dense.running_mean[:c])
            bn.running_var.copy_(dense.running_var[:c])
        out.append(bn)
    return out


class SearchConv(nn.Module):
    """A convolution of full width with one batch-norm per candidate output width."""

    def __init__(self, convbn, candidates):
        super().__init__()
        conv = convbn[0]
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.stride, self.padding = conv.stride, conv.padding
        self.candidates = tuple(candidates)
        self.bns = _bn_list(convbn[1], self.candidates)

    def run(self, x: torch.Tensor, choice, align) -> torch.Tensor:
        """choice: an int (one candidate) or ((j1, j2), weights)."""
        if isinstance(choice, int):
            c = self.candidates[choice]
            return self.bns[choice](F.conv2d(x, self.weight[:c, :x.shape[1]], None, self.stride, self.padding))
        (j1, j2), w = choice
        cmax = max(self.candidates[j1], self.candidates[j2])
        y = F.conv2d(x, self.weight[:cmax, :x.shape[1]], None, self.stride, self.padding)
        if j1 == j2:
            return self.bns[j1](y)
        out = 0
        for j, wj in ((j1, w[0]), (j2, w[1])):
            out = out + wj * align(self.bns[j](y[:, :self.candidates[j]]), cmax)
        return out


class SearchBlock(nn.Module):
    def __init__(self, block, cand1, cand2, stride: int):
        super().__init__()
        self.conv1 = SearchConv(block.conv1, cand1)
        self.conv2 = SearchConv(block.conv2, cand2)
        self.shortcut = SearchConv(block.shortcut, cand2) if block.shortcut is not None else None
        self.stride = stride

    def forward(self, x, c1, c2, align):
        y = self.conv2.run(F.relu(self.conv1.run(x, c1, align)), c2, align)
        if self.shortcut is not None:
            s = self.shortcut.run(x, c2, align)
        else:
            s = zero_pad(x, y.shape[1])
        return F.relu(y + s)


class SearchCifarResNet(Supernet):
    def __init__(self, model: CifarResNetForImageClassification, space: SearchSpace, align: str = "cwi"):
        super().__init__()
        if space.family != "cifar_resnet":
            raise ValueError(f"a {space.family} search space cannot build a CIFAR ResNet supernet")
        self.config = copy.deepcopy(model.config)
        self.space = space
        self.align_name = align
        self.align = ALIGN[align]
        wd = {w.name: w for w in space.widths}
        self.width_dims, self.depth_dims = space.widths, space.depths
        net = model.resnet
        self.stem = SearchConv(net.stem, wd["stem"].candidates)
        strides = [self.config.stage_strides[s] if b == 0 else 1
                   for s, stage in enumerate(self.config.block_widths) for b in range(len(stage))]
        self.blocks = nn.ModuleList(SearchBlock(blk, wd[f"blocks.{i}.conv1"].candidates, wd[f"blocks.{i}.conv2"].candidates,
                                                strides[i]) for i, blk in enumerate(net.blocks))
        self.classifier = copy.deepcopy(model.classifier)
        self.alphas = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(w.candidates))) for w in space.widths)
        self.betas = nn.ParameterList(nn.Parameter(1e-2 * torch.randn(len(d.candidates))) for d in space.depths)
        self._wi = {w.name: i for i, w in enumerate(space.widths)}

    # --- parameters ----------------------------------------------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # --- genotypes ---------------------------------------------------------------------------
    def genotype_config(self, genotype: dict) -> CifarResNetConfig:
        stages = []
        for d in self.depth_dims:
            keep = d.blocks[:genotype[d.name]]
            stages.append([[genotype[f"blocks.{i}.conv1"], genotype[f"blocks.{i}.conv2"]] for i in keep])
        c = self.config
        return CifarResNetConfig(num_channels=c.num_channels, image_size=c.image_size, num_labels=c.num_labels,
                                 stage_widths=c.stage_widths, stage_blocks=[len(s) for s in stages],
                                 stage_strides=c.stage_strides, stem_width=genotype["stem"], block_widths=stages,
                                 id2label=c.id2label, label2id=c.label2id)

    def _genotype_flops(self, genotype: dict) -> int:
        return resnet_flops(self.genotype_config(genotype))

    def removed_units(self, genotype: dict, dim) -> list[int]:
        """Channels a width choice removes: candidate c keeps the first c filters."""
        return list(range(genotype[dim.name], dim.full))

    def full_flops(self) -> int:
        return resnet_flops(self.config)

    # --- forward passes -----------------------------------------------------------------------
    @staticmethod
    def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def _index(self, name: str, value: int) -> int:
        return self.width_dims[self._wi[name]].candidates.index(value)

    def forward_genotype(self, pixels: torch.Tensor, genotype: dict) -> torch.Tensor:
        x = F.relu(self.stem.run(pixels, self._index("stem", genotype["stem"]), self.align))
        for d in self.depth_dims:
            for i in d.blocks[:genotype[d.name]]:
                x = self.blocks[i](x, self._index(f"blocks.{i}.conv1", genotype[f"blocks.{i}.conv1"]),
                                   self._index(f"blocks.{i}.conv2", genotype[f"blocks.{i}.conv2"]), self.align)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        feats = x.mean(dim=(2, 3))
        return F.linear(feats, self.classifier.weight[:, :feats.shape[1]], self.classifier.bias)

    def _search_logits(self, pixels: torch.Tensor, tau: float, generator: torch.Generator | None = None):
        picks = [sample_two(a, tau, generator) for a in self.alphas]
        x = F.relu(self.stem.run(pixels, picks[self._wi["stem"]], self.align))
        for d, beta in zip(self.depth_dims, self.betas):
            exits = []
            for rank, i in enumerate(d.blocks, 1):
                x = self.blocks[i](x, picks[self._wi[f"blocks.{i}.conv1"]], picks[self._wi[f"blocks.{i}.conv2"]],
                                   self.align)
                if rank in d.candidates:
                    exits.append(x)
            if len(exits) > 1:
                q = gumbel_softmax(beta, tau, generator)
                width = max(e.shape[1] for e in exits)
                x = sum(qd * self.align(e, width) for qd, e in zip(q, exits))
        return self._head(x)

    # --- expected cost ---------------------------------------------------------------------------
    def _width_dist(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        i = self._wi[name]
        return F.softmax(self.alphas[i], -1), torch.tensor(self.width_dims[i].candidates, dtype=torch.float32)

    def expected_flops(self) -> torch.Tensor:
        """E[FLOPs] with E[c_in]·E[c_out] per convolution, each block weighted by P(depth ≥ its rank),
        and a width-changing identity shortcut weighted by P(c_in ≠ c_out). Equals the genotype's
        FLOPs when every distribution is one-hot."""
        c = self.config
        size = c.image_size
        p_stem, v_stem = self._width_dist("stem")
        total = 2 * 9 * size * size * c.num_channels * (p_stem @ v_stem)
        cin_p, cin_v = p_stem, v_stem
        for d, beta, s in zip(self.depth_dims, self.betas, range(len(self.depth_dims))):
            pd = F.softmax(beta, -1)
            depth_vals = torch.tensor(d.candidates)
            exits_p = []
            for rank, i in enumerate(d.blocks, 1):
                keep = pd[depth_vals >= rank].sum()
                stride = c.stage_strides[s] if rank == 1 else 1
                size = conv_out(size, stride)
                p1, v1 = self._width_dist(f"blocks.{i}.conv1")
                p2, v2 = self._width_dist(f"blocks.{i}.conv2")
                e_in, e1, e2 = cin_p @ cin_v, p1 @ v1, p2 @ v2
                block = 2 * 9 * size * size * (e_in * e1 + e1 * e2)
                sc = 2 * size * size * e_in * e2
                if stride == 1 and self.blocks[i].shortcut is None:
                    sc = sc * (1 - _p_equal(cin_p, cin_v, p2, v2))
                total = total + keep * (block + sc)
                cin_p, cin_v = p2, v2
                if rank in d.candidates:
                    exits_p.append((pd[d.candidates.index(rank)], p2, v2))
            cin_p, cin_v = _mixture(exits_p)
        return total + 2 * (cin_p @ cin_v) * c.num_labels

    # --- export ----------------------------------------------------------------------------------
    @torch.no_grad()
    def export(self, genotype: dict) -> CifarResNetForImageClassification:
        """The searched network, physically smaller, with the supernet's weights."""
        config = self.genotype_config(genotype)
        model = CifarResNetForImageClassification(config).eval()
        cin = _copy_convbn(model.resnet.stem, self.stem, self._index("stem", genotype["stem"]), self.config.num_channels)
        k = 0
        for d in self.depth_dims:
            for i in d.blocks[:genotype[d.name]]:
                src, dst = self.blocks[i], model.resnet.blocks[k]
                mid = _copy_convbn(dst.conv1, src.conv1, self._index(f"blocks.{i}.conv1", genotype[f"blocks.{i}.conv1"]), cin)
                j2 = self._index(f"blocks.{i}.conv2", genotype[f"blocks.{i}.conv2"])
                out = _copy_convbn(dst.conv2, src.conv2, j2, mid)
                if src.shortcut is not None:
                    _copy_convbn(dst.shortcut, src.shortcut, j2, cin)
                elif dst.shortcut is not None:
                    _selection_shortcut(dst.shortcut, cin, out)
                cin, k = out, k + 1
        model.classifier.weight.copy_(self.classifier.weight[:, :cin])
        model.classifier.bias.copy_(self.classifier.bias)
        return model


def _p_equal(pa, va, pb, vb) -> torch.Tensor:
    eq = (va[:, None] == vb[None, :]).float()
    return pa @ eq @ pb


def _mixture(exits) -> tuple[torch.Tensor, torch.Tensor]:
    """The distribution of a stage's output width: exits weighted by their depth probabilities."""
    values = torch.cat([v for _, _, v in exits]).unique()
    probs = 0
    for q, p, v in exits:
        probs = probs + q * (p @ (v[:, None] == values[None, :]).float())
    return probs, values


def _copy_convbn(dst, src: SearchConv, j: int, cin: int) -> int:
    c = src.candidates[j]
    dst[0].weight.copy_(src.weight[:c, :cin])
    bn = src.bns[j]
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst[1], name).copy_(getattr(bn, name))
    return c


def _selection_shortcut(dst, cin: int, cout: int) -> None:
    """A 1×1 convolution + batch-norm that keeps the first min(cin, cout) channels (zero-pads the rest):
    what the supernet's identity shortcut does when the block changes width."""
    w = torch.zeros(cout, cin, 1, 1)
    n = min(cin, cout)
    w[torch.arange(n), torch.arange(n)] = 1.0
    dst[0].weight.copy_(w)
    bn = dst[1]
    bn.weight.fill_(1.0)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
