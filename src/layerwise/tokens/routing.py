"""The one token mechanism: at every site (block), a selector decides which token positions the block
computes; the others pass through on the residual unchanged (skip), or stay gone for the rest of the
model (a permanent removal, FastV).

Modes:
- `gather`: the kept tokens are gathered into a shorter sequence, the block runs on it with the rotary
  tables, position ids and mask rows of their *original* positions, and the outputs are scattered
  back. Physically shorter tensors: the real speed.
- `mask`: the block runs on the full sequence with the dropped tokens masked out as keys and their
  outputs discarded. Reference semantics for tests (no speed).
- `soft`: training. Every token is computed and mixed by its gate g: h + g·(block(h) − h), with
  log g added to the attention logits of each key so a token with g → 0 also fades as a key.

KV cache (policy `decode_dense_last`): during prefill each block caches only the tokens it computed;
every decode step computes the new token in every block, attending to that block's cache. Masks of
pruned blocks are built here from original positions and the padding mask, never from cache lengths.
Block 0 always computes every token (the model reads the cache length from it, and the attention
features of block 1 come from it).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..models.adapters import get_adapter
from .attention import attention_received
from .patch import BlockPatch

MODES = ("gather", "mask", "soft")


@dataclass
class Site:
    """What a selector sees at one block of one forward."""

    index: int
    hidden: torch.Tensor            # [B, N, d] input of the block
    drop: float                     # share of the real tokens this block skips
    real: torch.Tensor              # [B, N] True for real (not padding) tokens
    att: torch.Tensor | None        # [B, N] attention received at the latest block that computed the token
    num_blocks: int
    # [B, N] the tokens a selector may drop (a vision-language model's vision tokens); None: every token.
    # The share `drop` is then a share of these; the others are always kept.
    candidates: torch.Tensor | None = None

    @property
    def positions(self) -> torch.Tensor:
        """Padding-aware normalised positions in [0, 1]."""
        r = self.real.float()
        pos = (r.cumsum(1) - 1).clamp_min(0)
        return pos / (r.sum(1, keepdim=True) - 1).clamp_min(1)

    def keep_counts(self) -> torch.Tensor:
        n = self.real.sum(1)
        pool = n if self.candidates is None else (self.candidates & self.real).sum(1)
        return (n - torch.round(self.drop * pool.float()).long()).clamp_min(1)


@dataclass
class ForwardState:
    real: torch.Tensor | None = None        # [B, T] over the whole sequence (past + this forward)
    offset: int = 0                          # absolute index of this forward's first token
    att: torch.Tensor | None = None
    alive: torch.Tensor | None = None        # after a permanent removal: tokens still in the model
    candidates: torch.Tensor | None = None   # [B, T] tokens selectors may drop (vision tokens); None: all
    kept: dict = field(default_factory=dict)  # site -> keep mask (recorded for statistics)
    gates: dict = field(default_factory=dict)  # site -> gates (soft mode)


def keep_from_scores(scores: torch.Tensor, site: Site) -> torch.Tensor:
    """Per sample, the keep_counts() highest-scoring real tokens; the first real token (the attention
    sink) is always kept, padding never."""
    s = scores.float().masked_fill(~site.real, float("-inf"))
    first = site.real.float().argmax(dim=1)
    s = s.scatter(1, first[:, None], float("inf"))
    if site.candidates is not None:
        s = s.masked_fill(site.real & ~site.candidates, float("inf"))
    order = torch.argsort(-s, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(s.shape[1], device=s.device).expand_as(order).contiguous())
    return (rank < site.keep_counts()[:, None]) & site.real


class TokenRouting(BlockPatch):
    """Token routing installed on a decoder (`install()` / `remove()`, or as a context manager)."""

    def __init__(self, model: nn.Module, selector, drop: list[float], mode: str = "gather",
                 record: bool = False):
        if mode not in MODES:
            raise ConfigError(f"token mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.model, self.selector, self.mode, self.record = model, selector, mode, record
        self.adapter = get_adapter(model)
        n = self.adapter.num_blocks
        if len(drop) != n:
            raise ConfigError(f"the token schedule has {len(drop)} sites, the model has {n} blocks")
        for i, s in enumerate(drop):
            if not 0 <= float(s) < 1:
                raise ConfigError(f"token sparsity of block {i} must be in [0, 1) (got {s})")
        # a vision-language model: selectors choose among its vision tokens only, from block 0 on (the
        # projected image is there); a language model's block 0 computes every token
        self.vision_only = hasattr(self.adapter, "vision_tokens")
        self.drop = [float(s) for s in drop] if self.vision_only else [0.0] + [float(s) for s in drop[1:]]
        if not hasattr(self.adapter, "apply_rotary") or self.adapter.attention_path is None:
            raise ConfigError(f"token routing needs rotary attention hook points; the {self.adapter.name} adapter "
                              "has none")
        self.state = ForwardState()
        self._pending_candidates = None
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.sticky: dict[int, torch.Tensor] | None = None

    # --- installation -------------------------------------------------------------------------
    def _pre_hooks(self) -> list:
        hooks = [(self.model, self._candidates)] if self.vision_only else []
        return hooks + [(self.adapter.blocks_owner(), self._begin)]

    @contextmanager
    def frozen_prompt(self):
        """No-cache generation with the cache's semantics: the keep sets chosen for the prompt at the
        first forward stay fixed; every later token is computed by every block."""
        self.sticky = {}
        try:
            yield self
        finally:
            self.sticky = None

    # --- per forward --------------------------------------------------------------------------
    def _begin(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        emb = kwargs.get("inputs_embeds")
        n = (ids if ids is not None else emb).shape[1]
        b = (ids if ids is not None else emb).shape[0]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        offset = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        mask = kwargs.get("attention_mask")
        real = mask.bool() if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if real is None:
            real = torch.ones(b, offset + n, dtype=torch.bool, device=(ids if ids is not None else emb).device)
        if offset == 0:
            self.kv.clear()
        cand = self._pending_candidates
        self._pending_candidates = None
        self.state = ForwardState(real=real, offset=offset,
                                  candidates=cand if cand is not None and cand.shape[1] == offset + n else None)

    def _candidates(self, module, args, kwargs):
        """Vision-language models: note which tokens of this forward are vision tokens (from the ids the
        top-level model receives; its decoder only sees embeddings)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._pending_candidates = self.adapter.vision_tokens(ids) if isinstance(ids, torch.Tensor) else None

    def _wrapper(self, i: int, orig):
        routing = self

        def forward(block, hidden_states, *args, **kwargs):
            return routing._site(i, orig, hidden_states, args, kwargs)

        return forward

    def _site(self, i, orig, hidden, args, kwargs):
        st = self.state
        B, N = hidden.shape[:2]
        real_all = st.real if st.real is not None and st.real.shape[0] == B else torch.ones(
            B, st.offset + N, dtype=torch.bool, device=hidden.device)
        real = real_all[:, st.offset:st.offset + N]
        if st.offset > 0 and self.mode != "gather":
            raise ConfigError(f"token mode '{self.mode}' does not decode with a cache; use 'gather'")
        if st.offset > 0 and i in self.kv:
            return self._decode(i, orig, hidden, args, kwargs, real_all)
        keep = self._choose(i, hidden, real)
        needs_att = self._att_needed(i)
        if self.mode == "soft":
            return self._soft(i, orig, hidden, args, kwargs, real, needs_att)
        if keep is None:
            return self._run(i, orig, hidden, args, kwargs, None, real, needs_att, record_kv=True)
        if self.record:
            st.kept[i] = keep
        if self.mode == "mask":
            return self._masked(i, orig, hidden, args, kwargs, keep, real, needs_att)
        return self._gathered(i, orig, hidden, args, kwargs, keep, real, needs_att)

    def _choose(self, i, hidden, real) -> torch.Tensor | None:
        """The keep mask of block i ([B, N]), or None when it computes every token."""
        st = self.state
        if self.sticky is not None and i in self.sticky:
            prev = self.sticky[i]
            keep = torch.ones_like(real)
            keep[:, :prev.shape[1]] = prev
            return keep & real if not bool((keep | ~real).all()) else None
        keep = None
        if self.drop[i] > 0:
            cand = st.candidates[:, st.offset:st.offset + hidden.shape[1]] if st.candidates is not None else None
            if self.vision_only and cand is None:
                raise ConfigError("vision-token pruning needs the model's input_ids (the <image> placeholders) in "
                                  "the forward call")
            site = Site(i, hidden, self.drop[i], real, st.att, len(self.drop), cand)
            keep = self.selector.keep(site)
            if getattr(self.selector, "removes", False) or self.vision_only:   # vision tokens go for good
                st.alive = keep if st.alive is None else st.alive & keep
                keep = st.alive
        elif st.alive is not None:
            keep = st.alive
        if self.sticky is not None:
            self.sticky[i] = keep if keep is not None else real.clone()
        if keep is None or bool((keep | ~real).all()):
            return None
        return keep

    def _att_needed(self, i) -> str | None:
        need = getattr(self.selector, "needs_attention", None)
        if need is None or i + 1 >= len(self.drop) or (self.drop[i + 1] == 0 and self.mode != "soft"):
            return None
        return need

    # --- the three ways of running a block ------------------------------------------------------
    def _run(self, i, orig, hidden, args, kwargs, mask, real, needs_att, record_kv=False, idx=None, valid=None):
        """Run the original block, capturing q/k for the attention feature when the next site needs it."""
        captured = {}
        hooks = []
        if needs_att:
            attn = self.adapter.attention(i)
            hooks = [attn.q_proj.register_forward_hook(lambda m, a, o: captured.__setitem__("q", o)),
                     attn.k_proj.register_forward_hook(lambda m, a, o: captured.__setitem__("k", o))]
        try:
            if mask is not None:
                kwargs = {**kwargs, "attention_mask": mask}
            out = orig(hidden, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        out = out[0] if isinstance(out, (tuple, list)) else out
        if needs_att:
            self._update_att(i, captured, kwargs, idx, valid, real)
        if record_kv and kwargs.get("cache") is not None and kwargs.get("use_cache", True):
            n = hidden.shape[1]
            pos = self.state.offset + torch.arange(n, device=hidden.device).expand(hidden.shape[0], -1)
            self.kv[i] = (pos, real.clone())
        return out

    def _update_att(self, i, captured, kwargs, idx, valid, real):
        st = self.state
        cos, sin = kwargs["position_embeddings"]
        lay = self.adapter.attention_layout()
        n = captured["q"].shape[1]
        pos = idx if idx is not None else torch.arange(n, device=real.device).expand(real.shape[0], -1)
        ok = (valid if valid is not None else torch.ones_like(pos, dtype=torch.bool)) & real.gather(1, pos)
        # only computed tokens attend and are attended to (so mask and gather modes agree)
        allowed = (pos[:, None, :] <= pos[:, :, None]) & ok[:, None, :] & ok[:, :, None]
        allowed |= torch.eye(n, dtype=torch.bool, device=real.device)[None]
        last = None
        if self.selector.needs_attention == "last":   # the last computed query of each sample
            last = (ok.long() * torch.arange(1, n + 1, device=ok.device)).argmax(dim=1)
        a = attention_received(captured["q"], captured["k"], cos, sin, self.adapter.apply_rotary, lay["heads"],
                               lay["kv_heads"], allowed, last=last)
        full = st.att.clone() if st.att is not None else torch.zeros(real.shape, device=real.device)
        if idx is None:
            full = a
        else:
            b, s = ok.nonzero(as_tuple=True)
            full[b, idx[b, s]] = a[b, s]
        st.att = full.masked_fill(~real, 0.0)

    def _gathered(self, i, orig, hidden, args, kwargs, keep, real, needs_att):
        st = self.state
        idx, valid = pack(keep)
        d = hidden.shape[-1]
        hs = hidden.gather(1, idx[..., None].expand(-1, -1, d))
        kw = dict(kwargs)
        cos, sin = kwargs["position_embeddings"]
        kw["position_embeddings"] = (take(cos, idx), take(sin, idx))
        if kwargs.get("position_ids") is not None:
            kw["position_ids"] = take(kwargs["position_ids"], idx)
        mask = None
        sdpa = getattr(self.model.config, "_attn_implementation", "sdpa") == "sdpa"
        if not bool(valid.all()) or not bool(real.all()):
            ok = valid & real.gather(1, idx)
            allowed = (idx[:, None, :] <= idx[:, :, None]) & ok[:, None, :]
            allowed |= torch.eye(idx.shape[1], dtype=torch.bool, device=idx.device)[None]
            mask = self._layer_mask(allowed, hidden.dtype)
        elif kwargs.get("attention_mask") is not None or not sdpa:
            mask = self._layer_mask(idx[:, None, :] <= idx[:, :, None], hidden.dtype)
        kw["attention_mask"] = mask
        out_s = self._run(i, orig, hs, args, kw, None, real, needs_att, idx=idx, valid=valid)
        if kwargs.get("cache") is not None and kwargs.get("use_cache", True):
            self.kv[i] = (st.offset + idx, valid & real.gather(1, idx))
        out = hidden.clone()
        b, s = valid.nonzero(as_tuple=True)
        out[b, idx[b, s]] = out_s[b, s].to(out.dtype)
        return self._restore(out, hidden, keep, real)

    def _masked(self, i, orig, hidden, args, kwargs, keep, real, needs_att):
        N = hidden.shape[1]
        pos = torch.arange(N, device=hidden.device)
        allowed = (pos[None, :] <= pos[:, None])[None] & (keep & real)[:, None, :]
        allowed |= torch.eye(N, dtype=torch.bool, device=hidden.device)[None]
        out = self._run(i, orig, hidden, args, kwargs, self._layer_mask(allowed, hidden.dtype), real, needs_att,
                        idx=torch.arange(N, device=hidden.device).expand(hidden.shape[0], -1), valid=keep)
        return self._restore(torch.where(keep[..., None], out, hidden), hidden, keep, real)

    def _restore(self, out, hidden, keep, real):
        """Tokens a merging selector dropped take the update of the nearest kept token before them
        (their merge partner): causal, and the sequence keeps its length."""
        if getattr(self.selector, "restore", "skip") != "copy_prev":
            return out
        N = hidden.shape[1]
        pos = torch.arange(N, device=hidden.device).expand_as(keep)
        src = torch.where(keep, pos, -1).cummax(dim=1).values.clamp_min(0)
        delta = (out - hidden).gather(1, src[..., None].expand_as(out))
        dropped = (~keep & real)[..., None]
        return torch.where(dropped, hidden + delta, out)

    def _soft(self, i, orig, hidden, args, kwargs, real, needs_att):
        st = self.state
        if self.drop[i] == 0:
            return self._run(i, orig, hidden, args, kwargs, None, real, needs_att)
        site = Site(i, hidden, self.drop[i], real, st.att, len(self.drop))
        g = self.selector.gates(site).masked_fill(~real, 0.0)
        first = real.float().argmax(dim=1)
        g = g.scatter(1, first[:, None], 1.0)
        st.gates[i] = g
        N = hidden.shape[1]
        pos = torch.arange(N, device=hidden.device)
        allowed = (pos[None, :] <= pos[:, None])[None] & real[:, None, :]
        allowed |= torch.eye(N, dtype=torch.bool, device=hidden.device)[None]
        bias = torch.log(g.clamp_min(1e-4)).to(hidden.dtype)[:, None, :].expand(-1, N, -1)
        mask = torch.where(allowed, bias, torch.finfo(hidden.dtype).min)[:, None]
        out = self._run(i, orig, hidden, args, kwargs, mask, real, needs_att)
        return hidden + g[..., None].to(hidden.dtype) * (out - hidden)

    def _decode(self, i, orig, hidden, args, kwargs, real_all):
        """New tokens with a cache: computed by every block, attending to what the block cached."""
        st = self.state
        B, N = hidden.shape[:2]
        kpos, kvalid = self.kv[i]
        new = st.offset + torch.arange(N, device=hidden.device).expand(B, -1)
        keys = torch.cat([kpos, new], dim=1)
        ok = torch.cat([kvalid & real_all.gather(1, kpos), real_all[:, st.offset:st.offset + N]], dim=1)
        allowed = (keys[:, None, :] <= new[:, :, None]) & ok[:, None, :]
        allowed[:, :, kpos.shape[1]:] |= torch.eye(N, dtype=torch.bool, device=hidden.device)[None]
        self.kv[i] = (keys, ok)
        kw = {**kwargs, "attention_mask": self._layer_mask(allowed, hidden.dtype)}
        out = orig(hidden, *args, **kw)
        return out[0] if isinstance(out, (tuple, list)) else out

    def _layer_mask(self, allowed: torch.Tensor, dtype) -> torch.Tensor:
        """[B, 1, q, k] in the convention of the model's attention kernel."""
        impl = getattr(self.model.config, "_attn_implementation", "sdpa")
        if impl == "sdpa":
            return allowed[:, None]
        return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]


def pack(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted kept positions per sample, padded to the largest count: (idx [B, k], valid [B, k])."""
    counts = keep.sum(1)
    k = int(counts.max())
    N = keep.shape[1]
    pos = torch.arange(N, device=keep.device).expand_as(keep)
    key = torch.where(keep, pos, pos + N)              # kept first, in order
    idx = key.sort(dim=1).values[:, :k]
    valid = idx < N
    last = torch.where(valid, idx, -1).max(dim=1, keepdim=True).values
    idx = torch.where(valid, idx, last)                # padding slots repeat a kept index (masked out)
    return idx, valid


def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather a per-position tensor ([B or 1, N, ...] or [B or 1, N]) at idx [B, k]."""
    if t.shape[0] != idx.shape[0]:
        t = t.expand(idx.shape[0], *t.shape[1:])
    if t.dim() == 2:
        return t.gather(1, idx)
    return t.gather(1, idx[..., None].expand(-1, -1, *t.shape[2:]))
