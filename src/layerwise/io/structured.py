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
    """A Llama-like model whose blocks no longer have the widths its config states."""
    from ..models.adapters import get_adapter

    if get_adapter(model).name != "llama":
        return False
    from ..models.adapters.layout import layouts

    c = model.config
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return any(lay.kv_heads * lay.rep != c.num_attention_heads or lay.kv_heads != kv
               or lay.intermediate != c.intermediate_size for lay in layouts(model))


def write_structure(model: nn.Module, directory: Path) -> str:
    """Rewrite the config (uniform widths) or write the per-layer marker for weights saved separately
    (e.g. streamed shards); call before the config is saved. Returns how the result loads."""
    from ..models.adapters.layout import layouts, uniform_widths, widths

    cfg = model.config
    uni = uniform_widths(model)
    head_dim = layouts(model)[0].head_dim
    if uni is not None and cfg.hidden_size % uni["num_attention_heads"]:
        uni = None
    cfg.head_dim = head_dim
    if uni is not None:
        cfg.intermediate_size = uni["intermediate_size"]
        cfg.num_attention_heads = uni["num_attention_heads"]
        cfg.num_key_value_heads = uni["num_key_value_heads"]
        (Path(directory) / MARKER).unlink(missing_ok=True)
        return "stock from_pretrained (uniform widths)"
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


def load_structured(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    meta = json.loads((path / MARKER).read_text())
    if meta.get("kind") != "width":
        raise ModelLoadError(f"{path / MARKER}: unknown kind {meta.get('kind')!r}")
    config = AutoConfig.from_pretrained(path)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    from ..models.adapters import get_adapter

    blocks = get_adapter(model).block_list()
    hd = int(meta["head_dim"])
    for spec in meta["layers"]:
        b = blocks[spec["block"]]
        a, m = b.self_attn, b.mlp
        h = a.q_proj.in_features
        nh, nkv, inter = spec["num_attention_heads"], spec["num_key_value_heads"], spec["intermediate_size"]
        with init_empty_weights(include_buffers=False):
            a.q_proj = nn.Linear(h, nh * hd, bias=a.q_proj.bias is not None)
            a.k_proj = nn.Linear(h, nkv * hd, bias=a.k_proj.bias is not None)
            a.v_proj = nn.Linear(h, nkv * hd, bias=a.v_proj.bias is not None)
            a.o_proj = nn.Linear(nh * hd, h, bias=a.o_proj.bias is not None)
            m.gate_proj = nn.Linear(h, inter, bias=m.gate_proj.bias is not None)
            m.up_proj = nn.Linear(h, inter, bias=m.up_proj.bias is not None)
            m.down_proj = nn.Linear(inter, h, bias=m.down_proj.bias is not None)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no safetensors weights")
    for f in files:
        with safe_open(str(f), "pt") as handle:
            for k in handle.keys():
                t = handle.get_tensor(k)
                try:
                    set_module_tensor_to_device(model, k, "cpu", value=t.to(dtype) if t.is_floating_point() else t)
                except (ValueError, AttributeError) as e:
                    raise ModelLoadError(f"{path}: tensor {k} does not fit the per-layer widths: {e}") from e
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"{path}: weights missing: {', '.join(missing[:4])}")
    return model.eval()


register_format(Format("width", MARKER, lambda p: (Path(p) / MARKER).exists(), load_structured,
                       "stock config + per-layer widths of a structurally pruned model"))
