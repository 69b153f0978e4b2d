"""Architecture adapters, one registry keyed by `config.model_type`."""
from . import convnets, decoders, diffusion, vision  # noqa: F401  (registers the built-in adapters)
from .plain import adapt
from .base import (ADAPTERS, Adapter, LinearRef, StopForward, causal_config, compile_patterns, get_adapter,
                   model_class, name_matches, register)

__all__ = ["ADAPTERS", "Adapter", "adapt", "LinearRef", "StopForward", "causal_config", "compile_patterns", "get_adapter",
           "model_class", "name_matches", "register"]
