"""Model loading and architecture adapters."""
from .loader import LoadedModel, is_causal_lm

__all__ = ["LoadedModel", "is_causal_lm"]
