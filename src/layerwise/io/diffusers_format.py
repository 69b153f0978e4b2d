"""`diffusers` model directories: `config.json` with `_class_name` and `_diffusers_version`.

The generator's own class (`DiTTransformer2DModel`, `UNet2DConditionModel`, ...) loads it with its
`from_pretrained`; `layerwise.load`, `zoo:NAME` and every command that takes a model accept such a
directory like a `transformers` one. The tokenizer slot is empty (conditions are class labels).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .formats import Format, register_format


def diffusers_config(path: Path) -> dict | None:
    f = Path(path) / "config.json"
    try:
        cfg = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg if isinstance(cfg, dict) and "_diffusers_version" in cfg and "_class_name" in cfg else None


def _detect(path: Path) -> bool:
    return diffusers_config(path) is not None


def load_diffusers(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers

    name = diffusers_config(path)["_class_name"]
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ModelLoadError(f"{path}: config.json names the diffusers class '{name}', which diffusers "
                             f"{diffusers.__version__} does not have")
    try:
        model = cls.from_pretrained(path, torch_dtype=dtype)
    except Exception as e:  # missing / mismatched tensors surface as many exception types
        raise ModelLoadError(f"cannot load the {name} weights in {path}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
    return model.eval()


register_format(Format("diffusers", "config.json with _diffusers_version", _detect, load_diffusers,
                       "a diffusers model (save_pretrained of a diffusers ModelMixin)"))
