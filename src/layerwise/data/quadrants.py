"""The quadrant question task of the LLaVA-style zoo model: four digits in the quadrants of a noisy
canvas, a question naming one quadrant, the answer is that quadrant's digit.

Sequence: `<bos> <image>×P <quadrant> <ask>`; the model predicts the answer digit after `<ask>`. The
vision tokens that matter are known (the patches of the asked quadrant): the oracle of vision-token
pruning. Digits come from scikit-learn's bundled `load_digits`, split by digit image like the
classification canvases; every batch is a pure function of (split, seed, step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .images import SPLITS, _raw_digits

SPECIALS = ["<pad>", "<bos>", "<eos>", "<image>", "<ask>"]
QUADRANTS = ["<top-left>", "<top-right>", "<bottom-left>", "<bottom-right>"]
DIGITS = [str(i) for i in range(10)]
VOCAB = SPECIALS + QUADRANTS + DIGITS
PAD, BOS, EOS, IMAGE, ASK = range(5)
QUADRANT0 = len(SPECIALS)
DIGIT0 = QUADRANT0 + len(QUADRANTS)


@dataclass
class QuadrantBatch:
    pixels: torch.Tensor        # [B, 1, S, S]
    ids: torch.Tensor           # [B, 1 + P + 2]
    answer: torch.Tensor        # [B] digit token ids
    quadrant: torch.Tensor      # [B] 0..3
    relevant: torch.Tensor      # [B, P] True for the vision tokens (patches) of the asked quadrant
    digits: torch.Tensor        # [B, 4] digit token ids of the four quadrants (TL, TR, BL, BR)

    @property
    def answer_pos(self) -> int:
        return self.ids.shape[1] - 1


def patch_quadrants(size: int, patch: int) -> torch.Tensor:
    """[P] quadrant (0 TL, 1 TR, 2 BL, 3 BR) of each patch, patches in row-major order."""
    g = size // patch
    r, c = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    return ((r >= g // 2).long() * 2 + (c >= g // 2).long()).flatten()


def quadrant_batch(step: int, batch: int, seed: int = 0, split: str = "train", size: int = 16, patch: int = 2,
                   noise: float = 0.2) -> QuadrantBatch:
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if size % 2 or size // 2 < 8 or size % patch or (size // patch) % 2:
        raise ConfigError(f"canvas size {size} must be even, hold an 8x8 digit per quadrant and a whole number of "
                          f"{patch}x{patch} patches per quadrant")
    x, y = _raw_digits()
    lo, hi = SPLITS[split]
    x, y = x[lo:hi], y[lo:hi]
    g = torch.Generator().manual_seed((seed * 1000 + list(SPLITS).index(split)) * 1_000_003 + step)
    pick = torch.randint(0, len(y), (batch, 4), generator=g)
    half = size // 2
    offs = torch.randint(0, half - 8 + 1, (batch, 4, 2), generator=g)
    canvas = torch.zeros(batch, size, size)
    ar, bi = torch.arange(8), torch.arange(batch)[:, None, None]
    for q in range(4):
        rows = ((q // 2) * half + offs[:, q, 0])[:, None, None] + ar[None, :, None]
        cols = ((q % 2) * half + offs[:, q, 1])[:, None, None] + ar[None, None, :]
        canvas[bi, rows, cols] = x[pick[:, q]]
    canvas = canvas[:, None]
    canvas += noise * torch.randn(canvas.shape, generator=g)
    canvas = (canvas - 0.1) / 0.3
    quadrant = torch.randint(0, 4, (batch,), generator=g)
    P = (size // patch) ** 2
    ids = torch.cat([torch.full((batch, 1), BOS), torch.full((batch, P), IMAGE),
                     (QUADRANT0 + quadrant)[:, None], torch.full((batch, 1), ASK)], dim=1)
    answer = DIGIT0 + y[pick.gather(1, quadrant[:, None])[:, 0]]
    relevant = patch_quadrants(size, patch)[None, :] == quadrant[:, None]
    return QuadrantBatch(canvas, ids, answer, quadrant, relevant, DIGIT0 + y[pick])
