"""Token pruning inside a diffusion model's self-attention: reduce → attn1 → restore.

Every diffusers `BasicTransformerBlock` (the UNet's spatial transformers, the DiT's blocks) computes
`x + gate · attn1(norm1(x))`. Wrapping `attn1` with a reduction of its input tokens and a restoration
of its output is exact bookkeeping: the norm before and the residual add after see the full map, so
a wrapper that prunes nothing is the stock block (tested), and no diffusers class is patched.

Only blocks whose token grid is at most `max_downsample` times coarser than the model's top grid are
wrapped (1: the highest resolution, where the tokens are many and redundant). The grid of each call
comes from a forward pre-hook on the model (the latent's height and width, divided by the DiT's patch
size). Each call's randomness is seeded by (seed, model call, block), so the same seed gives the same
samples after save → load; `cfg=True` makes the two halves of a guidance batch prune alike.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .spatial import check_ratio


def attention_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of every diffusers BasicTransformerBlock with a self-attention `attn1`."""
    out = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "BasicTransformerBlock" and hasattr(m, "attn1")]
    if not out:
        raise ConfigError(f"{type(model).__name__} has no diffusers transformer blocks (attn1) to prune tokens in")
    return out


def _patch(model) -> int:
    return int(getattr(model.config, "patch_size", None) or 1)


class SpatialTokenPruning:
    """Install with `install()` (or `with`); `remove()` restores the stock model."""

    def __init__(self, model: nn.Module, selector, ratio: float, max_downsample: int = 1, seed: int = 0,
                 cfg: bool = False):
        check_ratio(ratio, *getattr(selector, "window", (2, 2)))
        if not hasattr(selector, "dense_select"):
            raise ConfigError(f"token selector '{selector.name}' cannot prune a diffusion model's tokens; "
                              "use simprune, tome-sd or random")
        if max_downsample < 1:
            raise ConfigError(f"max_downsample must be at least 1 (got {max_downsample})")
        self.model, self.selector, self.ratio = model, selector, float(ratio)
        self.max_downsample, self.seed, self.cfg = max_downsample, seed, cfg
        self.sites = attention_sites(model)
        self.grid: tuple[int, int] | None = None
        self.calls = 0
        self.stats = {"calls": 0, "pruned_calls": 0, "tokens_in": 0, "tokens_computed": 0}
        self._installed = False

    def _pre_hook(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        p = _patch(self.model)
        self.grid = (x.shape[-2] // p, x.shape[-1] // p)
        self.calls += 1

    def _wrap(self, index: int, attn: nn.Module):
        orig = attn.forward

        def forward(hidden_states, *args, **kwargs):
            self.stats["calls"] += 1
            N = hidden_states.shape[1]
            if self.ratio == 0 or self.grid is None or kwargs.get("encoder_hidden_states") is not None:
                return orig(hidden_states, *args, **kwargs)
            H, W = self.grid
            ds = math.sqrt(H * W / N)
            if round(ds) > self.max_downsample or abs(ds - round(ds)) > 1e-6:
                return orig(hidden_states, *args, **kwargs)
            h, w = H // round(ds), W // round(ds)
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.calls) * 1009 + index)
            with torch.no_grad():
                red = self.selector.dense_select(hidden_states.detach(), h, w, self.ratio, g, halves=self.cfg)
            self.stats["pruned_calls"] += 1
            self.stats["tokens_in"] += N
            self.stats["tokens_computed"] += red.kept.shape[1]
            attn._layerwise_reduction = red          # for attention recorders (tokens.latent_mapper)
            try:
                return red.restore(orig(red.reduce(hidden_states), *args, **kwargs))
            finally:
                del attn._layerwise_reduction

        return forward

    def install(self):
        if self._installed:
            return self
        self.calls = 0
        for i, (_, block) in enumerate(self.sites):
            block.attn1.forward = self._wrap(i, block.attn1)
        self._hook = self.model.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        self.model._layerwise_tokens = self
        self._installed = True
        return self

    def remove(self) -> None:
        for _, block in self.sites:
            if "forward" in block.attn1.__dict__:
                del block.attn1.forward
        if getattr(self, "_hook", None) is not None:
            self._hook.remove()
            self._hook = None
        if getattr(self.model, "_layerwise_tokens", None) is self:
            del self.model._layerwise_tokens
        self._installed = False

    def computed_share(self) -> float:
        """Share of the wrapped attention calls' tokens that were computed."""
        return self.stats["tokens_computed"] / self.stats["tokens_in"] if self.stats["tokens_in"] else 1.0

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.remove()
