"""Token selectors, keyed by the names users type (`layerwise tokens --method NAME`).

A selector scores the tokens at a site (higher = compute); the routing keeps, per sample, the
best `1 − drop` share of the real tokens (the first one always). Trainable selectors also give soft
gates for training. `removes`: tokens dropped at the site stay out of every later block (FastV);
otherwise a dropped token only skips this block.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from ..registry import Method, MethodConfig, Registry
from .routing import Site, keep_from_scores

TOKEN_SELECTORS: Registry[type["TokenSelector"]] = Registry("token selector", "--method", "token selector")


class TokenSelector(Method):
    removes: ClassVar[bool] = False
    removes_in_encoder: ClassVar[bool] = False       # in an encoder: drop tokens (True) or merge them
    restore: ClassVar[str] = "skip"                  # "copy_prev": a dropped token takes its partner's update
    needs_attention: ClassVar[str | None] = None     # "all": attention received; "last": of the last query
    trainable: ClassVar[bool] = False
    router: nn.Module | None = None

    def scores(self, site: Site) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, site: Site) -> torch.Tensor:
        if getattr(self.config, "decide", "topk") == "threshold" and self.trainable:
            return (self.gates(site) >= 0.5) & site.real | _first(site)
        return keep_from_scores(self.scores(site), site)

    def gates(self, site: Site) -> torch.Tensor:
        raise NotImplementedError(f"token selector '{self.name}' is not trainable")

    def router_params_per_token(self) -> int:
        """Router parameters one token goes through at one site (for FLOPs)."""
        if self.router is None:
            return 0
        nets = getattr(self.router, "nets", None)
        total = sum(p.numel() for p in self.router.parameters())
        return total // len(nets) if nets is not None else total


def _first(site: Site) -> torch.Tensor:
    m = torch.zeros_like(site.real)
    return m.scatter(1, site.real.float().argmax(dim=1, keepdim=True), True)


@TOKEN_SELECTORS.register
class RandomSelector(TokenSelector):
    name = "random"
    description = ("Random tokens skip each block of a decoder, or leave an encoder (ViT) after a block's "
                   "attention (seeded per block; the floor every method must beat).")
    removes_in_encoder = True

    class Config(MethodConfig):
        seed: int = 0

    def encoder_reduce(self, h, metric, size, alive, r: int, index: int, mode: str):
        from .merging import random_keep

        g = torch.Generator().manual_seed(self.config.seed * 1000 + index)
        B = h.shape[0]
        pos = alive.nonzero()[:, 1].view(B, -1)            # every image keeps as many tokens
        keep = pos.gather(1, random_keep(B, pos.shape[1], r, g).to(pos.device))
        if mode == "mask":
            return h, size, torch.zeros_like(alive).scatter(1, keep, True)
        c = h.shape[-1]
        return (h.gather(1, keep[..., None].expand(-1, -1, c)), size.gather(1, keep[..., None]),
                torch.ones(keep.shape, dtype=torch.bool, device=h.device))

    def dense_select(self, x, h, w, ratio, g, halves=False):
        from .spatial import random_drop

        return random_drop(x, h, w, ratio, g, halves=halves)

    def scores(self, site):
        # one draw per (block, position among the real tokens): padding does not change a sample's choice
        g = torch.Generator().manual_seed(self.config.seed * 1000 + site.index)
        draw = torch.rand(site.real.shape[1], generator=g).to(site.real.device)
        pos = (site.real.long().cumsum(1) - 1).clamp_min(0)
        return draw[pos]


@TOKEN_SELECTORS.register
class SimPruneSelector(TokenSelector):
    name = "simprune"
    description = ("SimPrune (SiTo, OptiPrune's pruner) in a diffusion model's self-attention: the token of "
                   "highest similarity-plus-noise score in each 2x2 window is its base; the others most similar to "
                   "a base are dropped and take the output of their most similar kept token.")
    window = (2, 2)

    class Config(MethodConfig):
        alpha: float = Field(0.1, ge=0)     # noise on the scores: the choice changes across steps
        beta: float = Field(1.0, ge=0)      # weight of the summed similarity

    def dense_select(self, x, h, w, ratio, g, halves=False):
        from .spatial import simprune

        return simprune(x, h, w, ratio, g, alpha=self.config.alpha, beta=self.config.beta, halves=halves)


@TOKEN_SELECTORS.register
class ToMeSDSelector(TokenSelector):
    name = "tome-sd"
    description = ("ToMe for Stable Diffusion in a diffusion model's self-attention: one destination per 2x2 "
                   "window (random cell), the sources most similar to a destination are averaged into it before "
                   "attention and receive its output after.")
    window = (2, 2)

    class Config(MethodConfig):
        use_rand: bool = True               # random destination cell (False: the top-left one)

    def dense_select(self, x, h, w, ratio, g, halves=False):
        from .spatial import tome_sd

        return tome_sd(x, h, w, ratio, g, use_rand=self.config.use_rand, halves=halves)


@TOKEN_SELECTORS.register
class StaticSelector(TokenSelector):
    name = "static"
    description = ("FTP's static router: keep the first token, then the most recent ones; the earliest others "
                   "skip first (position only, the schedule search uses it).")

    def scores(self, site):
        return site.positions


@TOKEN_SELECTORS.register
class FastVSelector(TokenSelector):
    name = "fastv"
    description = ("FastV: at its block, keep the tokens the last query attends to most (hooked q/k of the block "
                   "before); the others are removed for every later block. In a vision-language model only vision "
                   "tokens are candidates.")
    removes = True
    needs_attention = "last"

    def scores(self, site):
        if site.att is None:
            raise RuntimeError("FastV needs the attention of the block before its site")
        s = site.att.clone()
        last = site.real.shape[1] - 1
        s[:, last] = float("inf")      # the query itself
        return s


@TOKEN_SELECTORS.register
class MergeSelector(TokenSelector):
    name = "tome"
    description = ("ToMe. In an encoder (ViT): bipartite soft matching of the head-averaged keys after each "
                   "block's attention, merged tokens averaged by size, proportional attention. In a decoder, "
                   "causal-safe: a token most similar (cosine of block inputs) to the token before it is not "
                   "computed and takes its partner's update (merges only backwards).")
    restore: ClassVar[str] = "copy_prev"

    class Config(MethodConfig):
        prop_attn: bool = True        # encoders: add log(size) to the attention logits of every key

    def encoder_reduce(self, h, metric, size, alive, r: int, index: int, mode: str):
        from .merging import tome_reduce

        h, size = tome_reduce(h, metric, size, r)
        return h, size, torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)

    def scores(self, site):
        h = torch.nn.functional.normalize(site.hidden.float(), dim=-1)
        sim = (h[:, 1:] * h[:, :-1]).sum(-1)
        prev_real = site.real[:, :-1]
        s = torch.cat([torch.full_like(sim[:, :1], float("inf")), -sim.masked_fill(~prev_real, -2.0)], dim=1)
        return s


class FTPRouter(nn.Module):
    """One router for every block: 4 features (position, attention received, its rank, the block's
    target sparsity) → 64 → 1."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.GELU(), nn.Linear(hidden, 1))
        with torch.no_grad():   # start as a static router: later tokens score higher
            self.net[2].bias.fill_(2.0)

    @staticmethod
    def features(site: Site) -> torch.Tensor:
        real = site.real
        n = real.sum(1, keepdim=True).float()
        att = site.att if site.att is not None else real.float() / n
        att = att.masked_fill(~real, 0.0)
        order = torch.argsort(-att.masked_fill(~real, -1.0), dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(real.shape[1], device=real.device).expand_as(order).contiguous())
        rank = rank.float() / (n - 1).clamp_min(1)
        s = torch.full_like(att, site.drop)
        return torch.stack([site.positions, att * n, rank, s], dim=-1).float()

    def forward(self, site: Site) -> torch.Tensor:
        return self.net(self.features(site)).squeeze(-1)


class HiddenRouter(nn.Module):
    """The same MLP on the token's hidden state (and the block's target sparsity): the ablation of the
    4 designed features, and, per block, a Mixture-of-Depths-style router."""

    def __init__(self, hidden_size: int, hidden: int = 64, blocks: int = 1):
        super().__init__()
        self.nets = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden_size + 1), nn.Linear(hidden_size + 1, hidden),
                                                nn.GELU(), nn.Linear(hidden, 1)) for _ in range(blocks))
        for net in self.nets:
            with torch.no_grad():
                net[3].bias.fill_(2.0)

    def forward(self, site: Site) -> torch.Tensor:
        net = self.nets[site.index if len(self.nets) > 1 else 0]
        h = site.hidden.detach().float()
        s = torch.full((*h.shape[:2], 1), site.drop, device=h.device)
        return net(torch.cat([h, s], dim=-1)).squeeze(-1)


class RoutedConfig(MethodConfig):
    decide: Literal["topk", "threshold"] = "topk"
    hidden: int = Field(64, ge=4, le=1024)


class _Routed(TokenSelector):
    """A selector whose scores come from a router trained with the model frozen."""

    trainable = True
    needs = frozenset({"training"})
    Config = RoutedConfig

    def scores(self, site):
        with torch.no_grad():
            return self.router(site)

    def gates(self, site):
        return torch.sigmoid(self.router(site))

    def build(self, model) -> nn.Module:
        raise NotImplementedError


class FTPConfig(RoutedConfig):
    # "all": attention received from every query of the previous block (the paper's feature, O(n²));
    # "last": from its last query only (FastV's row, O(n))
    attention: Literal["all", "last"] = "all"


@TOKEN_SELECTORS.register
class FTPSelector(_Routed):
    name = "ftp"
    description = ("FTP dynamic router: one shared MLP over position, attention received in the previous block, "
                   "its rank and the block's target sparsity; trained with the model frozen.")
    Config = FTPConfig

    @property
    def needs_attention(self) -> str:
        return self.config.attention

    def build(self, model):
        self.router = FTPRouter(self.config.hidden)
        return self.router


@TOKEN_SELECTORS.register
class HiddenStateSelector(_Routed):
    name = "ftp-hidden"
    description = "FTP's router fed the hidden state instead of the 4 designed features (the feature ablation)."

    def build(self, model):
        self.router = HiddenRouter(model.config.hidden_size, self.config.hidden, blocks=1)
        return self.router


@TOKEN_SELECTORS.register
class MoDSelector(_Routed):
    name = "mod"
    description = ("Mixture-of-Depths-style learned top-k: one router per block on the token's hidden state, "
                   "trained as FTP's router is (frozen model).")

    def build(self, model):
        from ..models.adapters import get_adapter

        self.router = HiddenRouter(model.config.hidden_size, self.config.hidden,
                                   blocks=get_adapter(model).num_blocks)
        return self.router


class CoViPALConfig(MethodConfig):
    text: bool = True                 # False: the query-agnostic ablation (the module sees vision tokens only)
    dim: int = Field(128, ge=8, le=1024)
    layers: int = Field(1, ge=1, le=4)
    guide: int = -1                   # stage-1 guidance block (negative: from the end); deeper than the site
    stage1_steps: int = Field(800, ge=0)
    stage2_steps: int = Field(300, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch: int = Field(16, ge=1)


@TOKEN_SELECTORS.register
class CoViPALSelector(TokenSelector):
    name = "covipal"
    description = ("CoViPAL: a plug-in module scores the vision tokens from the hidden states of vision and text "
                   "tokens entering its block and keeps the top share, the others removed for every later block; "
                   "trained with the model frozen (stage 1: attention of the text at a deeper block; stage 2: "
                   "end to end with log-retention key biases). Vision-language models.")
    removes = True
    trainable = True
    needs = frozenset({"training"})
    Config = CoViPALConfig

    def scores(self, site):
        if site.candidates is None:
            raise ConfigError("covipal prunes the vision tokens of a vision-language model")
        with torch.no_grad():
            return self.router(site.hidden, site.candidates, site.real)

    def build(self, model) -> nn.Module:
        from ..models.adapters import get_adapter
        from .covipal import PPM

        ad = get_adapter(model)
        if not hasattr(ad, "vision_tokens"):
            raise ConfigError(f"covipal prunes vision tokens; the {ad.name} adapter describes none")
        c = self.config
        self.router = PPM(ad.text_config().hidden_size, ad.num_vision_tokens(), c.dim, c.layers, text=c.text)
        return self.router
