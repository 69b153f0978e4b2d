"""One loader for every model source and every checkpoint format.

`zoo:NAME` (shipped reference models), a local `save_pretrained` directory (dense, GPTQ-packed,
per-layer widths: dispatched on the format's marker, `io.formats`), or a hub id (for users with a
network). Every problem is a `ModelLoadError` with one line naming the file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..models import flow as _flow  # noqa: F401  (registers the flow generator's config with AutoConfig)
from ..models.files import check_model_dir
from ..models.adapters import model_class
from ..models.loader import (WEIGHT_FILES, LoadedModel, check_against_config, load_from_hub,
                             load_tokenizer)
from ..models.shipped import path as shipped_path
from ..utils.hf import quiet
from . import quantized as _quantized  # noqa: F401  (registers the GPTQ format)
from . import structured as _structured  # noqa: F401  (registers the per-layer-width format)
from . import diffusers_format as _diffusers  # noqa: F401  (registers diffusers model directories)
from .formats import detect, load_with

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", "./", "../", "~")) or os.sep in spec and Path(spec).expanduser().exists()
            or Path(spec).expanduser().exists())


def load_dir(path: Path, dtype: torch.dtype = torch.float32, tokenizer: str | None = None):
    """(model, tokenizer) of a model directory, whatever format it was saved in."""
    from transformers import AutoConfig

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json; not a save_pretrained model directory")
    if not any((path / f).exists() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        raise ModelLoadError(f"{path} has no weights (expected model.safetensors or pytorch_model.bin)")
    tensors = check_model_dir(path)
    if _diffusers.diffusers_config(path) is not None:       # no transformers config to read
        return load_with(detect(path), path, dtype), None
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError, json.JSONDecodeError, KeyError) as e:
        raise ModelLoadError(f"cannot read {path / 'config.json'}: {e}") from e
    fmt = detect(path)
    if fmt is not None:
        return load_with(fmt, path, dtype), load_tokenizer(path, tokenizer)
    cls = model_class(config)
    check_against_config(cls, config, tensors, path)
    try:
        model = cls.from_pretrained(path, dtype=dtype)
    except Exception as e:  # corrupt or truncated weights surface as many exception types
        raise ModelLoadError(f"cannot load weights from {path}: {type(e).__name__}: {e}") from e
    model.eval()
    return model, load_tokenizer(path, tokenizer)


def load_model(spec: str, dtype: torch.dtype = torch.float32, tokenizer: str | None = None) -> LoadedModel:
    """Load `zoo:NAME`, a local directory or a hub id; raise `ModelLoadError` with one clear line."""
    quiet()
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("no model given; pass zoo:NAME, a directory or a hub id")
    spec = spec.strip()
    if spec.startswith("zoo:"):
        d = shipped_path(spec[4:])
        model, tok = load_dir(d, dtype, tokenizer)
        card = json.loads((d / "card.json").read_text()) if (d / "card.json").exists() else None
        return LoadedModel(model, tok, source=spec, path=d, card=card)
    p = Path(spec).expanduser()
    if p.exists():
        model, tok = load_dir(p, dtype, tokenizer)
        return LoadedModel(model, tok, source=spec, path=p)
    if _looks_like_path(spec) or spec.startswith(("/", ".", "~")) or spec.endswith("/"):
        raise ModelLoadError(f"model path {spec} does not exist")
    if not _HUB_ID.match(spec):
        raise ModelLoadError(f"unknown model '{spec}': not zoo:NAME, an existing directory or a hub id")
    return load_from_hub(spec, dtype, tokenizer)


__all__ = ["load_model", "load_dir"]
