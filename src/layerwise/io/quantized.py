"""GPTQ-format checkpoints with per-module bit widths (`quantization_config.dynamic`).

Written by `layerwise quantize`; read back here into a model whose linears hold the dequantized
weights (what the quantized model computes). Also reads GPTQ checkpoints from other tools when
their layout is the standard v1 one (`checkpoint_format: gptq`).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .formats import Format, register_format
from .gptq_pack import from_gptq


def module_bits(name: str, qc: dict) -> int | None:
    """Bits of module `name` under a GPTQ config with `dynamic` overrides (None = not quantized)."""
    bits = qc.get("bits")
    for pattern, override in (qc.get("dynamic") or {}).items():
        if pattern.startswith("-:"):
            if re.match(pattern[2:], name):
                return None
            continue
        pat = pattern[2:] if pattern.startswith("+:") else pattern
        if re.match(pat, name):
            bits = override.get("bits", bits)
    return bits


def gptq_config(path: Path) -> dict | None:
    cfg = json.loads((Path(path) / "config.json").read_text())
    qc = cfg.get("quantization_config")
    if isinstance(qc, dict) and qc.get("quant_method") == "gptq":
        return qc
    return None


def load_gptq(path: Path, dtype: torch.dtype = torch.float32):
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from transformers import AutoConfig

    from ..models.adapters.base import CONV1D
    from ..models.adapters import model_class

    path = Path(path)
    qc = gptq_config(path)
    if qc.get("checkpoint_format", "gptq") != "gptq":
        raise ModelLoadError(f"{path}: GPTQ checkpoint format {qc.get('checkpoint_format')!r} is not supported")
    config = AutoConfig.from_pretrained(path)
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    cls = model_class(config)
    from .structured import apply_structure

    with init_empty_weights(include_buffers=False):
        model = cls.from_config(config, dtype=dtype)
        apply_structure(model, path)          # a width-pruned model, quantized afterwards
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                tensors[k] = h.get_tensor(k)
    modules = dict(model.named_modules())
    for key in [k for k in tensors if k.endswith(".qweight")]:
        base = key[: -len(".qweight")]
        mod = modules.get(base)
        if mod is None:
            raise ModelLoadError(f"{path}: quantized tensor {key} names no module of the model")
        bits = module_bits(base, qc)
        if bits is None:
            raise ModelLoadError(f"{path}: {base} is packed but the config excludes it")
        transposed = bool(CONV1D) and isinstance(mod, CONV1D)
        out_f, in_f = (mod.weight.shape[1], mod.weight.shape[0]) if transposed else tuple(mod.weight.shape)
        part = {s: tensors.pop(f"{base}.{s}") for s in ("qweight", "qzeros", "scales", "g_idx")}
        W = from_gptq(part, bits, in_f, out_f)
        tensors[f"{base}.weight"] = W.t() if transposed else W
    for k, v in tensors.items():
        if v.is_floating_point():
            v = v.to(dtype)
        try:
            set_module_tensor_to_device(model, k, "cpu", value=v)
        except (AttributeError, KeyError, ValueError) as e:
            raise ModelLoadError(f"{path}: cannot place tensor {k}: {e}") from e
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"{path}: weights missing from the checkpoint: {', '.join(missing[:4])}")
    model.eval()
    return model


register_format(Format("gptq", "config.json: quantization_config.quant_method = gptq",
                       lambda p: gptq_config(p) is not None, load_gptq,
                       "GPTQ v1 packed weights with per-module bits (quantization_config.dynamic)"))
