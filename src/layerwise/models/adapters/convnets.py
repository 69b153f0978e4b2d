"""Convolutional image classifiers: the CIFAR-style ResNet (`models.resnet`)."""
from __future__ import annotations

import torch

from .. import resnet  # noqa: F401  (registers the model class with the transformers auto classes)
from .base import Adapter, InputField, register
from .space import DepthDim, SearchSpace, WidthDim, depth_candidates, width_candidates


@register
class CifarResNetAdapter(Adapter):
    """Blocks are the basic blocks (`resnet.blocks`, stages in `config.stage_of_block`); units are conv
    channels. A block's first convolution owns its middle width (coupled to the second convolution's
    input); its second convolution owns its output width (coupled to its batch-norm, its shortcut and
    the next block's input)."""

    name = "cifar_resnet"
    model_types = ("layerwise_cifar_resnet",)
    blocks_path = "resnet.blocks"
    inputs = (InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")),)

    def example_inputs(self, batch: int = 2, length: int = 0, seed: int = 0) -> dict:
        c = self.model.config
        g = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(batch, c.num_channels, c.image_size, c.image_size, generator=g)}

    def model_inputs(self, pixels: torch.Tensor) -> dict:
        return {"pixel_values": pixels}

    def run_model(self, model, inputs: torch.Tensor) -> None:
        model(pixel_values=inputs)

    def config_num_blocks_key(self) -> str:
        return "stage_blocks"

    def search_space(self) -> SearchSpace:
        c = self.model.config
        widths = [WidthDim("stem", c.stem_width, width_candidates(c.stem_width))]
        depths, i = [], 0
        for s, stage in enumerate(c.block_widths):
            ids = []
            for mid, out in stage:
                widths.append(WidthDim(f"blocks.{i}.conv1", mid, width_candidates(mid), block=i))
                widths.append(WidthDim(f"blocks.{i}.conv2", out, width_candidates(out), block=i))
                ids.append(i)
                i += 1
            depths.append(DepthDim(f"stage{s}", tuple(ids), depth_candidates(len(ids))))
        return SearchSpace("cifar_resnet", widths, depths)

    def describe(self) -> str:
        c = self.model.config
        return f"{self.name} adapter: {self.num_blocks} basic blocks in stages {c.depths}"
