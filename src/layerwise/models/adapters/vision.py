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
from .decoders import LlamaLikeAdapter
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


@register
class LlavaAdapter(LlamaLikeAdapter):
    """LLaVA-style vision-language models: the Llama decoder's blocks (its vision tower is a CLIP encoder),
    inputs token ids with `<image>` placeholders plus pixels; the vision tokens are the placeholder span."""

    name = "llava"
    model_types = ("llava",)
    blocks_path = "model.language_model.layers"
    final_norm_path = "model.language_model.norm"
    head_path = "lm_head"
    inputs = (InputField("input_ids", "tokens", ("batch", "seq"), "int64"),
              InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")))
    default_ignore = ("lm_head", "embed", "vision_tower", "multi_modal_projector")

    def text_config(self):
        return self.model.config.text_config

    def attention_layout(self) -> dict:
        c = self.text_config()
        heads = c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        return {"heads": heads, "kv_heads": kv, "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads}

    def config_widths(self) -> tuple[int, int]:
        return self.attention_layout()["kv_heads"], self.text_config().intermediate_size

    def image_shape(self) -> tuple[int, int, int]:
        v = self.model.config.vision_config
        return v.num_channels, v.image_size, v.image_size

    def num_vision_tokens(self) -> int:
        v = self.model.config.vision_config
        return (v.image_size // v.patch_size) ** 2

    def vision_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, N] True at the `<image>` placeholders (where the projected vision features go)."""
        return input_ids == self.model.config.image_token_id

    def example_inputs(self, batch: int = 2, length: int = 8, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        c = self.model.config
        P = self.num_vision_tokens()
        text = torch.randint(0, c.text_config.vocab_size, (batch, max(length, 2)), generator=g)
        text[text == c.image_token_id] = 0
        ids = torch.cat([text[:, :1], torch.full((batch, P), c.image_token_id), text[:, 1:]], dim=1)
        return {"input_ids": ids, "pixel_values": torch.randn(batch, *self.image_shape(), generator=g)}

    def config_num_blocks_key(self) -> str:
        return "text_config.num_hidden_layers"

    def describe(self) -> str:
        return (f"{self.name} adapter: {self.num_blocks} decoder blocks at {self.blocks_path}, "
                f"{self.num_vision_tokens()} vision tokens per image")
