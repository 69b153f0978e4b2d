"""Architecture search for pruning: shape-search methods (TAS, uniform, random) over the search
space an adapter exposes, and the supernets that relax it."""
from __future__ import annotations

from ..errors import ConfigError
from ..models.adapters import get_adapter
from . import baselines, tas  # noqa: F401  (register the methods)
from .base import SEARCHERS, Genotype, SearchConfig, ShapeSearch

def supernet_for(model, spaces=("width", "depth"), align: str = "cwi", scores=None, seqlen: int = 256):
    """The supernet of `model` over the requested kinds of choice (its adapter's search space).
    Decoders: `scores` rank the units (default weight magnitude), FLOPs are per token at `seqlen`."""
    adapter = get_adapter(model)
    if not hasattr(adapter, "search_space"):
        raise ConfigError(f"the {adapter.name} adapter exposes no search space (no searchable widths or depths)")
    space = adapter.search_space().restrict(set(spaces))
    if space.family == "cifar_resnet":
        from .cnn import SearchCifarResNet

        return SearchCifarResNet(model, space, align)
    if space.family == "decoder":
        from .decoder import SearchDecoder

        return SearchDecoder(model, space, scores, seqlen)
    raise ConfigError(f"no supernet for the {space.family} search space")


__all__ = ["SEARCHERS", "Genotype", "SearchConfig", "ShapeSearch", "supernet_for"]
