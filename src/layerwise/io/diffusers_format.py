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
    diffusers.utils.logging.set_verbosity_error()     # we report missing tensors ourselves, as an error
    try:
        model, report = cls.from_pretrained(path, torch_dtype=dtype, output_loading_info=True)
    except Exception as e:  # corrupt or mismatched tensors surface as many exception types
        raise ModelLoadError(f"cannot load the {name} weights in {path}: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
    # diffusers initialises missing tensors at random with a warning; a checkpoint without some of its
    # weights is broken, not a model to run
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in (report.get(kind) or []))
        if keys:
            blocks = sorted({".".join(k.split(".")[:2]) for k in keys if k.startswith("transformer_blocks.")})
            what = f"blocks {', '.join(blocks)}" if blocks else ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
            raise ModelLoadError(f"{path}: {len(keys)} {kind.replace('_', ' ')} in the {name} checkpoint ({what}); "
                                 "the file is incomplete or belongs to another configuration")
    return model.eval()


register_format(Format("diffusers", "config.json with _diffusers_version", _detect, load_diffusers,
                       "a diffusers model (save_pretrained of a diffusers ModelMixin)"))
