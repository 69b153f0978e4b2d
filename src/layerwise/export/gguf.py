"""GGUF export for llama.cpp: one file with the tokenizer, the hyper-parameters and one type per tensor.

Block linears of a quantized result keep their integer codes: where the grid is one of ggml's block
types (see `ggml_blocks`) the bytes reproduce the result exactly, otherwise they are requantized and
the error is reported per tensor. Float tensors (embeddings, norms, the head, unquantized linears)
are written as `float_type`. Depth-pruned models are plain fewer-block models; width-pruned models
carry per-block head and MLP counts (arrays in the GGUF keys). The file is read back with gguf's own
reader and dequantizer and compared with the model tensor by tensor before it is moved into place.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..console import info, progress_bar
from ..errors import ConfigError, LayerwiseError
from .ggml_blocks import Codes, dequantize, exact_type, k_fits, pack_exact, pack_k, requantize
from .vocab import gguf_vocab, special_ids

# transformers model_type → (GGUF architecture, whether q/k rows are permuted to llama.cpp's rotary
# layout: its `llama` architecture rotates interleaved pairs where transformers rotates halves)
ARCHES = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}
FLOAT_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q5_0": "Q5_0"}


@dataclass
class TensorRecord:
    name: str                    # transformers name
    gguf: str                    # llama.cpp name
    shape: list[int]
    type: str
    source: str                  # "codes" (a quantized result) or "float"
    exact: bool                  # GGUF dequantizes to exactly the model's weight
    max_abs_error: float
    note: str = ""


@dataclass
class GGUFExport:
    out: Path
    arch: str
    records: list[TensorRecord] = field(default_factory=list)
    bytes: int = 0

    def summary(self) -> dict:
        by_type: dict[str, int] = {}
        for r in self.records:
            by_type[r.type] = by_type.get(r.type, 0) + 1
        return {"file": str(self.out), "arch": self.arch, "bytes": self.bytes, "tensors": len(self.records),
                "types": by_type, "exact_codes": sum(r.exact for r in self.records if r.source == "codes"),
                "requantized": [r.name for r in self.records if r.source == "codes" and not r.exact]}


def read_codes(path: Path) -> dict[str, Codes]:
    """Integer codes of every packed linear of a quantized result, compressed-tensors or GPTQ (empty for
    other formats)."""
    from ..io.quantized import read_packed

    found = read_packed(path)
    if found is None:
        return {}
    layout, qc, tensors = found
    out = {}
    for key in [k for k in tensors if k.endswith("." + layout.key)]:
        base = key[: -len(layout.key) - 1]
        q, zeros, scales, g_idx, bits = layout.codes(layout.parts(tensors, base), base, None, qc)
        out[base] = Codes(q, scales, zeros, g_idx, bits)
    return out


def _rotary_order(n_heads: int, head_dim: int) -> torch.Tensor:
    """Row order that turns transformers' half-split rotary layout into interleaved pairs."""
    return torch.arange(n_heads * head_dim).view(n_heads, 2, head_dim // 2).transpose(1, 2).reshape(-1)


def _per_block_widths(model) -> bool:
    from ..models.adapters.layout import layouts

    lays = layouts(model)
    return len({(lay.intermediate, lay.kv_heads, lay.rep) for lay in lays}) > 1


def _check_model(model, path) -> tuple[str, bool]:
    if hasattr(model, "_layerwise_tokens"):
        raise ConfigError(f"{path} is token-routed; GGUF (llama.cpp) has no token routing — export the dense model")
    mt = getattr(model.config, "model_type", None)
    if mt not in ARCHES:
        raise ConfigError(f"GGUF export supports {', '.join(sorted(ARCHES))} models, not {mt!r}")
    rope = getattr(model.config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"rope type {rope.get('rope_type')!r} is not exported to GGUF yet (default rotary only)")
    arch, permute = ARCHES[mt]
    if _per_block_widths(model):
        # llama.cpp's llama/qwen2 graphs size every block from one width; its `deci` architecture (Llama
        # blocks with per-block head and MLP counts, as in Nemotron-NAS) reads them per block
        if arch != "llama":
            raise ConfigError(f"per-block widths are exported for Llama-family models only (llama.cpp's deci "
                              f"architecture), not {mt!r}")
        arch = "deci"
    return arch, permute


def _hparams(writer, model, arch: str) -> None:
    from ..models.adapters.layout import layouts

    cfg = model.config
    lays = layouts(model)
    head_dim = lays[0].head_dim
    ff = [lay.intermediate for lay in lays]
    kv = [lay.kv_heads for lay in lays]
    heads = [lay.kv_heads * lay.rep for lay in lays]
    one = lambda v: v[0] if len(set(v)) == 1 else v  # noqa: E731
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_block_count(len(lays))
    writer.add_feed_forward_length(one(ff))
    writer.add_head_count(one(heads))
    writer.add_head_count_kv(one(kv))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(int(cfg.vocab_size))


def _vocab(writer, path: Path | None, tokenizer, cfg) -> None:
    if path is None or not (path / "tokenizer.json").exists():
        raise ConfigError("GGUF needs the tokenizer inside the file: the model directory has no tokenizer.json")
    v = gguf_vocab(path / "tokenizer.json", int(cfg.vocab_size))
    writer.add_tokenizer_model(v["model"])
    if v["pre"]:
        writer.add_tokenizer_pre(v["pre"])
    writer.add_token_list(v["tokens"])
    writer.add_token_types(v["types"])
    if v["merges"]:
        writer.add_token_merges(v["merges"])
    ids = special_ids(tokenizer, cfg)
    for key, fn in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                    ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if key in ids:
            fn(ids[key])
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))


def _plan_tensors(model, codes: dict[str, Codes], arch: str, permute: bool, float_type: str):
    """(transformers name, llama.cpp name, codes or float weight, the model's weight) in file order; q/k rows
    permuted for llama.cpp's rotary layout."""
    import gguf

    from ..models.adapters.layout import layouts

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], len(layouts(model)))
    lays = layouts(model)
    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for name, t in state.items():
        if "rotary_emb" in name or (tied and name == "lm_head.weight"):
            continue
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ConfigError(f"tensor {name} has no llama.cpp name in the {arch} architecture")
        order = None
        if permute and (".q_proj." in name or ".k_proj." in name):
            block = int(name.split(".layers.")[1].split(".")[0])
            lay = lays[block]
            n = lay.kv_heads * lay.rep if ".q_proj." in name else lay.kv_heads
            order = _rotary_order(n, lay.head_dim)
        base = name.rsplit(".", 1)[0]
        w = t.detach().float()
        if order is not None:
            w = w[order]
        if base in codes and name.endswith(".weight"):
            c = codes[base].permute_rows(order) if order is not None else codes[base]
            yield name, gname, c, w
        else:
            yield name, gname, w, w


def _encode(name, gname, obj, float_type: str, k_quants: bool = False) -> tuple[np.ndarray, str, TensorRecord]:
    if isinstance(obj, Codes):
        ref = obj.dequantize()
        cols = obj.q.shape[1]
        qtype = exact_type(obj)
        # K-quants where they are smaller than the exact type: not for 4/5-bit grids that Q4_0 / Q5_0 hold
        # bit for bit at the size of Q4_K / Q5_K
        if k_quants and k_fits(obj) and not (obj.bits in (4, 5) and qtype in ("Q4_0", "Q5_0")):
            qtype, data = pack_k(obj)
            note = "K-quant: codes kept, sub-block scales rounded"
            return data, qtype, TensorRecord(name, gname, list(ref.shape), qtype, "codes", False, 0.0, note)
        if qtype is not None:
            data, note = pack_exact(obj, qtype), ""
        elif cols % 32:
            # ggml blocks hold 32 weights of one row: such rows cannot be block-quantized at all
            qtype = "F32" if float_type == "f32" else "F16"
            data = ref.numpy().astype(np.float32 if qtype == "F32" else np.float16)
            note = f"input size {cols} is not a multiple of 32: {qtype}"
        else:
            asym = not bool((obj.zeros.float() == 2 ** (obj.bits - 1)).all())
            qtype, data = requantize(ref, obj.bits, asym)
            note = "requantized: act-order, groups not aligned to 32 or 8-bit asymmetric"
        return data, qtype, TensorRecord(name, gname, list(ref.shape), qtype, "codes", False, 0.0, note)
    w = obj
    ftype = FLOAT_TYPES[float_type]
    note = ""
    if w.dim() == 1:
        ftype = "F32"                 # norms and biases: ggml wants them in f32
    elif ftype.startswith("Q") and (".layers." not in name or w.shape[-1] % 32):
        note = "" if ".layers." not in name else f"input size {w.shape[-1]} is not a multiple of 32: F16"
        ftype = "F16"                 # block types only for block linears whose rows hold whole blocks
    if ftype == "F32":
        data = w.numpy().astype(np.float32)
    elif ftype == "F16":
        data = w.numpy().astype(np.float16)
    else:
        from gguf import GGMLQuantizationType as T
        from gguf import quants

        data = quants.quantize(w.numpy().astype(np.float32), T[ftype])
    return data, ftype, TensorRecord(name, gname, list(w.shape), ftype, "float", False, 0.0, note)


def _write(tmp: Path, model, path: Path | None, tokenizer, codes, arch, permute, float_type,
           k_quants: bool = False) -> GGUFExport:
    import gguf

    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_name(path.name if path is not None else type(model).__name__)
    _hparams(writer, model, arch)
    _vocab(writer, path, tokenizer, model.config)
    res = GGUFExport(out=tmp, arch=arch)
    refs = {}
    items = list(_plan_tensors(model, codes, arch, permute, float_type))
    with progress_bar() as prog:
        task = prog.add_task("encode tensors", total=len(items), info="")
        for name, gname, obj, weight in items:
            data, qtype, rec = _encode(name, gname, obj, float_type, k_quants)
            raw = None if qtype in ("F32", "F16") else gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(gname, data, raw_dtype=raw)
            refs[gname] = weight        # what layerwise computes with: the loaded (dequantized) model
            res.records.append(rec)
            prog.update(task, advance=1, info=gname)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _verify(tmp, res, refs)
    res.bytes = tmp.stat().st_size
    return res


def _verify(tmp: Path, res: GGUFExport, refs: dict) -> None:
    """Read the file back with gguf's reader; record each tensor's max |GGUF − model| and exactness."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(tmp))
    except Exception as e:  # noqa: BLE001 - a file we just wrote that does not parse is our bug, say so
        raise LayerwiseError(f"the GGUF file written to {tmp} does not read back: {e}") from e
    back = {t.name: t for t in reader.tensors}
    for rec in res.records:
        t = back[rec.gguf]
        arr = np.asarray(t.data)
        if t.tensor_type.name not in ("F32", "F16"):
            arr = dequantize(arr, t.tensor_type.name)
        arr = torch.from_numpy(np.array(arr, dtype=np.float32)).reshape(rec.shape)
        err = float((arr - refs[rec.gguf].float()).abs().max()) if arr.numel() else 0.0
        rec.max_abs_error, rec.exact = err, err == 0.0


def export_gguf(model: str, out: str | os.PathLike | None = None, *, float_type: str = "f16",
                overwrite: bool = False, k_quants: bool = False) -> GGUFExport:
    """Write `model` (a layerwise result directory, zoo:NAME or a save_pretrained directory) as GGUF.
    `k_quants`: 2-, 3- and 6-bit codes go into Q2_K / Q3_K / Q6_K (2.6 / 3.4 / 6.6 bits per weight) instead of
    exactly into Q4_0 / Q8_0 (4.5 / 8.5), and asymmetric 4- and 5-bit codes into Q4_K / Q5_K (4.5 / 5.5)
    instead of exactly into Q8_0: codes kept, scales rounded; rows must hold whole 256-blocks."""
    from ..io.artifacts import check_not_overlapping, io_reason
    from ..io.load import load_model
    from ..utils.hf import quiet

    quiet()
    if float_type not in FLOAT_TYPES:
        raise ConfigError(f"--float-type must be one of {', '.join(FLOAT_TYPES)} (got {float_type!r})")
    lm = load_model(model)
    path = Path(lm.path) if lm.path is not None else None
    arch, permute = _check_model(lm.model, model)
    codes = read_codes(path) if path is not None else {}
    out = Path(out) if out is not None else Path.cwd() / f"{(path.name if path else 'model')}-{float_type}.gguf"
    out = out.expanduser()
    if out.suffix != ".gguf":
        raise ConfigError(f"--out {out} should end in .gguf")
    if not out.parent.is_dir():
        raise ConfigError(f"parent directory of --out {out} does not exist")
    check_not_overlapping(out, [("the model", path)])
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    tmp = out.parent / f".{out.name}.partial"
    try:
        res = _write(tmp, lm.model, path, lm.tokenizer, codes, arch, permute, float_type, k_quants)
        report = out.with_suffix(".gguf.json")
        rtmp = out.parent / f".{report.name}.partial"
        rtmp.write_text(json.dumps({"source": str(model), "float_type": float_type, "k_quants": k_quants,
                                    **res.summary(),
                                    "tensors": [asdict(r) for r in res.records]}, indent=1) + "\n")
        os.replace(tmp, out)
        os.replace(rtmp, report)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        (out.parent / f".{out.with_suffix('.gguf.json').name}.partial").unlink(missing_ok=True)
        reason = io_reason(e) if not isinstance(e, (LayerwiseError, KeyboardInterrupt)) else None
        if reason is not None:
            raise ConfigError(f"cannot write {out}: {reason}") from e
        raise
    res.out = out
    exact = sum(r.exact for r in res.records if r.source == "codes")
    total = sum(r.source == "codes" for r in res.records)
    info(f"wrote {out} ({res.bytes / 2**20:.1f} MiB, {len(res.records)} tensors"
         + (f"; {exact}/{total} quantized tensors exact" if total else "") + ")")
    return res


__all__ = ["export_gguf", "read_codes", "GGUFExport", "TensorRecord"]
