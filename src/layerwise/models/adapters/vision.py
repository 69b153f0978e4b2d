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
from .towers import TowerAdapter


def _tower_path(model, candidates: tuple[str, ...]) -> str | None:
    return next((p for p in candidates if Adapter._resolve(model, p) is not None), None)


class PixelInputs:
    """Image inputs of a fixed shape (`image_shape()`), checked with a one-line error."""

    def check_pixels(self, pixels: torch.Tensor) -> None:
        want = self.image_shape()
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != want:
            raise ConfigError(f"the model takes images of shape [batch, {want[0]}, {want[1]}, {want[2]}]; "
                              f"got {list(pixels.shape)}")


def multi_positive_infonce(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE in which every same-class image-caption pair shares the target mass (the
    loss `zoo:clip-digits` is trained with, and ECoFLaP's objective on it)."""
    import torch.nn.functional as F

    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    li = -(target * F.log_softmax(logits_per_image, dim=1)).sum(1).mean()
    lt = -(target * F.log_softmax(logits_per_text, dim=1)).sum(1).mean()
    return (li + lt) / 2


def _split_inputs(inputs) -> dict:
    """Forward keywords from calibration inputs (`ModelInputs` or a dict); the loss's labels stay out."""
    from ..inputs import ModelInputs

    d = inputs.as_dict() if isinstance(inputs, ModelInputs) else dict(inputs)
    d.pop("labels", None)
    return d

_BLOCK_PATHS = ("vit.layers", "layers", "vit.encoder.layer", "encoder.layer")
_LLAVA_VISION_PATHS = ("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers",
                       "vision_tower.vision_model.encoder.layers")
_CLIP_VISION_PATHS = ("vision_model.encoder.layers",)
_CLIP_TEXT_PATHS = ("text_model.encoder.layers",)


@register
class ViTAdapter(PixelInputs, Adapter):
    name = "vit"
    model_types = ("vit",)
    attention_path = "attention"
    inputs = (InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")),)

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
class LlavaAdapter(PixelInputs, LlamaLikeAdapter):
    """LLaVA-style vision-language models: the Llama decoder's blocks (its vision tower is a CLIP encoder),
    inputs token ids with `<image>` placeholders plus pixels; the vision tokens are the placeholder span."""

    name = "llava"
    model_types = ("llava",)
    blocks_path = "model.language_model.layers"
    final_norm_path = "model.language_model.norm"
    head_path = "lm_head"
    inputs = (InputField("input_ids", "tokens", ("batch", "seq"), "int64"),
              InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")))

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

    # --- towers: the CLIP vision encoder, then the decoder ------------------------------------------
    multi_tower = True

    def towers(self) -> list[Adapter]:
        path = _tower_path(self.model, _LLAVA_VISION_PATHS)
        if path is None:
            return [self]
        self.tower_name = "language"
        return [TowerAdapter(self, path, "vision"), self]

    def model_inputs(self, inputs) -> dict:
        if isinstance(inputs, torch.Tensor):
            return {"input_ids": inputs}
        return _split_inputs(inputs)

    def calibration_samples(self, card: dict, nsamples: int, seed: int):
        """Quadrant questions with their answers (training split, a seeded draw): ids, pixels and the
        labels of the answer token (the loss of the zeroth-order score)."""
        from ...data import quadrants as qd
        from ..inputs import ModelInputs

        task = card.get("task") or {}
        v = self.model.config.vision_config
        b = qd.quadrant_batch(seed, nsamples, seed=0, split="train", size=task.get("canvas", v.image_size),
                              patch=v.patch_size, noise=task.get("noise", 0.2))
        self.check_pixels(b.pixels)
        ids = torch.cat([b.ids, b.answer[:, None]], dim=1)
        labels = torch.full_like(ids, -100)
        labels[:, -1] = b.answer
        return ModelInputs(input_ids=ids, pixel_values=b.pixels, labels=labels)

    def calibration_loss(self, model, inputs) -> torch.Tensor:
        return model(**self.model_inputs(inputs), labels=inputs.as_dict()["labels"], use_cache=False).loss

    def describe(self) -> str:
        return (f"{self.name} adapter: {self.num_blocks} decoder blocks at {self.blocks_path}, "
                f"{self.num_vision_tokens()} vision tokens per image")


@register
class CLIPAdapter(PixelInputs, Adapter):
    """CLIP-style dual encoders (`CLIPModel`): an image tower and a causal text tower, each pooled and
    projected into one space. The adapter's own blocks are the image tower's; `towers()` gives both
    (image first, as the forward runs them). Calibration samples are image-caption pairs; the loss is
    the model's own contrastive loss (`return_loss=True`), ECoFLaP's objective for CLIP."""

    name = "clip"
    model_types = ("clip",)
    attention_path = "self_attn"
    multi_tower = True
    inputs = (InputField("input_ids", "tokens", ("batch", "seq"), "int64"),
              InputField("pixel_values", "pixels", ("batch", "channels", "height", "width")))

    @classmethod
    def matches(cls, model) -> bool:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return mt in cls.model_types and _tower_path(model, _CLIP_VISION_PATHS) is not None \
            and _tower_path(model, _CLIP_TEXT_PATHS) is not None

    def __init__(self, model):
        super().__init__(model)
        self.blocks_path = _tower_path(model, _CLIP_VISION_PATHS)
        self.tower_name = "vision"

    def towers(self) -> list[Adapter]:
        return [self, TowerAdapter(self, _tower_path(self.model, _CLIP_TEXT_PATHS), "text")]

    def image_shape(self) -> tuple[int, int, int]:
        v = self.model.config.vision_config
        return v.num_channels, v.image_size, v.image_size

    def model_inputs(self, inputs) -> dict:
        if isinstance(inputs, torch.Tensor):
            raise ConfigError("a CLIP model takes image-caption pairs (ids and pixels), not one tensor")
        return _split_inputs(inputs)

    def run_model(self, model, inputs) -> None:
        model(**self.model_inputs(inputs))

    def calibration_loss(self, model, inputs) -> torch.Tensor:
        """With class labels among the inputs (the zoo's calibration samples carry them): the
        multi-positive contrastive loss the model was trained with — in a batch of digit canvases most
        captions match several images, and CLIP's one-positive loss would count those matches as
        errors. Without labels: the model's own loss (`return_loss=True`)."""
        from ..inputs import ModelInputs

        d = inputs.as_dict() if isinstance(inputs, ModelInputs) else dict(inputs)
        labels = d.pop("labels", None)
        if labels is None:
            return model(**d, return_loss=True).loss
        out = model(**d)
        return multi_positive_infonce(out.logits_per_image, out.logits_per_text, labels)

    def example_inputs(self, batch: int = 2, length: int = 8, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        t = self.model.config.text_config
        ids = torch.randint(3, t.vocab_size, (batch, max(2, min(length, t.max_position_embeddings))), generator=g)
        ids[:, -1] = t.eos_token_id
        return {"input_ids": ids, "pixel_values": torch.randn(batch, *self.image_shape(), generator=g)}

    def calibration_samples(self, card: dict, nsamples: int, seed: int):
        """Training canvases (a seeded draw) with one caption each, as the model was trained."""
        from ...data import captions as cap
        from ...data.images import canvases_for
        from ..inputs import ModelInputs

        _, size, _ = self.image_shape()
        images = canvases_for("train", size, card.get("data"))
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(images), generator=g)[:nsamples]
        pixels = images.pixels[idx]
        self.check_pixels(pixels)
        ids = cap.training_captions(images.labels[idx], g)
        if int(ids.max()) >= self.model.config.text_config.vocab_size:
            raise ConfigError("this CLIP model's vocabulary is not the digit captions' (pass calibration inputs)")
        return ModelInputs(input_ids=ids, pixel_values=pixels, labels=images.labels[idx])

    def describe(self) -> str:
        return f"{self.name} adapter: image tower at {self.blocks_path}, text tower at {_CLIP_TEXT_PATHS[0]}"
