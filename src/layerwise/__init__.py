"""layerwise: compress trained neural networks layer by layer.

Python API (the CLI calls the same functions):
    layerwise.load(spec)                    -> LoadedModel (zoo:NAME, directory, hub id)
    layerwise.load(dir, depth=N)            -> a member of a pluggable depth family
    layerwise.evaluate(model, data=...)     -> EvalReport
    layerwise.data.load_corpus(name)        -> Corpus
    layerwise.data.calibration_samples(...) -> LongTensor [n, L]
    layerwise.zoo.load(name)                -> LoadedModel
"""
import os as _os
import sys as _sys

# scipy's OpenBLAS (Gram matrices and Cholesky factors, `layerwise.linalg`) keeps its worker threads
# spinning ~0.1 s after each call by default, taking a core from torch's next kernels; the variable
# bounds the spin and is read once, when that OpenBLAS loads — so it is set before anything imports
# scipy, unless the user chose a value.
# `linalg.syrk_` is used only when the bound holds (else the blocked torch product is faster overall).
_user_spin = _os.environ.get("OPENBLAS_THREAD_TIMEOUT")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
_BLAS_SPIN_BOUNDED = (_user_spin is not None or "scipy.linalg" not in _sys.modules) and \
    _os.environ["OPENBLAS_THREAD_TIMEOUT"].strip().isdigit() and int(_os.environ["OPENBLAS_THREAD_TIMEOUT"]) <= 8

from ._version import __version__  # noqa: E402

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
