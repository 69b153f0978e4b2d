"""OptiPrune's LatentMapper: move the initial noise of a text-conditioned UNet until every subject of the
prompt gets attention (no neglect) and the subjects attend to different places (no entanglement).

One diagnostic pass = one differentiable UNet forward at the diagnosis noise level σ_d on z_T, with a
recording attention processor at the top resolution:

    A_c[x, y]  cross-attention of image position x to prompt token y (mean over heads and layers)
    S_cross  = 1 − min_y max_x A_c[x, y]                  over the subject tokens y (neglect)
    p_i      = argmax_x A_c[x, y_i]
    A_s^p    self-attention row of query position p (mean over heads and layers)
    S_self   = mean_{i<j} Σ_x min(A_s^{p_i}, A_s^{p_j}) / Σ_x (A_s^{p_i} + A_s^{p_j})   (entanglement)

z_T = μ + s·ε with ε fixed; Adam on (μ, log s) minimises S_cross + S_self + λ·KL(N(μ, s²) ‖ N(0, I))
until S_cross < τ_c and S_self < τ_s (per sample) or `steps` run out. With `prune_ratio` > 0, SimPrune
reduces the self-attention tokens of the diagnostic passes (OptiPrune's saving); the self-attention
rows of pruned queries are those of the token they copy, and keys that were pruned get no mass. The
selection is not differentiated (it is a choice); gradients flow through the kept tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError


class _Recording:
    """An attention processor that runs diffusers' default one and keeps its attention probabilities."""

    def __init__(self, name: str, store: "AttentionRecorder"):
        from diffusers.models.attention_processor import AttnProcessor

        self.name, self.store, self.inner = name, store, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        cross = encoder_hidden_states is not None
        orig = attn.get_attention_scores

        def scores(query, key, mask=None):
            probs = orig(query, key, mask)
            if self.store.active:
                B = hidden_states.shape[0]
                self.store.record(attn, cross, probs.view(B, -1, *probs.shape[1:]).mean(1))
            return probs

        attn.get_attention_scores = scores
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        finally:
            del attn.get_attention_scores


class AttentionRecorder:
    """Records head-averaged attention maps of every attention layer whose image grid is the top one."""

    def __init__(self, unet: nn.Module):
        self.unet = unet
        self.active = False
        self.cross: list[torch.Tensor] = []
        self.self_: list[torch.Tensor] = []
        self.tokens = None          # image positions of the top grid

    def record(self, attn, cross: bool, probs: torch.Tensor) -> None:
        red = getattr(attn, "_layerwise_reduction", None)
        if cross:
            if probs.shape[1] == self.tokens:
                self.cross.append(probs)
            return
        if red is not None and red.assign.shape[1] == self.tokens:
            # pruned self-attention: rows of the copied-from token, mass only on kept keys
            rows = probs.gather(1, red.assign[..., None].expand(-1, -1, probs.shape[2]))
            full = rows.new_zeros(rows.shape[0], self.tokens, self.tokens)
            self.self_.append(full.scatter(2, red.kept[:, None, :].expand(-1, self.tokens, -1), rows))
        elif probs.shape[1] == self.tokens and probs.shape[2] == self.tokens:
            self.self_.append(probs)

    def install(self):
        self._previous = dict(self.unet.attn_processors)
        self.unet.set_attn_processor({n: _Recording(n, self) for n in self._previous})
        return self

    def remove(self) -> None:
        self.unet.set_attn_processor(self._previous)

    def maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cross or not self.self_:
            raise ConfigError("no attention at the top resolution was recorded: the model needs cross- and "
                              "self-attention on its full latent grid")
        return torch.stack(self.cross).mean(0), torch.stack(self.self_).mean(0)


def attention_scores(cross: torch.Tensor, self_: torch.Tensor, subjects: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_cross, S_self) per sample from [B, N, T] cross maps and [B, N, N] self maps."""
    a = cross[:, :, subjects]                                        # [B, N, m]
    peak, where = a.max(dim=1)                                       # [B, m]
    s_cross = 1.0 - peak.min(dim=1).values
    rows = self_.gather(1, where[..., None].expand(-1, -1, self_.shape[2]))   # [B, m, N]
    pairs = [(i, j) for i in range(len(subjects)) for j in range(i + 1, len(subjects))]
    if not pairs:
        return s_cross, torch.zeros_like(s_cross)
    f = [torch.minimum(rows[:, i], rows[:, j]).sum(-1) / (rows[:, i] + rows[:, j]).sum(-1).clamp_min(1e-12)
         for i, j in pairs]
    return s_cross, torch.stack(f, 1).mean(1)


@dataclass
class MapperConfig:
    steps: int = 20
    lr: float = 0.05
    tau_cross: float = 0.2
    tau_self: float = 0.3
    # the KL term keeps z_T a plausible noise: at 0.01 (lr 0.1) the optimised noises drifted far enough
    # that half the samples of zoo:unet-digit-pairs lost a digit (benchmarks/optiprune.py)
    kl_weight: float = 1.0
    diag_sigma: float = 1.0
    prune_ratio: float = 0.0        # SimPrune inside the diagnostic passes
    seed: int = 0


@dataclass
class MapperResult:
    z: torch.Tensor                  # optimised initial noise
    s_cross: torch.Tensor            # final scores per sample
    s_self: torch.Tensor
    valid: torch.Tensor
    steps_used: torch.Tensor
    passes: int                      # diagnostic forward+backward passes (batched)
    seconds: float
    history: list = field(default_factory=list)


def diagnose(unet, z: torch.Tensor, states: torch.Tensor, subjects: list[int], cfg: MapperConfig,
             pruning=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One differentiable diagnostic pass: (S_cross, S_self) of every sample."""
    rec = AttentionRecorder(unet)
    rec.tokens = z.shape[-2] * z.shape[-1]
    rec.install()
    try:
        if pruning is not None:
            pruning.install()
        rec.active = True
        unet(z, torch.full((z.shape[0],), cfg.diag_sigma * 1000.0), encoder_hidden_states=states)
    finally:
        rec.active = False
        if pruning is not None:
            pruning.remove()
        rec.remove()
    return attention_scores(*rec.maps(), subjects)


def optimize_noise(unet, tokens: torch.Tensor, subjects: list[int], eps: torch.Tensor,
                   cfg: MapperConfig | None = None) -> MapperResult:
    """LatentMapper on a batch: `tokens` [B, T] prompt ids, `eps` [B, C, H, W] the initial noise to move."""
    from ..data.pairs import prompt_states
    from .diffusion import SpatialTokenPruning
    from .selectors import TOKEN_SELECTORS

    cfg = cfg or MapperConfig()
    if not subjects:
        raise ConfigError("the prompt names no subject to attend to")
    if not 0.0 <= cfg.prune_ratio < 1.0:
        raise ConfigError(f"prune_ratio must be in [0, 1) (got {cfg.prune_ratio})")
    states = prompt_states(tokens, unet.config.cross_attention_dim)
    for p in unet.parameters():
        p.requires_grad_(False)
    pruning = SpatialTokenPruning(unet, TOKEN_SELECTORS.create("simprune"), cfg.prune_ratio, seed=cfg.seed) \
        if cfg.prune_ratio > 0 else None
    B = eps.shape[0]
    mu = torch.zeros_like(eps, requires_grad=True)
    log_s = torch.zeros_like(eps, requires_grad=True)
    opt = torch.optim.Adam([mu, log_s], lr=cfg.lr)
    done = torch.zeros(B, dtype=torch.bool)
    steps_used = torch.zeros(B, dtype=torch.long)
    best_z = eps.clone()
    best_c, best_s = torch.zeros(B), torch.zeros(B)
    history, passes, t0 = [], 0, time.perf_counter()
    for step in range(cfg.steps + 1):
        z = mu + log_s.exp() * eps
        s_c, s_s = diagnose(unet, z, states, subjects, cfg, pruning)
        passes += 1
        ok = (s_c < cfg.tau_cross) & (s_s < cfg.tau_self)
        newly = ok & ~done
        best_z[newly] = z.detach()[newly]
        best_c[newly], best_s[newly] = s_c.detach()[newly], s_s.detach()[newly]
        done |= ok
        history.append({"step": step, "s_cross": float(s_c.detach().mean()), "s_self": float(s_s.detach().mean()),
                        "valid": float(done.float().mean())})
        if done.all() or step == cfg.steps:
            break
        steps_used += (~done).long()
        kl = 0.5 * (mu.pow(2) + (2 * log_s).exp() - 1 - 2 * log_s).flatten(1).mean(1)
        loss = ((s_c + s_s + cfg.kl_weight * kl) * (~done).float()).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # samples that never passed keep their last evaluated noise and scores
    best_z[~done] = z.detach()[~done]
    best_c[~done], best_s[~done] = s_c.detach()[~done], s_s.detach()[~done]
    return MapperResult(best_z, best_c, best_s, done, steps_used, passes, time.perf_counter() - t0, history)
