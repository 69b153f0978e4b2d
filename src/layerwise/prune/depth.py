"""Depth pruning: remove whole blocks (or replace a contiguous run by one block) and keep the config true.

After removal the kept blocks are renumbered contiguously (attention `layer_idx`, used by the KV
cache), `num_hidden_layers` (or `n_layer`) is rewritten, and every per-layer config list (e.g. Qwen2's
`layer_types`) keeps the entries of the kept blocks, so stock `from_pretrained` rebuilds the result.
"""
from __future__ import annotations

import math

import numpy as np
from torch import nn

from typing import ClassVar

from ..errors import ConfigError
from ..registry import Method, Registry
from ..models.adapters import get_adapter

def parse_remove(remove: str | int | float, num_blocks: int) -> int:
    """'25%' → round(0.25·L); '3' → 3. Must leave at least one block."""
    bad = f"--remove must be a number of blocks or a percentage like 25% (got {remove!r})"
    if isinstance(remove, str):
        r = remove.strip()
        try:
            share = float(r[:-1]) / 100 if r.endswith("%") else None
            k = int(r) if share is None else None
        except ValueError as e:
            raise ConfigError(bad) from e
    elif isinstance(remove, float) and 0 < remove < 1:
        share, k = remove, None
    elif isinstance(remove, (int, float)) and float(remove).is_integer():
        share, k = None, int(remove)
    else:
        raise ConfigError(bad)
    if share is not None:
        if not math.isfinite(share):
            raise ConfigError(bad)
        k = round(share * num_blocks)
    if not 1 <= k < num_blocks:
        raise ConfigError(f"--remove must remove between 1 and {num_blocks - 1} of the {num_blocks} blocks (got {k})")
    return k


def renumber(blocks) -> None:
    for i, block in enumerate(blocks):
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i


def remove_blocks(model: nn.Module, remove: set[int] | list[int]) -> nn.Module:
    """Physically drop blocks `remove` (in place) and rewrite the config."""
    adapter = get_adapter(model)
    blocks = adapter.block_list()
    L = len(blocks)
    remove = set(int(i) for i in remove)
    if not remove <= set(range(L)) or len(remove) >= L:
        raise ConfigError(f"cannot remove blocks {sorted(remove)} of a {L}-block model")
    keep = [i for i in range(L) if i not in remove]
    new = nn.ModuleList([blocks[i] for i in keep])
    parent_path, _, attr = adapter.blocks_path.rpartition(".")
    parent = adapter._resolve(model, parent_path) if parent_path else model
    setattr(parent, attr, new)
    renumber(new)
    key = adapter.config_num_blocks_key()
    if hasattr(model, "register_to_config"):    # a diffusers model: its config is frozen, registered anew
        model.register_to_config(**{key: len(keep)})
        return model
    sub, _, key = key.rpartition(".")        # "text_config.num_hidden_layers": the decoder's own config
    cfg = getattr(model.config, sub) if sub else model.config
    for name, val in list(cfg.to_dict().items()):
        if isinstance(val, list) and len(val) == L and name not in ("architectures",):
            setattr(cfg, name, [val[i] for i in keep])
    setattr(cfg, key, len(keep))
    if key != "num_hidden_layers" and hasattr(cfg, "num_hidden_layers"):
        try:
            cfg.num_hidden_layers = len(keep)
        except AttributeError:
            pass
    return model


def keep_index(iv: dict) -> int:
    """The block an interval keeps (or initialises its student from): its middle unless stated."""
    return int(iv.get("keep", (iv["start"] + iv["end"]) // 2))


def assemble(model: nn.Module, intervals: list[dict], students: dict | None = None) -> nn.Module:
    """Replace each interval [s, e] by one block — its trained student, or the block it keeps."""
    adapter = get_adapter(model)
    blocks = adapter.block_list()
    remove = set()
    originals = list(blocks)
    for iv in intervals:
        s, e = iv["start"], iv["end"]
        key = f"{s}-{e}"
        blocks[s] = students[key] if students and key in students else originals[keep_index(iv)]
        remove |= set(range(s + 1, e + 1))
    return remove_blocks(model, remove)


def runs_to_intervals(removed: list[int], num_blocks: int) -> list[dict]:
    """Each maximal run [a, b] of removed blocks becomes an interval that a kept neighbour absorbs:
    [a−1, b] keeping block a−1, or [a, b+1] keeping block b+1 when the run starts at block 0."""
    out, run = [], []
    for i in sorted(removed) + [None]:
        if run and (i is None or i != run[-1] + 1):
            a, b = run[0], run[-1]
            out.append({"start": a - 1, "end": b, "keep": a - 1} if a > 0 else {"start": a, "end": b + 1, "keep": b + 1})
            run = []
        if i is not None:
            run.append(i)
    return out


class DepthSelector(Method):
    """Chooses which blocks go. `intervals` selectors choose contiguous intervals that one trained
    student each replaces (so a family of ratios can come from one training)."""

    intervals: ClassVar[bool] = False

    def blocks(self, k: int, num_blocks: int, bi: list[float] | None, seed: int) -> list[int]:
        raise NotImplementedError

    def choose(self, k: int, dmap, seed: int) -> tuple[list[int], list[dict]]:
        """(removed blocks, intervals that absorb them) from the depth map of the model."""
        removed = self.blocks(k, dmap.num_blocks, list(dmap.bi), seed)
        return removed, runs_to_intervals(removed, dmap.num_blocks)


DEPTH_SELECTORS: Registry[type[DepthSelector]] = Registry("depth selector", "--select", "depth selector")
register_selector = DEPTH_SELECTORS.register


@register_selector
class PPCLSelector(DepthSelector):
    name = "ppcl"
    description = "PPCL: cheapest contiguous intervals by span-probe fidelity and the CKA trend"
    intervals = True
    needs = frozenset({"calibration"})

    def choose(self, k, dmap, seed):
        from ..scores.probes import select_intervals

        intervals = select_intervals(dmap, k)
        removed = sorted(i for iv in intervals for i in range(iv["start"], iv["end"] + 1) if i != keep_index(iv))
        return removed, intervals


@register_selector
class BlockInfluenceSelector(DepthSelector):
    name = "bi"
    description = "ShortGPT Block Influence: the k blocks that change their input least"
    needs = frozenset({"calibration"})

    def blocks(self, k, num_blocks, bi, seed):
        if bi is None:
            raise ConfigError("--select bi needs Block Influence scores")
        return sorted(int(i) for i in np.argsort(np.asarray(bi), kind="stable")[:k])


@register_selector
class RandomSelector(DepthSelector):
    name = "random"
    description = "k blocks drawn at random (seeded)"

    def blocks(self, k, num_blocks, bi, seed):
        return sorted(int(i) for i in np.random.default_rng(seed).choice(num_blocks, size=k, replace=False))


@register_selector
class LastSelector(DepthSelector):
    name = "last"
    description = "the last k blocks"

    def blocks(self, k, num_blocks, bi, seed):
        return list(range(num_blocks - k, num_blocks))


def select_blocks(method: str, k: int, num_blocks: int, bi: list[float] | None = None, seed: int = 0) -> list[int]:
    """Block choice of a per-block selector (bi, random, last, or any registered one)."""
    return DEPTH_SELECTORS.create(method).blocks(k, num_blocks, bi, seed)
