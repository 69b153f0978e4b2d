"""Packed quantized checkpoints: compressed-tensors `pack-quantized` (the default `layerwise quantize`
writes) and GPTQ v1 with per-module bits (`quantization_config.dynamic`; written before, still read).

A `Layout` knows one packed format: how a quantizer's codes become tensors, how tensors become codes
again, what they cost on disk and what config describes them. Both are read back here into a model
whose linears hold the dequantized weights (what the quantized model computes), and both read
checkpoints of other tools when their layout is the standard one (GPTQ `checkpoint_format: gptq`;
compressed-tensors groups targeting names, regexes or `Linear`).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelLoadError
from ..linalg import dequantize_groups
from . import ct_pack, gptq_pack
from .formats import Format, register_format


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


@dataclass(frozen=True)
class Layout:
    name: str
    key: str                                       # the tensor suffix that marks a packed linear
    suffixes: tuple[str, ...]                      # every tensor suffix a packed linear may have
    quant_method: str
    pack: Callable                                 # (q, zeros, scales, g_idx, bits, sym) -> tensors
    codes: Callable                                # (tensors, name, module_type, qc) -> (q, zeros, scales, g_idx, bits)
    packed_bits: Callable                          # (bits, groups, rows, cols, sym) -> {part: bits}

    def parts(self, tensors: dict, base: str, pop: bool = False) -> dict:
        get = tensors.pop if pop else tensors.get
        return {s: get(f"{base}.{s}") for s in self.suffixes if f"{base}.{s}" in tensors}

    def dequantize(self, part: dict, name: str, module_type: str | None, qc: dict) -> torch.Tensor:
        q, zeros, scales, g, _ = self.codes(part, name, module_type, qc)
        return dequantize_groups(q, scales, zeros, g)


def _gptq_codes(part, name, module_type, qc):
    bits = module_bits(name, qc)
    if bits is None:
        raise ModelLoadError(f"{name} is packed but the GPTQ config excludes it")
    q, zeros, scales, g = gptq_pack.gptq_codes(part, bits, part["g_idx"].numel(), part["scales"].shape[1])
    return q, zeros, scales, g, bits


def _ct_codes(part, name, module_type, qc):
    w = ct_pack.module_weights(name, qc, module_type)
    if w is None:
        raise ModelLoadError(f"{name} is packed but no config group of the compressed-tensors config covers it")
    if w.get("type", "int") != "int" or w.get("strategy") not in ct_pack.STRATEGIES:
        raise ModelLoadError(f"{name}: compressed-tensors weights of type {w.get('type')!r} and strategy "
                             f"{w.get('strategy')!r} are not read (int group/channel only)")
    bits = int(w["num_bits"])
    return (*ct_pack.ct_codes(part, bits, w.get("group_size")), bits)


GPTQ = Layout("gptq", "qweight", ("qweight", "qzeros", "scales", "g_idx"), "gptq",
              lambda q, z, s, g, bits, sym: gptq_pack.to_gptq_tensors(q, z, s, g, bits), _gptq_codes,
              lambda bits, groups, rows, cols, sym: gptq_pack.packed_bits(bits, groups, rows, cols))
COMPRESSED_TENSORS = Layout(
    "compressed-tensors", "weight_packed", ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point",
                                            "weight_g_idx"), "compressed-tensors",
    lambda q, z, s, g, bits, sym: ct_pack.to_ct_tensors(q, z, s, bits, sym), _ct_codes, ct_pack.ct_packed_bits)
LAYOUTS = {lay.name: lay for lay in (COMPRESSED_TENSORS, GPTQ)}


def quantization_config(path: Path) -> dict | None:
    p = Path(path) / "config.json"
    if not p.exists():
        return None
    try:
        qc = json.loads(p.read_text()).get("quantization_config")
    except (json.JSONDecodeError, AttributeError):
        return None
    return qc if isinstance(qc, dict) else None


def packed_layout(path: Path) -> tuple[Layout, dict] | None:
    """(layout, quantization_config) of a packed checkpoint directory; None for any other directory."""
    qc = quantization_config(path)
    if qc is None:
        return None
    if qc.get("quant_method") == "gptq":
        return GPTQ, qc
    if qc.get("quant_method") == "compressed-tensors" and qc.get("format") == "pack-quantized":
        return COMPRESSED_TENSORS, qc
    return None


def gptq_config(path: Path) -> dict | None:
    found = packed_layout(path)
    return found[1] if found is not None and found[0] is GPTQ else None


def read_packed(path: Path, names: Callable[[str], bool] = lambda k: True) -> tuple[Layout, dict, dict] | None:
    """(layout, config, {tensor name: tensor}) of the packed tensors of a checkpoint (None if not packed)."""
    from safetensors import safe_open

    found = packed_layout(path)
    if found is None:
        return None
    layout, qc = found
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            tensors.update({k: h.get_tensor(k) for k in h.keys()
                            if k.rsplit(".", 1)[-1] in layout.suffixes and names(k)})
    return layout, qc, tensors


def load_packed(path: Path, dtype: torch.dtype = torch.float32):
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open
    from transformers import AutoConfig

    from ..models.adapters.base import CONV1D
    from ..models.adapters import model_class

    path = Path(path)
    layout, qc = packed_layout(path)
    if layout is GPTQ and qc.get("checkpoint_format", "gptq") != "gptq":
        raise ModelLoadError(f"{path}: GPTQ checkpoint format {qc.get('checkpoint_format')!r} is not supported")
    config = copy.deepcopy(AutoConfig.from_pretrained(path))
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
    for key in [k for k in tensors if k.endswith("." + layout.key)]:
        base = key[: -len(layout.key) - 1]
        mod = modules.get(base)
        if mod is None:
            raise ModelLoadError(f"{path}: quantized tensor {key} names no module of the model")
        transposed = bool(CONV1D) and isinstance(mod, CONV1D)
        out_f, in_f = (mod.weight.shape[1], mod.weight.shape[0]) if transposed else tuple(mod.weight.shape)
        try:
            W = layout.dequantize(layout.parts(tensors, base, pop=True), base, type(mod).__name__, qc)
        except ModelLoadError as e:
            raise ModelLoadError(f"{path}: {e}") from e
        if tuple(W.shape) != (out_f, in_f):
            raise ModelLoadError(f"{path}: {base} unpacks to {tuple(W.shape)}, the model expects {(out_f, in_f)}")
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


def _is(layout: Layout) -> Callable[[Path], bool]:
    def detect(p: Path) -> bool:
        found = packed_layout(p)
        return found is not None and found[0] is layout
    return detect


register_format(Format("compressed-tensors", "config.json: quantization_config.format = pack-quantized",
                       _is(COMPRESSED_TENSORS), load_packed,
                       "compressed-tensors pack-quantized int weights, one config group per bit width "
                       "(read without the compressed-tensors package)"))
register_format(Format("gptq", "config.json: quantization_config.quant_method = gptq", _is(GPTQ), load_packed,
                       "GPTQ v1 packed weights with per-module bits (quantization_config.dynamic)"))
