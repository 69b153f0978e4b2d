"""compressed-tensors `pack-quantized` export checked against a runtime's constraints.

`layerwise quantize` writes this format already (see `io.ct_pack`); the export converts older GPTQ
results and checks what a runtime can execute. A symmetric b-bit result w = s·(q − 2^(b−1)) is the compressed-tensors int grid w = s·q' with
q' = q − 2^(b−1) ∈ [−2^(b−1), 2^(b−1) − 1], so codes and scales are written as they are (exact). Each
bit width / group size becomes one config group whose targets are the module names; the codes are
packed into int32 along the input dimension (element i of a row at bits i·b of the stream), which is
the same little-endian bit stream as the GPTQ packing, transposed. The directory is reloaded with
stock `from_pretrained` (compressed-tensors installed) and compared with the layerwise model before
it is committed.

Runtime constraints (`runtime="vllm"`, the default): widths 4 or 8, symmetric, no act-order, and one
width per fused set (q/k/v, gate/up), because vLLM fuses those linears into one kernel.
`runtime="transformers"` accepts widths 2–8 and asymmetric grids (zero points packed).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..console import info
from ..errors import ConfigError
from ..io.ct_pack import VLLM_FUSED as FUSED
from .ggml_blocks import Codes

RUNTIMES = {"vllm": (4, 8), "transformers": (2, 3, 4, 5, 6, 7, 8)}


def _group_size(c: Codes) -> int:
    """Columns per scale group when groups are contiguous and in order; raise otherwise (act-order)."""
    cols, groups = c.q.shape[1], c.scales.shape[1]
    g = -(-cols // groups)
    if not torch.equal(c.g_idx.long(), torch.arange(cols) // g):
        raise ConfigError("compressed-tensors export needs column groups in order (quantize without --act-order)")
    if groups > 1 and cols % g:
        raise ConfigError(f"compressed-tensors needs groups that divide the {cols} input columns (groups of {g}); "
                          "quantize with a --group-size that divides every width")
    return -1 if groups == 1 else g


def _sym(c: Codes) -> bool:
    return bool((c.zeros == 2 ** (c.bits - 1)).all())


def check_runtime(codes: dict[str, Codes], runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
    for name, c in codes.items():
        if c.bits not in RUNTIMES[runtime]:
            raise ConfigError(f"{name} has {c.bits} bits; {runtime} runs compressed-tensors int weights of "
                              f"{' or '.join(map(str, RUNTIMES[runtime]))} bits (use --runtime transformers)")
        if runtime == "vllm" and not _sym(c):
            raise ConfigError(f"{name} is asymmetric; vLLM runs symmetric compressed-tensors int weights "
                              "(use --runtime transformers)")
        _group_size(c)
    if runtime == "vllm":
        for name, c in codes.items():
            for fused in FUSED:
                leaf = name.rsplit(".", 1)[-1]
                if leaf not in fused:
                    continue
                for other in fused:
                    o = codes.get(name[: -len(leaf)] + other)
                    if o is not None and (o.bits, _group_size(o)) != (c.bits, _group_size(c)):
                        raise ConfigError(f"{name} ({c.bits} bits) and {name[:-len(leaf)] + other} ({o.bits} bits) "
                                          "are fused by vLLM and need one width and group size")


def pack_codes(c: Codes) -> dict[str, torch.Tensor]:
    from ..io.ct_pack import to_ct_tensors

    return to_ct_tensors(c.q, c.zeros, c.scales, c.bits, sym=_sym(c))


def quantization_config(codes: dict[str, Codes], model) -> dict:
    from ..io.ct_pack import ct_config, scheme_key

    schemes = {name: scheme_key(c.bits, _group_size(c), c.q.shape[1], _sym(c)) for name, c in codes.items()}
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return ct_config(schemes, sorted(linears - set(codes)))


def export_compressed_tensors(model: str, out, *, runtime: str = "vllm", overwrite: bool = False):
    """Write a quantized layerwise result (compressed-tensors or GPTQ) as a compressed-tensors directory checked
    against `runtime`'s constraints; returns its path."""
    from safetensors.torch import save_file

    from ..io.artifacts import Artifact
    from ..io.load import load_model
    from ..io.verify import check_reload
    from ..utils.hf import quiet
    from .gguf import read_codes

    quiet()
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
    lm = load_model(model)
    path = Path(lm.path) if lm.path is not None else None
    codes = read_codes(path) if path is not None else {}
    if not codes:
        raise ConfigError(f"{model} is not a quantized result (compressed-tensors or GPTQ format): nothing to pack for compressed-tensors")
    check_runtime(codes, runtime)
    if out is None:
        raise ConfigError("--out is required for a compressed-tensors export (a directory)")
    art = Artifact(out, inputs=[("the model", path)], overwrite=overwrite)
    with art.run():
        tmp = art.begin()
        m = lm.model
        state = {k: v.detach().contiguous() for k, v in m.state_dict().items()
                 if "rotary_emb" not in k and not (k.rsplit(".", 1)[0] in codes and k.endswith(".weight"))}
        if getattr(m.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        for name, c in codes.items():
            state.update({f"{name}.{k}": v for k, v in pack_codes(c).items()})
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        m.config.save_pretrained(tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["quantization_config"] = quantization_config(codes, m)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(tmp)
        ids = torch.randint(0, m.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
        verdict = check_reload(m, tmp, {"input_ids": ids}, what="compressed-tensors model", loader=_stock_load)
        out = art.commit()
    info(f"wrote {out} (compressed-tensors pack-quantized, {len(codes)} linears; {verdict})")
    return out


def _stock_load(path: Path):
    """What a user of transformers does: stock from_pretrained, weights decompressed on load."""
    from transformers import AutoModelForCausalLM

    try:
        import compressed_tensors  # noqa: F401
    except ImportError as e:
        raise ConfigError("verifying a compressed-tensors export needs `pip install compressed-tensors`") from e
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
