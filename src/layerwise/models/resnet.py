"""A CIFAR-style ResNet as a `transformers` model, with a width for every convolution.

Why a class of our own: the stock `ResNetForImageClassification` has one width per stage, an
ImageNet stem (7×7 stride 2 + max-pool) that erases 16×16 inputs, and no way to describe the
per-convolution widths and per-stage depths an architecture search produces. This one has the
CIFAR shape of He et al. (3×3 stem, stages of basic blocks, global average pool, linear head) and a
config that states every convolution's width, so a dense network and any searched or pruned shape
are the same class, saved with `save_pretrained` and loaded with `AutoModelForImageClassification`.

Blocks are one flat `nn.ModuleList` (`resnet.blocks`) with `config.stage_of_block` naming each
block's stage, so the block-level machinery sees a plain stack. A block whose input and output
widths differ, or that downsamples, has a 1×1 convolution + batch-norm shortcut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import ImageClassifierOutput


class CifarResNetConfig(PretrainedConfig):
    model_type = "layerwise_cifar_resnet"

    def __init__(self, num_channels: int = 1, image_size: int = 16, num_labels: int = 10,
                 stage_widths=(16, 32, 64), stage_blocks=(3, 3, 3), stage_strides=(1, 2, 2),
                 stem_width: int | None = None, block_widths=None, **kwargs):
        """`block_widths`: per stage, per kept block, `[mid, out]` (the widths of its two convolutions).
        Absent: the dense network (every block of stage s has width `stage_widths[s]`)."""
        self.num_channels = int(num_channels)
        self.image_size = int(image_size)
        self.stage_widths = [int(w) for w in stage_widths]
        self.stage_blocks = [int(b) for b in stage_blocks]
        self.stage_strides = [int(s) for s in stage_strides]
        self.stem_width = int(stem_width if stem_width is not None else self.stage_widths[0])
        if block_widths is None:
            block_widths = [[[w, w] for _ in range(b)] for w, b in zip(self.stage_widths, self.stage_blocks)]
        self.block_widths = [[[int(m), int(o)] for m, o in stage] for stage in block_widths]
        if len(self.block_widths) != len(self.stage_strides):
            raise ValueError(f"block_widths has {len(self.block_widths)} stages, stage_strides {len(self.stage_strides)}")
        if any(len(stage) == 0 for stage in self.block_widths):
            raise ValueError("every stage needs at least one block")
        kwargs.setdefault("num_labels", num_labels)
        super().__init__(**kwargs)

    @property
    def stage_of_block(self) -> list[int]:
        return [s for s, stage in enumerate(self.block_widths) for _ in stage]

    @property
    def depths(self) -> list[int]:
        return [len(stage) for stage in self.block_widths]


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(cin, mid, 3, stride)
        self.conv2 = ConvBN(mid, cout, 3, 1)
        self.shortcut = ConvBN(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class CifarResNet(nn.Module):
    def __init__(self, config: CifarResNetConfig):
        super().__init__()
        self.stem = ConvBN(config.num_channels, config.stem_width, 3, 1)
        blocks, cin = [], config.stem_width
        for s, stage in enumerate(config.block_widths):
            for b, (mid, cout) in enumerate(stage):
                blocks.append(BasicBlock(cin, mid, cout, config.stage_strides[s] if b == 0 else 1))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(pixel_values))
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(2, 3))


class CifarResNetPreTrainedModel(PreTrainedModel):
    config_class = CifarResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)


class CifarResNetForImageClassification(CifarResNetPreTrainedModel):
    def __init__(self, config: CifarResNetConfig):
        super().__init__(config)
        self.resnet = CifarResNet(config)
        self.classifier = nn.Linear(self.resnet.out_channels, config.num_labels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> ImageClassifierOutput:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(f"pixel_values must be [batch, {self.config.num_channels}, H, W]; "
                             f"got {list(pixel_values.shape)}")
        logits = self.classifier(self.resnet(pixel_values))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(CifarResNetConfig.model_type, CifarResNetConfig, exist_ok=True)
AutoModelForImageClassification.register(CifarResNetConfig, CifarResNetForImageClassification, exist_ok=True)


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3×3 (padding 1) or 1×1 (padding 0) convolution with this stride."""
    return (size - 1) // stride + 1


def resnet_flops(config: CifarResNetConfig) -> int:
    """Analytic FLOPs of one image (2 per multiply-add, convolutions and the linear head: what
    `torch.utils.flop_counter` counts)."""
    size = config.image_size
    total = 2 * 9 * size * size * config.num_channels * config.stem_width
    cin = config.stem_width
    for s, stage in enumerate(config.block_widths):
        for b, (mid, cout) in enumerate(stage):
            stride = config.stage_strides[s] if b == 0 else 1
            size = conv_out(size, stride)
            total += 2 * 9 * size * size * (cin * mid + mid * cout)
            if stride != 1 or cin != cout:
                total += 2 * size * size * cin * cout
            cin = cout
    return total + 2 * cin * config.num_labels
