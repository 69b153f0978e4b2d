"""NIRVANA's per-group network: patch coordinate → the RGB patch in each of the group's G frames.

SIREN stem on the patch centre (u, v) ∈ [−1, 1]², a sine expansion layer reshaped to a C_e × P/2 × P/2
map, a fixed sinusoid per frame and channel added to G copies of it, a 3×3 convolution grouped by frame,
PixelShuffle(2), GELU, and a last 3×3 convolution grouped by frame to 3 channels per frame
(../shared/methods/quant_inr_rl.md §2.2). Every weight tensor is what the codec quantizes; biases travel
as float16.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class NetConfig:
    group: int = 4            # frames per network (G)
    patch: int = 16           # patch side (P); frames are cut into (H/P)·(W/P) patches
    width: int = 64           # SIREN width
    layers: int = 3           # sine layers including the expansion layer
    expand: int = 8           # channels of the expanded map (C_e)
    w0: float = 30.0
    w0_initial: float = 30.0

    def check(self, height: int, width: int) -> None:
        if self.patch % 2 or self.patch < 2:
            raise ConfigError(f"patch size must be even (one PixelShuffle(2) stage), got {self.patch}")
        if height % self.patch or width % self.patch:
            raise ConfigError(f"frames of {height}×{width} are not a whole number of {self.patch}×{self.patch} "
                              "patches; choose a patch size that divides both")
        if self.group < 1 or self.width < 1 or self.layers < 2 or self.expand < 1:
            raise ConfigError(f"invalid network configuration {asdict(self)}")

    def to_dict(self) -> dict:
        return asdict(self)


class Sine(nn.Module):
    def __init__(self, d_in: int, d_out: int, w0: float, first: bool):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.w0 = w0
        self.bound = 1.0 / d_in if first else math.sqrt(6.0 / d_in) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-self.bound, self.bound)
            self.linear.bias.uniform_(-self.bound, self.bound)

    def forward(self, x):
        return torch.sin(self.w0 * self.linear(x))


def frame_encoding(group: int, channels: int) -> torch.Tensor:
    """[G, C] fixed sinusoids sin(j·ω_c + φ_c): ω geometric over channels, φ alternating 0, π/2."""
    j = torch.arange(group, dtype=torch.float32).view(-1, 1)
    c = torch.arange(channels, dtype=torch.float32).view(1, -1)
    omega = math.pi / 2 * (0.5 ** torch.div(c, 2, rounding_mode="floor") / 1.0)
    phase = (c % 2) * (math.pi / 2)
    return torch.sin(j * omega + phase)


class NirvanaNet(nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        G, P, Ce = cfg.group, cfg.patch, cfg.expand
        dims = [2] + [cfg.width] * (cfg.layers - 1)
        self.stem = nn.ModuleList(Sine(dims[i], dims[i + 1], cfg.w0_initial if i == 0 else cfg.w0, i == 0)
                                  for i in range(len(dims) - 1))
        self.expand = Sine(dims[-1], (P // 2) ** 2 * Ce, cfg.w0, False)
        self.register_buffer("pe", frame_encoding(G, Ce), persistent=False)
        self.up = nn.Conv2d(G * Ce, G * 16, 3, padding=1, groups=G)
        self.shuffle = nn.PixelShuffle(2)
        self.head = nn.Conv2d(G * 4, G * 3, 3, padding=1, groups=G)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [N, 2] → patches [N, G, 3, P, P]."""
        G, P, Ce = self.cfg.group, self.cfg.patch, self.cfg.expand
        x = coords
        for layer in self.stem:
            x = layer(x)
        x = self.expand(x).view(-1, 1, Ce, P // 2, P // 2)
        x = (x + self.pe.view(1, G, Ce, 1, 1)).reshape(-1, G * Ce, P // 2, P // 2)
        x = nn.functional.gelu(self.shuffle(self.up(x)))
        return self.head(x).view(-1, G, 3, P, P)

    def init_ranges(self) -> dict[str, float]:
        """Half-width r of each weight's initial uniform distribution (what quantized latents reproduce)."""
        out = {f"stem.{i}.linear": lay.bound for i, lay in enumerate(self.stem)}
        out["expand.linear"] = self.expand.bound
        for name in ("up", "head"):
            conv = getattr(self, name)
            fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
            out[name] = 1.0 / math.sqrt(fan_in)
        return out


def patch_coords(height: int, width: int, patch: int) -> torch.Tensor:
    """Normalised centres of the (H/P)·(W/P) patches, row-major, in [−1, 1]²."""
    rows, cols = height // patch, width // patch
    v = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows * 2 - 1
    u = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols * 2 - 1
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu.reshape(-1), vv.reshape(-1)], 1)


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """[G, 3, H, W] → [N, G, 3, P, P] in `patch_coords` order."""
    G, C, H, W = frames.shape
    x = frames.view(G, C, H // patch, patch, W // patch, patch)
    return x.permute(2, 4, 0, 1, 3, 5).reshape(-1, G, C, patch, patch)


def unpatchify(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `patchify`."""
    N, G, C, P, _ = patches.shape
    x = patches.view(height // P, width // P, G, C, P, P)
    return x.permute(2, 3, 0, 4, 1, 5).reshape(G, C, height, width)
