"""The token-routed checkpoint: a stock model directory plus `token_routing.json` (selector, its
config, the per-block schedule — shares skipped by a decoder's blocks, or tokens leaving an encoder
after each block (`kind: encoder`) — the mode) and, for trained selectors, `token_router.safetensors`.
`layerwise.load` returns the model with its routing installed; stock `from_pretrained` still loads
the dense model it was made from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ConfigError, ModelLoadError
from ..io.formats import Format, register_format

MARKER = "token_routing.json"
ROUTER = "token_router.safetensors"
VERSION = 1


def write(directory: Path, routing) -> None:
    sel = routing.selector
    if hasattr(routing, "ratio"):
        meta = {"version": VERSION, "kind": "spatial", "selector": sel.config_dict(), "ratio": routing.ratio,
                "max_downsample": routing.max_downsample, "seed": routing.seed, "cfg": routing.cfg}
    elif hasattr(routing, "r"):
        meta = {"version": VERSION, "kind": "encoder", "selector": sel.config_dict(), "r": routing.r,
                "mode": routing.mode}
    else:
        meta = {"version": VERSION, "kind": "decoder", "selector": sel.config_dict(), "drop": routing.drop,
                "mode": routing.mode, "kv_policy": "decode_dense_last"}
    (Path(directory) / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    if getattr(sel, "router", None) is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in sel.router.state_dict().items()},
                  str(Path(directory) / ROUTER))


def save_routed(directory: Path, model, tokenizer, routing, inputs: dict, what: str) -> str:
    """The stock model, its tokenizer and the routing's files into `directory`; then reloaded by
    `layerwise.load` and compared bit for bit with the model running the routing. Returns the check's line."""
    from ..io.verify import check_reload

    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    write(directory, routing)
    with routing:
        return check_reload(model, directory, inputs, what=what)


def selector_from(meta: dict, model, directory: Path | None = None):
    from .selectors import TOKEN_SELECTORS

    cfg = dict(meta["selector"])
    sel = TOKEN_SELECTORS.create(cfg.pop("name"), cfg)
    if sel.trainable:
        router = sel.build(model)
        f = Path(directory) / ROUTER if directory is not None else None
        if f is None or not f.exists():
            raise ModelLoadError(f"{directory}: the '{sel.name}' selector needs {ROUTER}")
        from safetensors.torch import load_file

        state = load_file(str(f))
        try:
            router.load_state_dict(state)
        except RuntimeError as e:
            raise ModelLoadError(f"{f} is a router for another model or selector: {str(e).splitlines()[0]}") from e
        router.eval()
    return sel


def load(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    from ..models.adapters import model_class
    from transformers import AutoConfig

    from .merging import EncoderReduction
    from .routing import TokenRouting

    try:
        meta = json.loads((path / MARKER).read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path / MARKER} is not valid JSON: {e}") from e
    if meta.get("version") != VERSION:
        raise ModelLoadError(f"{path / MARKER}: version {meta.get('version')!r} is not supported")
    from ..io.diffusers_format import diffusers_config, load_diffusers

    if diffusers_config(path) is not None:
        model = load_diffusers(path, dtype)
    else:
        config = AutoConfig.from_pretrained(path)
        model = model_class(config).from_pretrained(path, dtype=dtype).eval()
    sel = selector_from(meta, model, path)
    try:
        if meta.get("kind") == "spatial":
            from .diffusion import SpatialTokenPruning

            SpatialTokenPruning(model, sel, meta["ratio"], meta.get("max_downsample", 1), meta.get("seed", 0),
                                meta.get("cfg", False)).install()
        elif meta.get("kind") == "encoder":
            EncoderReduction(model, sel, meta["r"], mode=meta.get("mode", "gather")).install()
        else:
            TokenRouting(model, sel, meta["drop"], mode=meta.get("mode", "gather")).install()
    except (KeyError, ConfigError) as e:
        raise ModelLoadError(f"{path / MARKER} does not fit the model in {path}: {e}") from e
    return model


FORMAT = register_format(Format("tokens", MARKER, lambda p: (p / MARKER).exists(), load,
                                "token routing (selector + schedule + router) over a stock checkpoint"), first=True)
