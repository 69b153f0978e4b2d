"""Image data from what PyPI packages ship: scikit-learn's handwritten digits, composed into canvases.

`digits` (1,797 8×8 images, 10 classes) is too easy as it is (≈99% accuracy for any CNN), so every
image is placed at a seeded random offset inside a larger canvas and seeded Gaussian noise is
added: a network must now find the digit, and compression costs measurable accuracy and NLL.
Splits are by digit image (a fixed seeded permutation), so no digit appears in two splits; each
digit yields `copies` canvases. Everything is a pure function of (split, seed): no download, no files.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..errors import ConfigError, DataError

SPLITS = {"train": (0, 1000), "validation": (1000, 1300), "test": (1300, 1797)}


@dataclass
class ImageSet:
    pixels: torch.Tensor      # [N, 1, S, S] float32, roughly zero-mean unit-variance
    labels: torch.Tensor      # [N] int64
    name: str

    def __len__(self) -> int:
        return int(self.labels.numel())

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Shuffled (when a generator is given) mini-batches."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i:i + batch_size]
            yield self.pixels[idx], self.labels[idx]

    def sample(self, n: int, generator: torch.Generator | None = None):
        """`n` examples drawn uniformly with replacement (TAS pairs each weight batch with a random one)."""
        idx = torch.randint(0, len(self), (n,), generator=generator)
        return self.pixels[idx], self.labels[idx]

    def split_half(self, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """Two class-balanced halves (TAS searches weights on one and the architecture on the other)."""
        g = torch.Generator().manual_seed(seed)
        a, b = [], []
        for c in self.labels.unique():
            idx = (self.labels == c).nonzero().flatten()
            idx = idx[torch.randperm(idx.numel(), generator=g)]
            a.append(idx[: idx.numel() // 2])
            b.append(idx[idx.numel() // 2:])
        ia, ib = torch.cat(a).sort().values, torch.cat(b).sort().values
        return (ImageSet(self.pixels[ia], self.labels[ia], self.name + "/a"),
                ImageSet(self.pixels[ib], self.labels[ib], self.name + "/b"))


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise DataError("the digit canvases need scikit-learn (pip install scikit-learn)") from e
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    return x[perm], y[perm]


def digit_canvases(split: str = "train", size: int = 12, copies: int = 2, noise: float = 0.2,
                   seed: int = 0, scale: int = 1) -> ImageSet:
    """Digits (each pixel repeated `scale`×`scale` times) at random offsets in `size`×`size` canvases
    with Gaussian noise, normalised."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"digit scale must be a positive integer (got {scale!r})")
    d = 8 * scale
    if size < d:
        raise ConfigError(f"canvas size {size} is smaller than a digit ({d})")
    x, y = _raw_digits()
    lo, hi = SPLITS[split]
    x, y = x[lo:hi], y[lo:hi]
    if scale > 1:
        x = x.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    g = torch.Generator().manual_seed(seed * 1000 + list(SPLITS).index(split))
    n = len(y) * copies
    canvas = torch.zeros(n, 1, size, size)
    offs = torch.randint(0, size - d + 1, (n, 2), generator=g)
    for i in range(n):
        r, c = int(offs[i, 0]), int(offs[i, 1])
        canvas[i, 0, r:r + d, c:c + d] = x[i % len(y)]
    canvas += noise * torch.randn(canvas.shape, generator=g)
    canvas = (canvas - 0.1) / 0.3
    return ImageSet(canvas, y.repeat(copies), f"digits{size}/{split}")


def canvases_for(split: str, image_size: int, recipe: dict | None = None) -> ImageSet:
    """The canvases a model was trained on: `recipe` is a card's (or zoo spec's) `data` section; what it
    does not state takes the defaults at the model's input size."""
    r = recipe or {}
    return digit_canvases(split, size=r.get("size", image_size), copies=r.get("copies", 2),
                          noise=r.get("noise", 0.2), seed=r.get("seed", 0), scale=r.get("scale", 1))


def digit_images(split: str = "train") -> ImageSet:
    """The plain 8×8 digits of a split, scaled to [-1, 1] (what the zoo generators model)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    x, y = _raw_digits()
    lo, hi = SPLITS[split]
    return ImageSet(x[lo:hi, None] * 2 - 1, y[lo:hi], f"digits8/{split}")
