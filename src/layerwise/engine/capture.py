"""Capture what block 0 receives: hidden states plus every side input, exactly as the model computes them."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DataError
from ..models.adapters import Adapter, StopForward


@dataclass
class BlockBatch:
    """One calibration batch as seen by a block: hidden states and the block call's other arguments."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict


class _Catcher(nn.Module):
    def __init__(self, inner: nn.Module, sink: list):
        super().__init__()
        self.inner = inner
        self._sink = sink

    def __getattr__(self, name):
        # The model's loop may read attributes of the block (e.g. `attention_type`).
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, hidden, *args, **kwargs):
        if hidden is None and "hidden_states" in kwargs:
            hidden = kwargs.pop("hidden_states")
        self._sink.append((hidden, args, kwargs))
        raise StopForward


def check_finite(t: torch.Tensor, where: str) -> None:
    # The sum is non-finite whenever any element is (a finite sum can only overflow for activations
    # near 1e38, which deserve the error too); 20x cheaper than an elementwise test on every batch.
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise DataError(f"NaN/inf in calibration activations {where} ({bad} values); "
                        "check the model weights and the calibration data")


@torch.no_grad()
def capture_block_inputs(model: nn.Module, adapter: Adapter, samples: torch.Tensor,
                         batch_size: int = 8) -> list[BlockBatch]:
    blocks = adapter.block_list()
    first = blocks[0]
    sink: list = []
    blocks[0] = _Catcher(first, sink)
    device = _first_device(model)
    try:
        for i in range(0, samples.shape[0], batch_size):
            ids = samples[i:i + batch_size].to(device)
            try:
                adapter.run_model(model, ids)
            except StopForward:
                pass
            else:  # pragma: no cover - a model that never calls block 0
                raise RuntimeError("the model's forward pass did not reach block 0")
    finally:
        blocks[0] = first
    out = []
    for hidden, args, kwargs in sink:
        check_finite(hidden, "entering block 0")
        out.append(BlockBatch(hidden.detach(), adapter.clean_args(args), adapter.clean_kwargs(kwargs)))
    return out


def _first_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
