"""Token reduction inside bidirectional encoders (ViT): after each block's attention, `r[l]` tokens
leave the sequence for good — merged into a partner (ToMe's bipartite soft matching) or dropped
(random) — so the MLP of block l and every later block run on fewer tokens.

A token carries its size (how many patches it stands for). With proportional attention, log(size)
is added to the attention logits of every key, so a merged token keeps the votes of its patches
(an additive mask passed to the stock attention module: no attention code of ours in the fast path).
The CLS token (position 0) never leaves and stays first, so the stock head still reads it.

Modes:
- `gather`: the sequence is physically shorter (the real speed).
- `mask`: reference semantics for removing selectors: full-length tensors, removed tokens masked out as
  keys (−inf) and frozen (their outputs are never read). Equal to `gather` on what the head reads.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..models.adapters import get_adapter
from .patch import BlockPatch

MODES = ("gather", "mask")


# --- the two reductions ----------------------------------------------------------------------------
def bipartite_matching(metric: torch.Tensor, r: int, protect_first: bool = True):
    """ToMe's matching on [B, N, c] keys: alternate tokens form sets A (even) and B (odd); the `r` tokens
    of A most similar (cosine) to their best partner in B merge into it. Returns (kept A indices sorted
    ascending, source indices in A, their destination indices in B); the CLS token (A's first) never
    merges."""
    m = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = m[:, ::2], m[:, 1::2]
    scores = a @ b.transpose(-1, -2)
    if protect_first:
        scores[:, 0, :] = float("-inf")
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :r]
    kept = order[:, r:].sort(dim=-1).values
    return kept, src, partner.gather(1, src)


def merge_tokens(x: torch.Tensor, kept: torch.Tensor, src: torch.Tensor, dst: torch.Tensor,
                 reduce: str = "sum") -> torch.Tensor:
    """[unmerged A tokens in order, then B tokens with their sources reduced into them]."""
    a, b = x[:, ::2], x[:, 1::2]
    c = x.shape[-1]
    out_b = b.scatter_reduce(1, dst[..., None].expand(-1, -1, c), a.gather(1, src[..., None].expand(-1, -1, c)),
                             reduce=reduce)
    return torch.cat([a.gather(1, kept[..., None].expand(-1, -1, c)), out_b], dim=1)


def tome_reduce(x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor, r: int):
    """Size-weighted average of each merged pair; sizes add up."""
    kept, src, dst = bipartite_matching(metric, r)
    total = merge_tokens(x * size, kept, src, dst)
    new_size = merge_tokens(size, kept, src, dst)
    return total / new_size, new_size


def random_keep(batch: int, n: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """[B, n − r] indices, ascending: the CLS token and a uniform random subset of the others."""
    draw = torch.rand(batch, n - 1, generator=generator)
    keep = draw.topk(n - 1 - r, dim=1).indices.sort(dim=1).values + 1
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), keep], dim=1)


def check_schedule(r: list[int], n: int, selector) -> list[int]:
    """Every count a non-negative integer; at least the CLS token and one other token stay; ToMe merges at
    most half of the tokens that may merge at one block (its matching's limit)."""
    out, left = [], n
    for l, v in enumerate(r):
        if isinstance(v, bool) or not float(v).is_integer() or v < 0:
            raise ConfigError(f"tokens removed at block {l} must be a non-negative integer (got {v!r})")
        v = int(v)
        cap = (left - 1) // 2 if selector.name == "tome" else left - 2
        if v > cap:
            raise ConfigError(f"block {l} has {left} tokens: {selector.name} removes at most {cap} there (got {v})")
        out.append(v)
        left -= v
    return out


def token_counts(r: list[int], n: int) -> tuple[list[int], list[int]]:
    """Tokens each block's attention sees and tokens its MLP sees."""
    att, mlp = [], []
    for v in r:
        att.append(n)
        n -= v
        mlp.append(n)
    return att, mlp


def constant_r(n: int, blocks: int, sparsity: float, tome: bool = True) -> int:
    """The largest constant per-block count whose share of removed token-blocks (attention and MLP
    inputs, averaged) does not exceed `sparsity` and that every block can remove."""
    best = 0
    for r in range(1, n):
        att, mlp = token_counts([r] * blocks, n)
        if min(mlp) < 2 or (tome and any(r > (a - 1) // 2 for a in att)):
            break
        if 1 - (sum(att) + sum(mlp)) / (2 * blocks * n) > sparsity + 1e-9:
            break
        best = r
    return best


# --- installation on a model -----------------------------------------------------------------------
class EncoderReduction(BlockPatch):
    """Token reduction installed on a ViT-style encoder (`install()` / `remove()` or a context manager)."""

    def __init__(self, model: nn.Module, selector, r: list[int], mode: str = "gather"):
        if mode not in MODES:
            raise ConfigError(f"token mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.model, self.selector, self.mode = model, selector, mode
        self.adapter = get_adapter(model)
        if not hasattr(self.adapter, "block_parts"):
            raise ConfigError(f"encoder token reduction needs an encoder whose block parts are described; the "
                              f"{self.adapter.name} adapter has none")
        if not hasattr(selector, "encoder_reduce"):
            raise ConfigError(f"token selector '{selector.name}' acts on decoders only")
        n = self.adapter.num_blocks
        if len(r) != n:
            raise ConfigError(f"the token schedule has {len(r)} blocks, the model has {n}")
        self.r = check_schedule(list(r), self.adapter.num_tokens(), selector)
        if mode == "mask" and not selector.removes_in_encoder:
            raise ConfigError(f"mask mode is the reference of removing selectors; '{selector.name}' merges")
        self._state: dict = {}

    def _wrapper(self, i: int, orig):
        reduction = self

        def forward(block, hidden_states, attention_mask=None, *args, **kwargs):
            if attention_mask is not None:
                raise ConfigError("encoder token reduction does not take an attention mask (images have none)")
            return reduction._block(i, block, hidden_states)
        return forward

    def _block(self, i: int, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        p = self.adapter.block_parts(block)
        if i == 0:   # a new forward
            self._state = {"size": torch.ones(*x.shape[:2], 1, dtype=x.dtype, device=x.device),
                           "alive": torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)}
        size, alive = self._state["size"], self._state["alive"]
        r = self.r[i]
        keys = []
        # only a merging block reads its keys (the matching metric): no hook elsewhere
        hook = p["key"].register_forward_hook(lambda m, a, out: keys.append(out)) \
            if r and not self.selector.removes_in_encoder else None
        try:
            out, _ = p["attention"](p["norm1"](x), self._bias(size, alive, x.dtype))
        finally:
            if hook is not None:
                hook.remove()
        h = x + out
        if self.mode == "mask":
            h = torch.where(alive[..., None], h, x)
        if r:
            metric = keys[0].view(*keys[0].shape[:2], p["heads"], p["head_dim"]).mean(dim=2) if keys else None
            h, size, alive = self.selector.encoder_reduce(h, metric, size, alive, r, i, self.mode)
        y = h + p["mlp"](p["norm2"](h))
        if self.mode == "mask":
            y = torch.where(alive[..., None], y, h)
        self._state.update(size=size, alive=alive)
        return y

    def _bias(self, size: torch.Tensor, alive: torch.Tensor, dtype) -> torch.Tensor | None:
        prop = getattr(self.selector.config, "prop_attn", False)
        bias = None
        if prop and bool((size != 1).any()):
            bias = size.log().to(dtype)[:, None, None, :, 0]
        if self.mode == "mask" and not bool(alive.all()):
            dead = torch.zeros(alive.shape, dtype=dtype, device=alive.device).masked_fill(~alive, float("-inf"))
            bias = dead[:, None, None, :] if bias is None else bias + dead[:, None, None, :]
        return bias

    def counts(self) -> tuple[list[int], list[int]]:
        return token_counts(self.r, self.adapter.num_tokens())
