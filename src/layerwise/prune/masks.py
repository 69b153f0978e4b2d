"""Exact-count selection of the weights to remove (True = prune).

Everything selects with stable sorts, so ties are broken by position and the same scores always
give the same mask; the number of pruned entries is exactly the requested count (the reference
implementations' `score <= threshold` over-prunes on ties).
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..plan import nm_str, parse_nm  # noqa: F401  (N:M is a plan value type)


def zeros_for(numel: int, sparsity: float) -> int:
    return int(math.floor(sparsity * numel + 0.5))


def check_sparsity(p: float, what: str = "sparsity") -> float:
    try:
        p = float(p)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be a number in [0, 1) (got {p!r})") from e
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise ConfigError(f"{what} must be in [0, 1) (got {p:g})")
    return p


def lowest_in_matrix(score: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest entries of `score`, ties broken by position (row-major): the first k of a
    stable argsort, i.e. `lowest_per_row` of the flattened matrix as one row."""
    return lowest_per_row(score.reshape(1, -1), torch.tensor([k])).view_as(score)


def row_counts(rows: int, k: int) -> torch.Tensor:
    """k spread over rows as evenly as possible (the first k % rows rows get one more)."""
    base = torch.full((rows,), k // rows, dtype=torch.long)
    base[: k % rows] += 1
    return base


def lowest_per_row(score: torch.Tensor, k_row: torch.Tensor) -> torch.Tensor:
    """The k_row[i] smallest entries of each row i, ties broken by column: the first k of a stable
    argsort per row, found by selection (one kthvalue per distinct count; row_counts gives two)."""
    r, c = score.shape
    if bool(torch.isnan(score).any()):            # NaNs sort last: only the reference order is right
        order = torch.argsort(score, dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(c).expand(r, c).contiguous())
        return rank < k_row.view(-1, 1)
    mask = torch.zeros(r, c, dtype=torch.bool)
    for k in torch.unique(k_row).tolist():
        rows = (k_row == k).nonzero().squeeze(1)
        if k >= c:
            mask[rows] = True
        elif k > 0:
            s = score[rows]
            v = torch.kthvalue(s, k, dim=1, keepdim=True).values
            less = s < v
            eq = s == v
            mask[rows] = less | (eq & (eq.cumsum(1) <= k - less.sum(1, keepdim=True)))
    return mask


def nm_mask(score: torch.Tensor, n_keep: int, m: int) -> torch.Tensor:
    r, c = score.shape
    if c % m:
        raise ConfigError(f"N:M with M={m} needs in_features divisible by {m} (got {c})")
    g = score.reshape(r, c // m, m)
    order = torch.argsort(g, dim=-1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(m).expand_as(order).contiguous())
    return (rank < (m - n_keep)).reshape(r, c)


def valid_nm(w: torch.Tensor, n: int, m: int) -> bool:
    r, c = w.shape
    nz = (w.reshape(r, c // m, m) != 0).sum(-1)
    return bool((nz <= n).all())
