"""Architecture search spaces, as adapters expose them: which widths and depths can be searched.

A `WidthDim` is one searchable width (a convolution's output channels, an MLP's channels, a block's
KV groups) with its candidate sizes; a `DepthDim` is one stack of blocks (a ResNet stage, a
decoder's layer list) with the candidate numbers of blocks kept (always a prefix, as in TAS). The
candidate rules are TAS's: widths are int-truncated fractions 0.3, 0.4, …, 1.0 of the full width,
deduplicated (narrow layers get fewer choices); depths {1, …, n} for n ≤ 3, else {1, 3, 5, …} ∪ {n}.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError

WIDTH_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SPACES = ("width", "depth")


def width_candidates(full: int, fractions=WIDTH_FRACTIONS, minimum: int = 1) -> tuple[int, ...]:
    return tuple(sorted({max(minimum, int(f * full + 1e-9)) for f in fractions}))


def depth_candidates(n: int) -> tuple[int, ...]:
    if n <= 3:
        return tuple(range(1, n + 1))
    return tuple(sorted(set(range(1, n + 1, 2)) | {n}))


@dataclass(frozen=True)
class WidthDim:
    name: str                      # e.g. "stem", "blocks.4.conv1", "layers.3.mlp"
    full: int
    candidates: tuple[int, ...]
    unit: str = "conv_channel"     # the Plan's unit kind: conv_channel | mlp_channel | kv_group
    block: int | None = None       # block index (None: outside the blocks, e.g. the stem)


@dataclass(frozen=True)
class DepthDim:
    name: str                      # e.g. "stage0"
    blocks: tuple[int, ...]        # block indices of the stack, in order
    candidates: tuple[int, ...]


@dataclass
class SearchSpace:
    family: str                    # which supernet builds it: "cifar_resnet" | "decoder"
    widths: list[WidthDim] = field(default_factory=list)
    depths: list[DepthDim] = field(default_factory=list)

    def restrict(self, spaces: set[str]) -> "SearchSpace":
        """Only the requested kinds of choice; the rest are fixed at full size."""
        unknown = set(spaces) - set(SPACES)
        if unknown:
            raise ConfigError(f"unknown search space {sorted(unknown)}; choose from {', '.join(SPACES)}")
        if not spaces:
            raise ConfigError("empty search space; pass --space width, depth or width,depth")
        widths = [w if "width" in spaces else WidthDim(w.name, w.full, (w.full,), w.unit, w.block) for w in self.widths]
        depths = [d if "depth" in spaces else DepthDim(d.name, d.blocks, (len(d.blocks),)) for d in self.depths]
        if "width" in spaces and not any(len(w.candidates) > 1 for w in self.widths):
            raise ConfigError(f"this {self.family} model exposes no searchable widths")
        if "depth" in spaces and not any(len(d.candidates) > 1 for d in self.depths):
            raise ConfigError(f"this {self.family} model exposes no searchable depths")
        return SearchSpace(self.family, widths, depths)

    def describe(self) -> str:
        nw = sum(len(w.candidates) > 1 for w in self.widths)
        nd = sum(len(d.candidates) > 1 for d in self.depths)
        return f"{self.family} search space: {nw} searchable widths, {nd} searchable depths"
