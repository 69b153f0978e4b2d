"""layerwise: compress trained neural networks layer by layer.

Python API (the CLI calls the same functions):
    layerwise.load(spec)                    -> LoadedModel (zoo:NAME, directory, hub id)
    layerwise.load(dir, depth=N)            -> a member of a pluggable depth family
    layerwise.evaluate(model, data=...)     -> EvalReport
    layerwise.data.load_corpus(name)        -> Corpus
    layerwise.data.calibration_samples(...) -> LongTensor [n, L]
    layerwise.zoo.load(name)                -> LoadedModel
"""
from . import _blas  # noqa: F401  (first: it configures scipy's OpenBLAS before anything loads it)
from ._version import __version__

from .errors import ConfigError, DataError, LayerwiseError, ModelLoadError  # noqa: E402


def load(spec: str, depth=None, **kwargs):
    """Load a model; `depth=N` (or a list of intervals "s-e") plugs that member of a depth family
    (`layerwise depth --family`) in at load time."""
    from .io.load import load_model

    loaded = load_model(spec, **kwargs)
    if depth is not None:
        from .prune.family import plug

        if loaded.path is None:
            raise ConfigError(f"depth= needs a depth-family directory; {spec} is not one")
        loaded.model = plug(loaded.model, loaded.path, depth)
    return loaded


def compress(model=None, recipe=None, **kwargs):
    """Run a recipe (YAML path, dict or Recipe) on a model; see `layerwise.driver.compress`."""
    from .driver import compress as _compress

    return _compress(model, recipe, **kwargs)


def adapt(model, blocks: str, call=None, attention: str | None = None):
    """Describe a plain PyTorch module (its block list) so that layerwise can compress it."""
    from .models.adapters.plain import adapt as _adapt

    return _adapt(model, blocks, call, attention)


def evaluate(model, **kwargs):
    from .eval import evaluate as _evaluate

    return _evaluate(model, **kwargs)


__all__ = ["__version__", "adapt", "load", "compress", "evaluate", "LayerwiseError", "ConfigError", "DataError", "ModelLoadError"]
