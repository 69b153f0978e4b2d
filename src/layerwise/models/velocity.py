"""How a generator is asked for its velocity: `velocity(model)(x, sigma, cond) → v`.

Three kinds of models are policies without a wrapper class of their own:
- layerwise's `FlowMLPModel` (and any module whose forward is `(sample, sigma, class_labels)`);
- `diffusers` transformers and UNets (`DiTTransformer2DModel`, `Transformer2DModel`,
  `UNet2DModel`, `UNet2DConditionModel`, ...): the timestep is σ·1000 (the scale their time
  embeddings are trained on); integer conditions go to `class_labels`, float ones to
  `encoder_hidden_states`, integer token sequences [B, T] to `encoder_hidden_states` as one-hot
  states of the cross-attention width (`data.pairs`); the velocity is the output's `.sample`;
- any callable `f(x, sigma, cond)` (plain PyTorch velocity networks).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _is_diffusers(model) -> bool:
    return any(c.__module__.startswith("diffusers.") for c in type(model).__mro__)


def velocity(model, call=None) -> Velocity:
    """The velocity function of `model`; `call` is what is actually invoked (default the model itself;
    a data-parallel wrapper of it during training)."""
    target = model if call is None else call
    if _is_diffusers(model):
        params = inspect.signature(model.forward).parameters

        def fn(x, sigma, cond):
            kw = {"timestep": sigma * 1000.0, "return_dict": True}
            if cond is not None:
                if cond.is_floating_point():
                    kw["encoder_hidden_states"] = cond
                elif cond.ndim == 2 and "encoder_hidden_states" in params:
                    # prompt token ids: one-hot encoder states of the cross-attention width (data.pairs)
                    kw["encoder_hidden_states"] = torch.nn.functional.one_hot(
                        cond.long(), model.config.cross_attention_dim).float()
                elif "class_labels" in params:
                    kw["class_labels"] = cond
                else:
                    raise TypeError(f"{type(model).__name__} takes no class labels")
            return target(x, **kw).sample
        return fn
    return lambda x, sigma, cond: target(x, sigma, cond)


def forward_chunks(fn: Velocity, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
                   batch: int) -> torch.Tensor:
    """`fn` over rows in chunks of `batch` (one forward call per row either way)."""
    if x.shape[0] <= batch:
        return fn(x, sigma, cond)
    return torch.cat([fn(x[i:i + batch], sigma[i:i + batch], cond[i:i + batch])
                      for i in range(0, x.shape[0], batch)])


def num_conditions(model) -> int:
    """How many class conditions a class-conditional generator takes."""
    cfg = getattr(model, "config", None)
    for key in ("num_classes", "num_embeds_ada_norm", "num_class_embeds"):
        n = getattr(cfg, key, None) if cfg is not None else None
        if isinstance(n, int) and n > 0:
            return n
    from ..errors import ConfigError

    raise ConfigError(f"{type(model).__name__} is not a class-conditional generator (no num_classes in its config)")


def sample_shape(model) -> tuple[int, ...]:
    cfg = model.config
    if getattr(cfg, "sample_shape", None):
        return tuple(cfg.sample_shape)
    if hasattr(cfg, "in_channels") and hasattr(cfg, "sample_size"):
        size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size, cfg.sample_size)
        return (cfg.in_channels, *size)
    from ..errors import ConfigError

    raise ConfigError(f"cannot tell the sample shape of {type(model).__name__} from its config")
