"""Save and load structurally pruned models (per-layer widths) without patching transformers.

Uniform widths: the stock config is rewritten (intermediate_size, num_attention_heads,
num_key_value_heads, head_dim) and stock `from_pretrained` reloads the model. Per-layer widths: the
stock config is kept and `layerwise_model.json` lists each block's widths; `layerwise.load(path)`
builds the stock architecture, shrinks each block's linears to those shapes, then loads the weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .formats import Format, register_format

MARKER = "layerwise_model.json"


def is_width_pruned(model: nn.Module) -> bool:
    """A model whose blocks no longer have the widths its config states."""
    from ..models.adapters import get_adapter
    from ..models.adapters.layout import layouts

    adapter = get_adapter(model)
    if not hasattr(adapter, "config_widths"):
        return False
    groups, channels = adapter.config_widths()
    return any(lay.kv_heads != groups or lay.intermediate != channels for lay in layouts(model))


def write_structure(model: nn.Module, directory: Path) -> str:
    """Rewrite the config (uniform widths of a Llama-like model) or write the per-layer marker, for
    weights saved separately; call before the config is saved. Returns how the result loads."""
    from ..models.adapters import get_adapter
    from ..models.adapters.layout import layouts, uniform_widths, widths

    cfg = model.config
    head_dim = layouts(model)[0].head_dim
    adapter = get_adapter(model)
    uni = uniform_widths(model) if adapter.config_head_dim else None
    # transformers validates hidden_size % num_attention_heads even with an explicit head_dim
    if uni is not None and cfg.hidden_size % uni["num_attention_heads"]:
        uni = None
    if uni is not None:
        cfg.head_dim = head_dim
        cfg.intermediate_size = uni["intermediate_size"]
        cfg.num_attention_heads = uni["num_attention_heads"]
        cfg.num_key_value_heads = uni["num_key_value_heads"]
        (Path(directory) / MARKER).unlink(missing_ok=True)
        return "stock from_pretrained (uniform widths)"
    if adapter.config_head_dim:
        cfg.head_dim = head_dim
    (Path(directory) / MARKER).write_text(json.dumps({"kind": "width", "head_dim": head_dim,
                                                      "layers": widths(model)}, indent=1) + "\n")
    return "layerwise.load (per-layer widths)"


def save_model(model: nn.Module, tokenizer, directory: Path) -> str:
    """save_pretrained + the config/marker a structurally pruned model needs. Returns how to load it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    how = write_structure(model, directory)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return how


def apply_structure(model: nn.Module, path: Path) -> bool:
    """Cut an (empty) model of the config to the per-layer widths saved in `path`, if any were saved
    (the skeleton every loader of a width-pruned checkpoint, dense or packed, fills)."""
    from ..models.adapters.layout import layouts
    from ..models.adapters.surgery import LayerCut, shrink

    path = Path(path)
    if not (path / MARKER).exists():
        return False
    meta = json.loads((path / MARKER).read_text())
    if meta.get("kind") != "width":
        raise ModelLoadError(f"{path / MARKER}: unknown kind {meta.get('kind')!r}")
    lays = layouts(model)
    cuts = []
    for spec in meta["layers"]:
        lay = lays[spec["block"]]
        g, c = spec["num_key_value_heads"], spec["intermediate_size"]
        if not (1 <= g <= lay.kv_heads and 1 <= c <= lay.intermediate):
            raise ModelLoadError(f"{path / MARKER}: block {spec['block']} widths {g}/{c} do not fit the config")
        cuts.append(LayerCut(spec["block"], list(range(g, lay.kv_heads)), list(range(c, lay.intermediate))))
    shrink(model, cuts)
    return True


def load_structured(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The stock architecture of the config, each block cut to its saved widths, then the weights."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from transformers import AutoConfig

    from ..models.adapters import model_class

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    cls = model_class(config)
    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config, dtype=dtype)
        apply_structure(model, path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no safetensors weights")
    from ..models.files import checkpoint_renames

    for f in files:
        with safe_open(str(f), "pt") as handle:
            keys = list(handle.keys())
            name_of = {v: k for k, v in checkpoint_renames(model, keys).items()}   # legacy key → module name
            for k in keys:
                t = handle.get_tensor(k)
                try:
                    set_module_tensor_to_device(model, name_of.get(k, k), "cpu",
                                                value=t.to(dtype) if t.is_floating_point() else t)
                except (ValueError, AttributeError) as e:
                    raise ModelLoadError(f"{path}: tensor {k} does not fit the per-layer widths: {e}") from e
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"{path}: weights missing: {', '.join(missing[:4])}")
    return model.eval()


def _plain_width_checkpoint(p) -> bool:
    """Per-layer widths in plain weights; a packed checkpoint with widths belongs to the packed
    loader, which applies the widths itself — whichever format registered first."""
    from .quantized import packed_layout

    return (Path(p) / MARKER).exists() and packed_layout(Path(p)) is None


register_format(Format("width", MARKER, _plain_width_checkpoint, load_structured,
                       "stock config + per-layer widths of a structurally pruned model"))
