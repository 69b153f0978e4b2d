"""Choosing which tokens of a dense spatial map (a diffusion model's latent grid) a sub-module computes.

Every method returns a `Reduction`: `kept` [B, K] positions that are computed and `assign` [B, N],
the slot in 0..K−1 whose output each position receives afterwards (a kept position receives its own;
a pruned one a copy). With `average`, a slot's input is the mean of every position assigned to it
(ToMe-SD's merge); otherwise the kept position's own input (SiTo/SimPrune's drop, random drop).

Windows are sy × sx cells of the h × w grid; each holds one base (or destination) token, so at most
1 − 1/(sx·sy) of the tokens can go. Randomness comes from a passed generator; with `halves` (a
classifier-free-guidance batch: unconditional rows then conditional rows) both halves get the same
random draws, so the two predictions that guidance subtracts prune alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

CHUNK = 1024       # rows of a similarity matrix computed at a time (N × N at 96×96 is 340 MB a sample)


@dataclass
class Reduction:
    kept: torch.Tensor          # [B, K] positions computed, ascending
    assign: torch.Tensor        # [B, N] slot of each position
    average: bool = False

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        if not self.average:
            return x.gather(1, self.kept[..., None].expand(-1, -1, c))
        K = self.kept.shape[1]
        out = torch.zeros(x.shape[0], K, c, dtype=x.dtype, device=x.device)
        return out.scatter_reduce(1, self.assign[..., None].expand(-1, -1, c), x, reduce="mean", include_self=False)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        return y.gather(1, self.assign[..., None].expand(-1, -1, y.shape[-1]))


def max_ratio(sx: int, sy: int) -> float:
    return 1.0 - 1.0 / (sx * sy)


def check_ratio(ratio: float, sx: int = 2, sy: int = 2) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"the token pruning ratio must be in [0, 1) (got {ratio})")
    if ratio > max_ratio(sx, sy) + 1e-9:
        raise ConfigError(f"ratio {ratio} exceeds {max_ratio(sx, sy):.2f}, the most a {sx}x{sy} window can prune "
                          "(one token per window stays)")


def _draw(shape, g: torch.Generator, halves: bool, kind: str = "rand") -> torch.Tensor:
    B = shape[0]
    if halves and B % 2 == 0:
        half = _draw((B // 2, *shape[1:]), g, False, kind)
        return torch.cat([half, half])
    return torch.rand(shape, generator=g) if kind == "rand" else torch.randn(shape, generator=g)


def _windows(h: int, w: int, sx: int, sy: int) -> torch.Tensor:
    """[W, sy·sx] grid positions of the full windows."""
    hh, ww = h // sy, w // sx
    grid = torch.arange(h * w).view(h, w)[: hh * sy, : ww * sx]
    return grid.view(hh, sy, ww, sx).permute(0, 2, 1, 3).reshape(hh * ww, sy * sx)


def _base_from_scores(score: torch.Tensor, h: int, w: int, sx: int, sy: int) -> torch.Tensor:
    """[B, W] position of the highest-scoring token in every window."""
    win = _windows(h, w, sx, sy).to(score.device)
    best = score[:, win].argmax(dim=-1)                      # [B, W]
    return win[None].expand(score.shape[0], -1, -1).gather(2, best[..., None]).squeeze(-1)


def _rowwise_max(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """max and argmax over b's rows of the cosine a_i·b_j, in chunks of a's rows ([B, n, c] × [B, m, c])."""
    if a.shape[1] == 0:
        return a.new_zeros(a.shape[0], 0), torch.zeros(a.shape[0], 0, dtype=torch.long, device=a.device)
    vals, idx = [], []
    for i in range(0, a.shape[1], CHUNK):
        s = a[:, i:i + CHUNK] @ b.transpose(1, 2)
        v, j = s.max(dim=-1)
        vals.append(v)
        idx.append(j)
    return torch.cat(vals, 1), torch.cat(idx, 1)


def _drop_and_copy(xn: torch.Tensor, base: torch.Tensor, prune_score: torch.Tensor, n: int) -> Reduction:
    """Drop the `n` non-base tokens of highest `prune_score`; each takes the output of its most similar
    kept token (SiTo's code: the argmax over all kept tokens, not only the bases)."""
    B, N, _ = xn.shape
    is_base = torch.zeros(B, N, dtype=torch.bool, device=xn.device).scatter(1, base, True)
    s = prune_score.masked_fill(is_base, float("-inf"))
    pruned = s.topk(n, dim=1).indices
    dropped = torch.zeros(B, N, dtype=torch.bool, device=xn.device).scatter(1, pruned, True)
    kept = (~dropped).nonzero()[:, 1].view(B, N - n)
    slot = torch.full((B, N), -1, dtype=torch.long, device=xn.device)
    slot.scatter_(1, kept, torch.arange(N - n, device=xn.device).expand(B, -1))
    c = xn.shape[-1]
    _, nearest = _rowwise_max(xn.gather(1, pruned[..., None].expand(-1, -1, c)),
                              xn.gather(1, kept[..., None].expand(-1, -1, c)))
    slot.scatter_(1, pruned, nearest)
    return Reduction(kept, slot)


def simprune(x: torch.Tensor, h: int, w: int, ratio: float, g: torch.Generator, *, sx: int = 2, sy: int = 2,
             alpha: float = 0.1, beta: float = 1.0, halves: bool = False) -> Reduction:
    """SiTo / OptiPrune's SimPrune: score_i = β·Σ_j cos(x_i, x_j) + α·ε_i; the best-scoring token of each
    window is its base; of the others, those most similar to some base are dropped."""
    B, N, _ = x.shape
    n = int(N * ratio)
    xn = F.normalize(x.float(), dim=-1)
    # Σ_j cos(x_i, x_j) = x̂_i · Σ_j x̂_j: no N × N matrix for the score
    score = beta * (xn @ xn.sum(1, keepdim=True).transpose(1, 2)).squeeze(-1)
    if alpha:
        score = score + alpha * _draw((B, N), g, halves, "randn").to(x.device)
    base = _base_from_scores(score, h, w, sx, sy)
    c = xn.shape[-1]
    near, _ = _rowwise_max(xn, xn.gather(1, base[..., None].expand(-1, -1, c)))
    return _drop_and_copy(xn, base, near, n)


def random_drop(x: torch.Tensor, h: int, w: int, ratio: float, g: torch.Generator, *, sx: int = 2, sy: int = 2,
                halves: bool = False) -> Reduction:
    """A random base per window, random others dropped; restored by copy like SimPrune (the floor)."""
    B, N, _ = x.shape
    base = _base_from_scores(_draw((B, N), g, halves).to(x.device), h, w, sx, sy)
    return _drop_and_copy(F.normalize(x.float(), dim=-1), base, _draw((B, N), g, halves).to(x.device), int(N * ratio))


def tome_sd(x: torch.Tensor, h: int, w: int, ratio: float, g: torch.Generator, *, sx: int = 2, sy: int = 2,
            use_rand: bool = True, halves: bool = False) -> Reduction:
    """ToMe for Stable Diffusion: one destination per window (random cell, or the top-left), every other
    token a source; the r sources most similar to their best destination are averaged into it."""
    B, N, _ = x.shape
    r = int(N * ratio)
    pick = _draw((B, N), g, halves).to(x.device) if use_rand else \
        torch.zeros(B, N, device=x.device).index_fill_(1, _windows(h, w, sx, sy)[:, 0].to(x.device), 1.0)
    dst = _base_from_scores(pick, h, w, sx, sy).sort(dim=1).values                       # [B, D]
    is_dst = torch.zeros(B, N, dtype=torch.bool, device=x.device).scatter(1, dst, True)
    src = (~is_dst).nonzero()[:, 1].view(B, -1)                                          # [B, S]
    xn = F.normalize(x.float(), dim=-1)
    c = xn.shape[-1]
    best, partner = _rowwise_max(xn.gather(1, src[..., None].expand(-1, -1, c)), xn.gather(1, dst[..., None].expand(-1, -1, c)))
    order = best.argsort(dim=1, descending=True, stable=True)
    merged, unmerged = order[:, :r], order[:, r:].sort(dim=1).values
    keep_src = src.gather(1, unmerged)                                                   # [B, S − r]
    kept = torch.cat([keep_src, dst], 1)
    K = kept.shape[1]
    slot = torch.empty(B, N, dtype=torch.long, device=x.device)
    slot.scatter_(1, kept, torch.arange(K, device=x.device).expand(B, -1))
    slot.scatter_(1, src.gather(1, merged), keep_src.shape[1] + partner.gather(1, merged))
    order_k = kept.argsort(dim=1)                     # present slots in ascending position order
    inv = order_k.argsort(dim=1)
    return Reduction(kept.gather(1, order_k), inv.gather(1, slot), average=True)
