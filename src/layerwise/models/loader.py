"""One loader for every model source.

`zoo:NAME` (shipped reference models), a local `save_pretrained` directory, or a hub id (for users
with a network). Causal LMs load through `AutoModelForCausalLM`, everything else through `AutoModel`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..utils.hf import quiet
from .hub import hub_reachable

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "tokenizer.model")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass
class LoadedModel:
    """A model, its tokenizer (may be None) and where it came from."""

    model: torch.nn.Module
    tokenizer: Any
    source: str
    path: Path | None = None
    card: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_causal_lm(self) -> bool:
        return is_causal_lm(self.model)

    @property
    def name(self) -> str:
        return self.source


def is_causal_lm(model: torch.nn.Module) -> bool:
    archs = getattr(getattr(model, "config", None), "architectures", None) or []
    name = type(model).__name__
    return name.endswith(("ForCausalLM", "LMHeadModel")) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs if a == name)


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith(("/", "./", "../", "~")) or os.sep in spec and Path(spec).expanduser().exists()
            or Path(spec).expanduser().exists())


def _causal_config(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def _load_from_dir(path: Path, dtype: torch.dtype, tokenizer: str | None):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory")
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json; not a save_pretrained model directory")
    if not any((path / f).exists() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        raise ModelLoadError(f"{path} has no weights (expected model.safetensors or pytorch_model.bin)")
    from .files import check_model_dir

    tensors = check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError, json.JSONDecodeError, KeyError) as e:
        raise ModelLoadError(f"cannot read {path / 'config.json'}: {e}") from e
    from ..io.quantized import gptq_config, load_gptq

    if gptq_config(path) is not None:
        try:
            return load_gptq(path, dtype), _load_tokenizer(path, tokenizer)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"cannot load the quantized checkpoint {path}: {type(e).__name__}: {e}") from e
    # Models whose per-layer shapes differ from the stock config (structured width pruning).
    if (path / "layerwise_model.json").exists():
        from ..io.structured import load_structured

        return load_structured(path, dtype), _load_tokenizer(path, tokenizer)
    cls = AutoModelForCausalLM if _causal_config(config) else AutoModel
    _check_against_config(cls, config, tensors, path)
    try:
        model = cls.from_pretrained(path, dtype=dtype)
    except Exception as e:  # corrupt or truncated weights surface as many exception types
        raise ModelLoadError(f"cannot load weights from {path}: {type(e).__name__}: {e}") from e
    model.eval()
    return model, _load_tokenizer(path, tokenizer)


def _check_against_config(cls, config, tensors: dict, path: Path) -> None:
    """Shapes in the checkpoint must be those the config implies (checked on an empty skeleton)."""
    from accelerate import init_empty_weights

    from .files import check_shapes

    try:
        with init_empty_weights(include_buffers=False):
            skeleton = cls.from_config(config)
    except Exception as e:
        raise ModelLoadError(f"{path / 'config.json'} does not describe a buildable model: {e}") from e
    check_shapes(skeleton, tensors, path)


def _load_tokenizer(path: Path | str | None, override: str | None):
    from transformers import AutoTokenizer

    if override:
        if override.startswith("zoo:"):
            from ..zoo import load_tokenizer as zoo_tok

            return zoo_tok(override[4:])
        src = Path(override).expanduser()
        if not src.exists():
            raise ModelLoadError(f"tokenizer path {override} does not exist")
        path = src
    if path is None:
        return None
    path = Path(path)
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {type(e).__name__}: {e}") from e


def load_model(spec: str, dtype: torch.dtype = torch.float32, tokenizer: str | None = None) -> LoadedModel:
    """Load `zoo:NAME`, a local directory or a hub id; raise `ModelLoadError` with one clear line."""
    quiet()
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError("no model given; pass zoo:NAME, a directory or a hub id")
    spec = spec.strip()
    if spec.startswith("zoo:"):
        from ..zoo import load as zoo_load

        lm = zoo_load(spec[4:], dtype=dtype)
        if tokenizer:
            lm.tokenizer = _load_tokenizer(None, tokenizer)
        return lm
    p = Path(spec).expanduser()
    if p.exists():
        model, tok = _load_from_dir(p, dtype, tokenizer)
        return LoadedModel(model, tok, source=spec, path=p)
    if _looks_like_path(spec) or spec.startswith(("/", ".", "~")) or spec.endswith("/"):
        raise ModelLoadError(f"model path {spec} does not exist")
    if not _HUB_ID.match(spec):
        raise ModelLoadError(f"unknown model '{spec}': not zoo:NAME, an existing directory or a hub id")
    return _load_from_hub(spec, dtype, tokenizer)


def _load_from_hub(repo: str, dtype: torch.dtype, tokenizer: str | None) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    online = hub_reachable()
    try:
        config = AutoConfig.from_pretrained(repo, local_files_only=not online)
    except Exception as e:
        from ..zoo import names as zoo_names

        hint = f" (shipped models: {', '.join('zoo:' + n for n in zoo_names())})"
        if not online:
            raise ModelLoadError(f"unknown model '{repo}': no such directory, and the hub is unreachable "
                                 f"and it is not in the local cache{hint}") from e
        raise ModelLoadError(f"unknown model '{repo}': {type(e).__name__}: {e}{hint}") from e
    cls = AutoModelForCausalLM if _causal_config(config) else AutoModel
    try:
        model = cls.from_pretrained(repo, dtype=dtype, local_files_only=not online)
    except Exception as e:
        raise ModelLoadError(f"cannot load weights of '{repo}': {type(e).__name__}: {e}") from e
    model.eval()
    tok = None
    if tokenizer:
        tok = _load_tokenizer(None, tokenizer)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(repo, local_files_only=not online)
        except Exception:
            tok = None
    return LoadedModel(model, tok, source=repo)
