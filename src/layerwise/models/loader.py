"""Model-side loading pieces: the loaded-model record, model classes, tokenizers, the hub.

The loader that dispatches on checkpoint formats is `layerwise.io.load` (the artifact layer); this
module knows no formats. The model class comes from the adapters (`model_class`): causal LMs with their head, everything else
`AutoModel`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .adapters.base import causal_config, model_class  # noqa: F401  (re-exported)
from ..utils.hub import hub_reachable

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "tokenizer.model")


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


def output_tensor(out) -> torch.Tensor:
    """What a model computes, whatever its head: logits of an LM, last hidden states of an encoder,
    the tensor itself for models that return one (velocity networks)."""
    if isinstance(out, torch.Tensor):
        return out
    t = getattr(out, "logits", None)
    if t is None:
        t = getattr(out, "logits_per_image", None)      # a dual encoder: the image-text similarities
    if t is None:
        t = getattr(out, "sample", None)                # a diffusers generator: its prediction
    return out.last_hidden_state if t is None else t


def is_causal_lm(model: torch.nn.Module) -> bool:
    archs = getattr(getattr(model, "config", None), "architectures", None) or []
    name = type(model).__name__
    return name.endswith(("ForCausalLM", "LMHeadModel")) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs if a == name)


def check_against_config(cls, config, tensors: dict, path: Path) -> None:
    """Shapes in the checkpoint must be those the config implies (checked on an empty skeleton)."""
    from accelerate import init_empty_weights

    from .files import check_shapes

    try:
        with init_empty_weights(include_buffers=False):
            skeleton = cls.from_config(config)
    except Exception as e:
        raise ModelLoadError(f"{path / 'config.json'} does not describe a buildable model: {e}") from e
    check_shapes(skeleton, tensors, path)


def load_tokenizer(path: Path | str | None, override: str | None):
    from transformers import AutoTokenizer

    if override:
        if override.startswith("zoo:"):
            from .shipped import path as shipped_path

            return AutoTokenizer.from_pretrained(shipped_path(override[4:]))
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


def load_from_hub(repo: str, dtype: torch.dtype, tokenizer: str | None) -> LoadedModel:
    from transformers import AutoConfig, AutoTokenizer

    online = hub_reachable()
    try:
        config = AutoConfig.from_pretrained(repo, local_files_only=not online)
    except Exception as e:
        from .shipped import names as zoo_names

        hint = f" (shipped models: {', '.join('zoo:' + n for n in zoo_names())})"
        if not online:
            raise ModelLoadError(f"unknown model '{repo}': no such directory, and the hub is unreachable "
                                 f"and it is not in the local cache{hint}") from e
        raise ModelLoadError(f"unknown model '{repo}': {type(e).__name__}: {e}{hint}") from e
    cls = model_class(config)
    try:
        model = cls.from_pretrained(repo, dtype=dtype, local_files_only=not online)
    except Exception as e:
        raise ModelLoadError(f"cannot load weights of '{repo}': {type(e).__name__}: {e}") from e
    model.eval()
    tok = None
    if tokenizer:
        tok = load_tokenizer(None, tokenizer)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(repo, local_files_only=not online)
        except Exception:
            tok = None
    return LoadedModel(model, tok, source=repo)
