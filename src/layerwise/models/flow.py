"""A class-conditional velocity network for rectified-flow generators, as a `transformers` model.

`v = model(sample, sigma, class_labels)` predicts the velocity `dx/dσ = ε − x₀` of the rectified
flow `x_σ = (1 − σ)·x₀ + σ·ε` (σ = 1 is noise, σ = 0 data). The network is the residual-free MLP of
the BranchGRPO CPU setting: `[x, sinusoidal σ embedding, class embedding] → SiLU MLP → velocity`.
It is a `PreTrainedModel` so that it is saved with `save_pretrained`, loaded by `layerwise.load` /
`AutoModel` and described by an adapter like every other model; `data_dim` may be any flattened
sample size (2-D points, 8×8 digits).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel


class FlowMLPConfig(PretrainedConfig):
    model_type = "layerwise_flow_mlp"

    def __init__(self, data_dim: int = 2, num_classes: int = 8, hidden_size: int = 128, num_layers: int = 3,
                 time_embed_dim: int = 16, class_embed_dim: int = 8, sample_shape=None, **kwargs):
        self.data_dim = int(data_dim)
        self.num_classes = int(num_classes)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.time_embed_dim = int(time_embed_dim)
        self.class_embed_dim = int(class_embed_dim)
        # the shape of one sample (e.g. [1, 8, 8]); flattened to data_dim inside the network
        self.sample_shape = [int(s) for s in (sample_shape or [self.data_dim])]
        if math.prod(self.sample_shape) != self.data_dim:
            raise ValueError(f"sample_shape {self.sample_shape} does not hold data_dim {self.data_dim} values")
        if self.time_embed_dim % 2:
            raise ValueError("time_embed_dim must be even (sin and cos halves)")
        super().__init__(**kwargs)


def sigma_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of σ·1000 (the timestep scale diffusion models use)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    arg = sigma.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class FlowMLPModel(PreTrainedModel):
    config_class = FlowMLPConfig
    base_model_prefix = "flow"
    main_input_name = "sample"

    def __init__(self, config: FlowMLPConfig):
        super().__init__(config)
        self.class_embed = nn.Embedding(config.num_classes, config.class_embed_dim)
        width = config.data_dim + config.time_embed_dim + config.class_embed_dim
        layers: list[nn.Module] = []
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.SiLU()]
            width = config.hidden_size
        self.layers = nn.Sequential(*layers)
        self.out = nn.Linear(width, config.data_dim)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight)

    def forward(self, sample: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor,
                **kwargs) -> torch.Tensor:
        n = sample.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=sample.device)
        if sigma.dim() == 0:
            sigma = sigma.expand(n)
        h = torch.cat([sample.reshape(n, -1), sigma_embedding(sigma, self.config.time_embed_dim),
                       self.class_embed(class_labels)], dim=-1)
        return self.out(self.layers(h)).reshape(sample.shape)


AutoConfig.register(FlowMLPConfig.model_type, FlowMLPConfig, exist_ok=True)
AutoModel.register(FlowMLPConfig, FlowMLPModel, exist_ok=True)
