"""An adapter for a plain PyTorch module: the user names its block list; nothing else is assumed.

    model = layerwise.adapt(my_module, blocks="encoder.layers")
    layerwise.prune(model, method="sparsegpt", sparsity=0.5, calib=example_inputs)

The blocks' inputs (and any side inputs they receive: masks, positions) are captured from a real
forward of the whole module, so any block signature works; every `nn.Linear` (or GPT-2 `Conv1D`)
inside a block is a target. `call(model, inputs)` runs the module on one batch of calibration inputs
(default: `model(inputs)`). Results stay in memory (a plain module has no `save_pretrained`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ...errors import ConfigError
from .base import Adapter


@dataclass(frozen=True)
class PlainSpec:
    blocks: str
    call: Callable | None = None
    attention: str | None = None


class PlainAdapter(Adapter):
    name = "plain"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.spec: PlainSpec = model._layerwise_spec
        self.blocks_path = self.spec.blocks
        self.attention_path = self.spec.attention

    def run_model(self, model: nn.Module, inputs) -> None:
        if self.spec.call is not None:
            self.spec.call(model, inputs)
        else:
            model(inputs)


def adapt(model: nn.Module, blocks: str, call: Callable | None = None, attention: str | None = None) -> nn.Module:
    """Describe a plain module to layerwise: `blocks` is the dotted path of its block list, `attention`
    (optional) the dotted path of the attention module inside a block."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"adapt() needs an nn.Module (got {type(model).__name__})")
    found = Adapter._resolve(model, blocks)
    if not isinstance(found, (nn.ModuleList, nn.Sequential)) or len(found) == 0:
        raise ConfigError(f"{type(model).__name__} has no non-empty block list at '{blocks}'")
    if attention is not None and Adapter._resolve(found[0], attention) is None:
        raise ConfigError(f"block 0 of {type(model).__name__} has no module at '{attention}'")
    object.__setattr__(model, "_layerwise_spec", PlainSpec(blocks, call, attention))
    return model
