"""Checkpoint formats, each recognised by a marker in the output directory.

A format handler says how to recognise its directories (`detect`) and how to load them into a model
computing what was saved (`load`). The loader tries the registered handlers in order and falls back
to stock `from_pretrained`. Adding a format (the next issues' token routers, video codecs, ...) is
one handler registered here by its module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelLoadError


@dataclass(frozen=True)
class Format:
    name: str
    marker: str                                   # what identifies it, for messages and docs
    detect: Callable[[Path], bool]
    load: Callable[[Path, torch.dtype], nn.Module]
    description: str = ""


FORMATS: list[Format] = []

# Formats defined by method packages above this layer; imported by name when a directory is first
# inspected, so that `io` needs no import of them.
PLUGINS = ("layerwise.tokens.format", "layerwise.prune.family")
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if not _plugins_loaded:
        import importlib

        _plugins_loaded = True
        for name in PLUGINS:
            importlib.import_module(name)


def register_format(fmt: Format, first: bool = False) -> Format:
    """Register a handler; `first` puts it before the others (a marker inside another format's directory)."""
    if any(f.name == fmt.name for f in FORMATS):
        raise ValueError(f"format '{fmt.name}' is already registered")
    if first:
        FORMATS.insert(0, fmt)
    else:
        FORMATS.append(fmt)
    return fmt


def detect(path: Path) -> Format | None:
    _load_plugins()
    for f in FORMATS:
        if f.detect(Path(path)):
            return f
    return None


def load_with(fmt: Format, path: Path, dtype: torch.dtype) -> nn.Module:
    try:
        return fmt.load(Path(path), dtype)
    except ModelLoadError:
        raise
    except Exception as e:  # a damaged file of a known format surfaces as many exception types
        raise ModelLoadError(f"cannot load the {fmt.name} checkpoint {path}: {type(e).__name__}: {e}") from e
