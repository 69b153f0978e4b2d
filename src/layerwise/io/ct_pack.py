"""Bit packing in the compressed-tensors `pack-quantized` layout (what transformers and vLLM read).

compressed-tensors stores a b-bit integer grid as signed values q' ∈ [−2^(b−1), 2^(b−1) − 1] with
w = s·(q' − z'), z' = 0 for a symmetric grid. Our codes q ∈ [0, 2^b) with zero point z give
q' = q − 2^(b−1), z' = z − 2^(b−1), and its packer adds the same 2^(b−1) back before packing — so the
packed words hold q itself, as one continuous little-endian bit stream per output row
(`weight_packed` [out, ⌈in·b/32⌉] int32). Asymmetric zero points are packed the same way along the
output dimension (`weight_zero_point` [⌈out·b/32⌉, groups]).

Scales are written in float16, as GPTQ stores them: `quant.base.find_params` rounds every scale to
an fp16 value before the codes are chosen, so nothing is lost, and transformers casts them to the
model's dtype before dequantizing (the stock reload equals the weights layerwise computed with,
tests/test_quantize.py).
"""
from __future__ import annotations

import math
import re

import torch

from .gptq_pack import pack_rows, unpack_rows

STRATEGIES = ("group", "channel")
# vLLM runs q/k/v and gate/up as one fused linear each: each set needs one width and group size
VLLM_FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def to_ct_tensors(q: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, bits: int,
                  sym: bool) -> dict[str, torch.Tensor]:
    """Codes q [out, in], zeros/scales [out, groups] (groups contiguous and in order) → pack-quantized tensors."""
    out = {"weight_packed": pack_rows(q.t(), bits).t().contiguous(),
           "weight_scale": scales.half().contiguous(),
           "weight_shape": torch.tensor(list(q.shape), dtype=torch.int64)}
    if not sym:
        out["weight_zero_point"] = pack_rows(zeros.long(), bits)
    return out


def ct_codes(t: dict[str, torch.Tensor], bits: int, group_size: int | None):
    """pack-quantized tensors → codes q [out, in], zeros [out, groups], scales [out, groups], g_idx [in]."""
    rows, cols = (int(x) for x in t["weight_shape"].tolist())
    q = unpack_rows(t["weight_packed"].t().contiguous(), bits, cols).t()
    scales = t["weight_scale"].float()
    if scales.dim() == 1:
        scales = scales.view(-1, 1)
    groups = scales.shape[1]
    if "weight_zero_point" in t:
        zeros = unpack_rows(t["weight_zero_point"], bits, rows)
    else:
        zeros = torch.full((rows, groups), 2 ** (bits - 1), dtype=torch.long)
    if "weight_g_idx" in t:                   # act-order checkpoints of other tools (actorder: group)
        g_idx = t["weight_g_idx"].long()
    else:
        g = cols if groups == 1 else int(group_size or -(-cols // groups))
        g_idx = torch.arange(cols) // g
    return q, zeros, scales, g_idx


def from_ct(t: dict[str, torch.Tensor], bits: int, group_size: int | None) -> torch.Tensor:
    q, zeros, scales, g = ct_codes(t, bits, group_size)
    return scales[:, g] * (q.float() - zeros[:, g].float())


def ct_packed_bits(bits: int, groups: int, rows: int, cols: int, sym: bool) -> dict:
    """Storage of one linear in the pack-quantized layout, in bits."""
    rep = {"weights": 32 * math.ceil(cols * bits / 32) * rows, "scales": 16 * rows * groups, "shape": 128}
    if not sym:
        rep["zeros"] = 32 * math.ceil(rows * bits / 32) * groups
    return rep


def scheme_key(bits: int, group_size: int, cols: int, sym: bool) -> tuple:
    """(bits, group size or -1 for one group per row, symmetric): one config group per distinct key."""
    gs = -1 if group_size <= 0 or group_size >= cols else group_size
    return bits, gs, sym


def ct_config(schemes: dict[str, tuple], ignore: list[str]) -> dict:
    """quantization_config of a checkpoint whose linear `name` has scheme `schemes[name]` (`scheme_key`)."""
    groups: dict[tuple, list[str]] = {}
    for name, key in sorted(schemes.items()):
        groups.setdefault(key, []).append(name)
    cfg_groups = {}
    for i, ((bits, gs, sym), names) in enumerate(sorted(groups.items())):
        cfg_groups[f"group_{i}"] = {
            "targets": [f"re:^{re.escape(n)}$" for n in names],
            "weights": {"num_bits": bits, "type": "int", "symmetric": sym,
                        "strategy": "channel" if gs == -1 else "group", "group_size": None if gs == -1 else gs,
                        "dynamic": False, "actorder": None, "observer": "minmax"},
            "input_activations": None, "output_activations": None, "format": "pack-quantized"}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": cfg_groups,
            "ignore": sorted(ignore), "quantization_status": "compressed", "kv_cache_scheme": None,
            "sparsity_config": {}, "transform_config": {}}


def _matches(target: str, name: str, module_type: str | None) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or (module_type is not None and target == module_type)


def module_weights(name: str, qc: dict, module_type: str | None = None) -> dict | None:
    """The `weights` arguments of the config group covering module `name` (None = not quantized).
    Targets are regexes (`re:`), module names or class names (`Linear`), as other tools write them."""
    if any(_matches(t, name, module_type) for t in qc.get("ignore") or []):
        return None
    for group in (qc.get("config_groups") or {}).values():
        if any(_matches(t, name, module_type) for t in group.get("targets") or []):
            return group.get("weights")
    return None
