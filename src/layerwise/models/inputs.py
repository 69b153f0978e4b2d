"""Calibration samples of a model with several inputs (token ids and pixels, for a vision-language or
dual-encoder model), sliced together.

The engine treats calibration samples as a sequence it can slice along the first dimension, count
(`shape[0]`) and move (`to(device)`): a tensor does all three. `ModelInputs` does the same for a
named set of tensors that share that dimension, so every stage that calibrates on token ids also
calibrates on (ids, pixels) pairs without knowing it.
"""
from __future__ import annotations

import torch

from ..errors import DataError


class ModelInputs:
    def __init__(self, **tensors: torch.Tensor):
        if not tensors:
            raise DataError("calibration inputs are empty")
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"calibration inputs disagree on the number of samples: {sizes}")
        self.tensors = dict(tensors)

    @property
    def shape(self) -> torch.Size:
        """The number of samples, as a one-dimensional shape (what the engine reads)."""
        return torch.Size([next(iter(self.tensors.values())).shape[0]])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> "ModelInputs":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ModelInputs(**{k: v[index] for k, v in self.tensors.items()})

    def to(self, device) -> "ModelInputs":
        return ModelInputs(**{k: v.to(device) for k, v in self.tensors.items()})

    def as_dict(self) -> dict:
        return dict(self.tensors)

    def describe(self) -> list:
        return {k: list(v.shape) for k, v in self.tensors.items()}

    def __repr__(self) -> str:
        return f"ModelInputs({', '.join(f'{k}={list(v.shape)}' for k, v in self.tensors.items())})"
