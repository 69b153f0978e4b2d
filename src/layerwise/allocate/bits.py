"""Mixed precision by layer importance (LIM / ZD / any score): high bits for the important blocks.

Blocks are demoted from `high` to `low` bits, least important first, until the parameter-weighted
average reaches the fractional target. The boundary block is split at linear granularity: the subset
of its linears demoted is the one that brings the average closest to the target without exceeding it.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import ConfigError
from ..quant.base import MAX_BITS, MIN_BITS

def orders() -> tuple[str, ...]:
    """Importance orders for bit allocation: every registered score, random, reverse (of LIM)."""
    from ..scores.base import SCORES

    return tuple(SCORES) + ("random", "reverse")


def check_bit_request(target: float, high: int, low: int) -> None:
    for name, b in (("--high", high), ("--low", low)):
        if not isinstance(b, int) or not MIN_BITS <= b <= MAX_BITS:
            raise ConfigError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS} (got {b})")
    if high < low:
        raise ConfigError(f"--high ({high}) must be at least --low ({low})")
    if not (MIN_BITS <= target <= MAX_BITS):
        raise ConfigError(f"--bits must be within {MIN_BITS}-{MAX_BITS} (got {target:g})")
    if not (low - 1e-9 <= target <= high + 1e-9):
        raise ConfigError(f"--bits {target:g} is outside [--low {low}, --high {high}]")


def parse_order(order: str, num_blocks: int) -> list[int] | None:
    """A user list `3,0,1,2` (most important first) → block indices; a name → None."""
    if order in orders():
        return None
    try:
        blocks = [int(x) for x in order.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--order must be one of {', '.join(orders())} or a comma-separated list of "
                          f"block indices, most important first (got {order!r})") from e
    if sorted(blocks) != list(range(num_blocks)):
        raise ConfigError(f"--order list must name every block 0..{num_blocks - 1} exactly once")
    return blocks


def fused_units(rows, fused: tuple[tuple[str, ...], ...]) -> list[list]:
    """Rows grouped into sets that must share one width (e.g. vLLM fuses q/k/v and gate/up into one
    kernel); every other row is a set of its own."""
    units: dict[tuple, list] = {}
    for r in rows:
        prefix, _, leaf = r.name.rpartition(".")
        key = next(((prefix, f) for f in fused if leaf in f), (r.name,))
        units.setdefault(key, []).append(r)
    return list(units.values())


def allocate_bits(plan, ranking: list[int], target: float, high: int, low: int,
                  fused: tuple[tuple[str, ...], ...] = ()):
    """`ranking`: block indices, most important first. Fills `bits` of every plan row. Linears named in one
    tuple of `fused` (leaf names, e.g. ("q_proj", "k_proj", "v_proj")) inside a block get one width."""
    check_bit_request(target, high, low)
    sizes = {r.name: r.params for r in plan.rows}
    total = sum(sizes.values())
    for r in plan.rows:
        r.bits = high
    if high == low or target >= high - 1e-12:
        plan.meta.update({"bits_target": target, "high": high, "low": low, "ranking": ranking})
        return plan
    need = (high - target) * total / (high - low)           # parameters to demote (continuous)
    demoted = 0
    by_block: dict[int, list] = {}
    for r in plan.rows:
        by_block.setdefault(r.block, []).append(r)
    for b in reversed(ranking):                             # least important first
        rows = by_block.get(b, [])
        size = sum(r.params for r in rows)
        if demoted + size <= need + 1e-9:
            for r in rows:
                r.bits = low
            demoted += size
            continue
        rest = need - demoted
        if rest <= 1e-9:
            break
        # Boundary block: the smallest subset of its linears (of its fused sets) covering the rest
        # (average ≤ target).
        units = fused_units(rows, fused)
        size_of = [sum(r.params for r in u) for u in units]
        best = None
        if len(units) <= 12:
            for k in range(1, len(units) + 1):
                for combo in itertools.combinations(range(len(units)), k):
                    s = sum(size_of[i] for i in combo)
                    if s >= rest - 1e-9 and (best is None or s < best[0]):
                        best = (s, combo)
        else:
            acc, combo = 0, []
            for i in sorted(range(len(units)), key=lambda i: -size_of[i]):
                if acc >= rest - 1e-9:
                    break
                combo.append(i)
                acc += size_of[i]
            best = (acc, tuple(combo))
        for i in best[1]:
            for r in units[i]:
                r.bits = low
        demoted += best[0]
        break
    plan.meta.update({"bits_target": target, "high": high, "low": low, "ranking": ranking,
                      "bits_achieved": plan.mean_bits(), **({"fused": [list(f) for f in fused]} if fused else {})})
    return plan


def ranking_from_scores(score: str, block_values: list[float]) -> list[int]:
    """Blocks ordered most important first by a score (its direction from the registry)."""
    from ..scores.base import importance

    imp = importance(score, block_values)
    return [int(i) for i in np.argsort(-imp, kind="stable")]
