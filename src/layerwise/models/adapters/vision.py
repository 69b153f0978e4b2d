"""Vision transformers (`ViTModel`, `ViTForImageClassification`): pre-norm encoder blocks over a CLS
token and image patches.

Blocks are `layers` of the ViT (transformers 5; `encoder.layer` in 4.x). Heads own the rows of
q/k/v and the columns of the attention output projection; MLP channels own fc1 rows and fc2 columns.
The parts of a block (norms, attention, MLP) are named so the encoder token reduction can run a block
with a merge between its attention and its MLP, as ToMe places it.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from .base import Adapter, InputField, register
from .layout import Member

_BLOCK_PATHS = ("vit.layers", "layers", "vit.encoder.layer", "encoder.layer")


@register
class ViTAdapter(Adapter):
    name = "vit"
    model_types = ("vit",)
    attention_path = "attention"
    inputs = (InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")),)
    default_ignore = ("classifier", "embeddings", "pooler")

    @classmethod
    def matches(cls, model) -> bool:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return mt in cls.model_types and any(cls._resolve(model, p) is not None for p in _BLOCK_PATHS)

    def __init__(self, model):
        super().__init__(model)
        self.blocks_path = next(p for p in _BLOCK_PATHS if self._resolve(model, p) is not None)
        self.final_norm_path = "vit.layernorm" if self.blocks_path.startswith("vit.") else "layernorm"
        self.head_path = "classifier" if self._resolve(model, "classifier") is not None else None

    # --- inputs ---------------------------------------------------------------------------------
    def image_shape(self) -> tuple[int, int, int]:
        c = self.model.config
        size = c.image_size if isinstance(c.image_size, int) else c.image_size[0]
        return c.num_channels, size, size

    def example_inputs(self, batch: int = 2, length: int = 0, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(batch, *self.image_shape(), generator=g)}

    def model_inputs(self, pixels: torch.Tensor) -> dict:
        self.check_pixels(pixels)
        return {"pixel_values": pixels}

    def check_pixels(self, pixels: torch.Tensor) -> None:
        want = self.image_shape()
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != want:
            raise ConfigError(f"the model takes images of shape [batch, {want[0]}, {want[1]}, {want[2]}]; "
                              f"got {list(pixels.shape)}")

    def run_model(self, model, inputs: torch.Tensor) -> None:
        model(**self.model_inputs(inputs))

    def num_tokens(self) -> int:
        """Tokens a block sees: the CLS token and one per patch."""
        c = self.model.config
        _, size, _ = self.image_shape()
        return 1 + (size // c.patch_size) ** 2

    # --- the head (losses from a block's output) --------------------------------------------------
    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self._resolve(self.model, self.final_norm_path)(hidden)
        if self.head_path is None:
            return h
        return self._resolve(self.model, self.head_path)(h[:, 0])

    # --- the parts of a block --------------------------------------------------------------------
    def block_parts(self, block: nn.Module) -> dict:
        """norm1 → attention(h, additive mask) → +residual, norm2 → mlp → +residual."""
        return {"norm1": block.layernorm_before, "attention": block.attention, "norm2": block.layernorm_after,
                "mlp": block.mlp, "key": block.attention.k_proj, "heads": block.attention.num_attention_heads,
                "head_dim": block.attention.head_dim}

    # --- widths ---------------------------------------------------------------------------------
    def width_units(self, block) -> dict:
        a, m = block.attention, block.mlp
        hd = a.head_dim
        return {"hidden": self.model.config.hidden_size, "head_dim": hd, "rep": 1,
                "groups_n": a.q_proj.out_features // hd, "channels_n": m.fc1.out_features,
                "groups": [Member("q", "attention.q_proj", 0, hd), Member("k", "attention.k_proj", 0, hd),
                           Member("v", "attention.v_proj", 0, hd), Member("o", "attention.o_proj", 1, hd)],
                "channels": [Member("u", "mlp.fc1", 0, 1), Member("d", "mlp.fc2", 1, 1)]}

    def set_widths(self, block, groups: int, channels: int) -> None:
        block.attention.num_attention_heads = groups

    def config_widths(self) -> tuple[int, int]:
        c = self.model.config
        return c.num_attention_heads, c.intermediate_size

    def describe(self) -> str:
        _, size, _ = self.image_shape()
        return (f"{self.name} adapter: {self.num_blocks} encoder blocks at {self.blocks_path}, "
                f"{size}x{size} images, {self.num_tokens()} tokens")
