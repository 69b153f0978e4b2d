"""Diffusion transformers: diffusers' `DiTTransformer2DModel` (class-conditional, adaLN-zero blocks).

Inputs are noised latents, the timestep (σ·1000 for the rectified-flow models of the zoo) and class
labels; every block embeds timestep and label itself (its `norm1.emb`), so the captured keyword
arguments of block 0 replay unchanged at every block. The calibration samples are held-out digits
noised at seeded noise levels, with their velocity targets, and the calibration loss is the
flow-matching loss the model was trained with. diffusers checkpoints are loaded whole (no block
streaming from safetensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Adapter, InputField, register


@register
class DiTAdapter(Adapter):
    name = "dit"
    model_types = ("dit",)
    blocks_path = "transformer_blocks"
    attention_path = "attn1"
    weights_prefix = "diffusion_pytorch_model"
    inputs = (InputField("hidden_states", "latents", ("batch", "channels", "height", "width")),
              InputField("timestep", "timestep", ("batch",)),
              InputField("class_labels", "condition", ("batch",), "int64"))

    @classmethod
    def matches(cls, model) -> bool:
        return type(model).__name__ == "DiTTransformer2DModel" and hasattr(model, "transformer_blocks")

    def sample_shape(self) -> tuple[int, int, int]:
        c = self.model.config
        return (c.in_channels, c.sample_size, c.sample_size)

    def model_inputs(self, inputs) -> dict:
        d = inputs.as_dict() if hasattr(inputs, "as_dict") else dict(inputs)
        return {k: d[k] for k in ("hidden_states", "timestep", "class_labels")}

    def example_inputs(self, batch: int = 2, length: int = 0, seed: int = 0) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"hidden_states": torch.randn(batch, *self.sample_shape(), generator=g),
                "timestep": torch.rand(batch, generator=g) * 1000,
                "class_labels": torch.randint(0, self.model.config.num_embeds_ada_norm, (batch,), generator=g)}

    def run_model(self, model, inputs) -> None:
        model(**self.model_inputs(inputs))

    def calibration_samples(self, card: dict, nsamples: int, seed: int):
        """Held-out digits (validation split, a seeded draw) noised at σ ~ U(0.02, 0.98), with targets."""
        return self._noised_digits("validation", nsamples, torch.Generator().manual_seed(seed), 0.02, 0.98)

    def training_batch(self, step: int, batch: int, seed: int):
        """Training digits noised at σ ~ U(0, 1) as the zoo models were trained; depends on (seed, step)."""
        return self._noised_digits("train", batch, torch.Generator().manual_seed(seed * 1_000_003 + step), 0.0, 1.0)

    def _noised_digits(self, split: str, n: int, g: torch.Generator, lo: float, hi: float):
        from ...data.images import digit_images
        from ..inputs import ModelInputs

        data = digit_images(split)
        idx = torch.randint(0, len(data), (n,), generator=g)
        x0, y = data.pixels[idx], data.labels[idx]
        if tuple(x0.shape[1:]) != self.sample_shape():
            from ...errors import DataError

            raise DataError(f"the digit images are {tuple(x0.shape[1:])}; this DiT takes {self.sample_shape()}: "
                            "pass calibration ModelInputs through the Python API")
        sigma = lo + (hi - lo) * torch.rand(n, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        s = sigma[:, None, None, None]
        return ModelInputs(hidden_states=(1 - s) * x0 + s * eps, timestep=sigma * 1000, class_labels=y,
                           target=eps - x0)

    def calibration_loss(self, model, inputs) -> torch.Tensor:
        return F.mse_loss(model(**self.model_inputs(inputs)).sample, inputs.as_dict()["target"])

    def config_num_blocks_key(self) -> str:
        return "num_layers"

    def describe(self) -> str:
        c = self.model.config
        return (f"{self.name} adapter: {self.num_blocks} DiT blocks at {self.blocks_path}, "
                f"{(c.sample_size // c.patch_size) ** 2} tokens per sample")
