"""Checks of a model directory's files before any work starts.

A truncated or corrupt checkpoint must be reported as one line naming the file, not as a traceback
from deep inside safetensors or transformers halfway through a run. Only headers are read: the
check costs milliseconds whatever the model size.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import ModelLoadError

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 1024 * 1024


def read_json(path: Path, what: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except UnicodeDecodeError as e:
        raise ModelLoadError(f"{what} {path} is not text: {e}") from e
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{what} {path} is not valid JSON: {e}") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {what} {path}: {e.strerror}") from e
    if not isinstance(d, dict):
        raise ModelLoadError(f"{what} {path} is not a JSON object")
    return d


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name → (dtype, shape) of every tensor; raises ModelLoadError if the file is not intact."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{path} is truncated ({size} bytes): not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ModelLoadError(f"{path} has a corrupt safetensors header (header length {n} "
                                     f"for a {size}-byte file)")
            raw = f.read(n)
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror}") from e
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path} has a corrupt safetensors header: {e}") from e
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path} has a corrupt safetensors header")
    data = size - 8 - n
    end_max = 0
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = t["dtype"], tuple(int(s) for s in t["shape"]), t["data_offsets"]
            count = 1
            for s in shape:
                count *= s
            nbytes = count * _DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as e:
            raise ModelLoadError(f"{path}: corrupt entry for tensor '{name}' in the safetensors header") from e
        if not (0 <= a <= b) or b - a != nbytes:
            raise ModelLoadError(f"{path}: tensor '{name}' ({dtype} {list(shape)}) has inconsistent offsets")
        if b > data:
            raise ModelLoadError(f"{path} is truncated: tensor '{name}' ends at byte {b} of a {data}-byte data "
                                 "section")
        end_max = max(end_max, b)
        out[name] = (dtype, shape)
    if end_max != data:
        raise ModelLoadError(f"{path} has {data - end_max} unexpected trailing bytes (corrupt or wrong file)")
    return out


def weight_files(path: Path) -> list[Path]:
    """The safetensors files a model directory's weights live in (index first, then single files)."""
    path = Path(path)
    idx = path / "model.safetensors.index.json"
    if idx.exists():
        d = read_json(idx, "weight index")
        wm = d.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise ModelLoadError(f"weight index {idx} has no weight_map")
        files = sorted({path / f for f in wm.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise ModelLoadError(f"weight index {idx} names missing file(s): {', '.join(missing[:3])}")
        return files
    single = path / "model.safetensors"
    return [single] if single.exists() else []


def check_model_dir(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Config parses, every weight file is intact; returns the tensors (name → dtype, shape)."""
    path = Path(path)
    read_json(path / "config.json", "model config")
    tensors: dict = {}
    for f in weight_files(path):
        tensors.update(safetensors_header(f))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (path / name).exists():
            read_json(path / name, name.split(".")[0].replace("_", " "))
    return tensors


def checkpoint_renames(model, keys) -> dict[str, str]:
    """{model parameter name: checkpoint key} for keys stored under another name than the module's.

    transformers 5 renamed modules of some families (ViT: `encoder.layer.N.attention.attention.query`
    became `layers.N.attention.q_proj`) and still saves under the old names, converting on load; a
    streamed run reads checkpoints itself, so it applies the same renamings. Only pure renamings:
    conversions that split or fuse tensors are not followed (their tensors are then reported missing).
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, apply_renamings

        renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    except Exception:  # pragma: no cover  (an older transformers: no renamings to follow)
        return {}
    if not renamings:
        return {}
    out = {}
    for k in keys:
        new = apply_renamings(k, renamings)
        if new != k:
            out[new] = k
    return out


def check_shapes(model, tensors: dict, path: Path) -> None:
    """Every checkpoint tensor that the model (built from the config) has must have the model's shape."""
    if not tensors:
        return
    own = {n: tuple(p.shape) for n, p in list(model.named_parameters()) + list(model.named_buffers())}
    prefix = getattr(model, "base_model_prefix", "")
    renamed = {v: k for k, v in checkpoint_renames(model, tensors).items()}
    for name, (_, shape) in tensors.items():
        for cand in (renamed.get(name, name), name, f"{prefix}.{name}",
                     name[len(prefix) + 1:] if name.startswith(prefix + ".") else None):
            if cand in own:
                if own[cand] != tuple(shape):
                    raise ModelLoadError(f"{path}: tensor '{name}' has shape {list(shape)} but the config "
                                         f"(config.json) implies {list(own[cand])}")
                break
