"""Resolve what the user passed as MODEL into something the engine can run on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError, ModelLoadError
from ..io.load import load_model
from ..models.loader import LoadedModel, load_tokenizer


@dataclass
class Source:
    spec: str
    path: Path | None           # a local save_pretrained directory, when there is one
    loaded: LoadedModel | None  # the model in memory, when it was loaded (or given) whole
    tokenizer: object

    @property
    def can_stream(self) -> bool:
        return self.path is not None and (
            (self.path / "model.safetensors").exists() or (self.path / "model.safetensors.index.json").exists())


def resolve(model, tokenizer=None, load: bool = True) -> Source:
    """`model`: zoo:NAME, a directory, a hub id, a LoadedModel or an nn.Module.

    With `load=False` a local directory is only checked (config, weights, tokenizer), not loaded:
    the engine can then stream its blocks.
    """
    if isinstance(model, LoadedModel):
        return Source(model.source, model.path, model, tokenizer or model.tokenizer)
    if isinstance(model, nn.Module):
        return Source(type(model).__name__, None, LoadedModel(model, tokenizer, type(model).__name__), tokenizer)
    if not isinstance(model, str):
        raise ModelLoadError(f"cannot use an object of type {type(model).__name__} as a model")
    path = None
    if model.startswith("zoo:"):
        from .. import zoo

        path = zoo.path(model[4:])
    elif Path(model).expanduser().exists():
        path = Path(model).expanduser()
    if path is not None and not load:
        from ..models.loader import WEIGHT_FILES

        if not path.is_dir():
            raise ModelLoadError(f"model path {path} is not a directory")
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json; not a save_pretrained model directory")
        if not any((path / f).exists() for f in WEIGHT_FILES):
            raise ModelLoadError(f"{path} has no weights (expected model.safetensors or pytorch_model.bin)")
        from ..models.files import check_model_dir

        check_model_dir(path)
        tok = load_tokenizer(path, tokenizer) if not (tokenizer is not None and not isinstance(tokenizer, str)) \
            else tokenizer
        return Source(model, path, None, tok)
    lm = load_model(model, tokenizer=tokenizer if isinstance(tokenizer, str) else None)
    tok = tokenizer if (tokenizer is not None and not isinstance(tokenizer, str)) else lm.tokenizer
    return Source(model, lm.path, lm, tok)


def calibration_inputs(calib, tokenizer, nsamples: int, seqlen: int, seed: int, spec: str,
                       adapter=None) -> torch.Tensor:
    """Calibration batches: sampled from a corpus by name (needs the tokenizer), images for a model that
    takes pixels (the digit canvases it was trained on), or given as a tensor whose first dimension is
    the sample (any model input: token ids, pixels, features)."""
    from ..models.inputs import ModelInputs

    if isinstance(calib, ModelInputs):
        return calib
    if isinstance(calib, torch.Tensor):
        if calib.dim() < 1 or calib.shape[0] < 1:
            raise DataError(f"calibration tensor of shape {tuple(calib.shape)} has no samples")
        return calib
    if adapter is not None and hasattr(adapter, "calibration_samples"):
        return _adapter_samples(calib, adapter, nsamples, seed, spec)
    if adapter is not None and any(f.kind == "pixels" for f in adapter.inputs) and hasattr(adapter, "image_shape"):
        return calibration_images(calib, adapter, nsamples, seed, spec)
    if tokenizer is None:
        hint = ""
        d = model_dir(spec)
        cfg = d / "config.json" if d is not None else None
        if cfg is not None and cfg.is_file() and "ForImageClassification" in cfg.read_text():
            hint = "; convolutional image classifiers are compressed with `layerwise search`"
        raise DataError(f"model {spec} has no tokenizer; pass --tokenizer (or calibration inputs as a tensor){hint}")
    from ..data.tokens import calibration_samples

    return calibration_samples(calib, tokenizer, nsamples, seqlen, seed)


def calib_name(calib) -> str:
    if isinstance(calib, str):
        return calib
    return f"inputs{calib.describe()}" if hasattr(calib, "describe") else f"tensor{tuple(calib.shape)}"


def _card(spec) -> dict:
    import json

    d = model_dir(spec)
    return json.loads((d / "card.json").read_text()) if d is not None and (d / "card.json").is_file() else {}


def _adapter_samples(calib, adapter, nsamples: int, seed: int, spec):
    """Multi-input models (image-caption pairs, image questions): the adapter draws them from the task its
    card describes."""
    if calib not in ("stdlib", "digits"):
        raise DataError(f"{adapter.name} models calibrate on 'digits' (the digit task they were trained on) or "
                        f"on ModelInputs given through the Python API; got --calib {calib}")
    return adapter.calibration_samples(_card(spec), nsamples, seed)


def model_dir(model) -> Path | None:
    """The local directory a model spec names (zoo:NAME or a path), without loading anything."""
    if isinstance(model, LoadedModel):
        return model.path
    if not isinstance(model, str):
        return None
    if model.startswith("zoo:"):
        from .. import zoo

        try:
            return zoo.path(model[4:])
        except Exception:  # an unknown zoo name is reported by the loader, with the list of names
            return None
    p = Path(model).expanduser()
    return p if p.exists() else None


def calibration_images(calib: str, adapter, nsamples: int, seed: int, spec: str) -> torch.Tensor:
    """`nsamples` training canvases (a seeded draw) at the model's input size, as its card describes them."""
    from ..data.images import canvases_for

    if calib not in ("stdlib", "digits"):
        raise DataError(f"image models calibrate on 'digits' (scikit-learn digit canvases) or a tensor of images; "
                        f"got --calib {calib}")
    card = _card(spec)
    _, size, _ = adapter.image_shape()
    images = canvases_for("train", size, card.get("data"))
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:nsamples]
    pixels = images.pixels[idx]
    adapter.check_pixels(pixels)
    return pixels
