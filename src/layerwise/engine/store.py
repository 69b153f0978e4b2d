"""Where block weights live while the engine runs.

`InMemoryStore`: the whole model is in memory (Python API, small models).
`LazyStore`: parameters start on the meta device; the non-block weights (embeddings, final norm,
head) are loaded once; each block is read from the source safetensors when the engine reaches it,
written to the output shard when it is done, and released. Peak memory is then one block plus the
calibration activations, whatever the depth.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelLoadError
from ..models.adapters import Adapter, get_adapter
from ..models.adapters.towers import engine_adapter


def _param_and_buffer_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]


class ShardWriter:
    """Writes a `save_pretrained`-compatible sharded safetensors checkpoint, one shard per block."""

    def __init__(self, directory: Path, num_blocks: int, tied: set[str], prefix: str = "model"):
        self.dir = Path(directory)
        self.prefix = prefix          # "model" (transformers) or "diffusion_pytorch_model" (diffusers)
        self.total = num_blocks + 1
        self.tied = tied
        self.weight_map: dict[str, str] = {}
        self.size = 0

    def shard_name(self, index: int) -> str:
        return f"{self.prefix}-{index + 1:05d}-of-{self.total:05d}.safetensors"

    def write(self, index: int, tensors: dict[str, torch.Tensor]) -> Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if k not in self.tied}
        name = self.shard_name(index)
        tmp = self.dir / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, self.dir / name)
        for k, v in tensors.items():
            self.weight_map[k] = name
            self.size += v.numel() * v.element_size()
        return self.dir / name

    def register_existing(self, index: int) -> None:
        from safetensors import safe_open

        name = self.shard_name(index)
        with safe_open(str(self.dir / name), "pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                shape = t.get_shape()
                n = 1
                for s in shape:
                    n *= s
                self.weight_map[k] = name
                self.size += n * _dtype_size(t.get_dtype())

    def finish(self) -> None:
        index = {"metadata": {"total_size": self.size}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.dir / f"{self.prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def trim_heap() -> None:
    """Give freed block memory back to the OS (glibc keeps it otherwise, and peak RSS creeps up)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dtype_size(name: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "BOOL": 1}.get(name, 4)


def tied_names(model: nn.Module) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if isinstance(tied, dict):
        names = set(tied)
    else:
        names = set(tied)
    if not getattr(model.config, "tie_word_embeddings", False):
        names = {n for n in names if "lm_head" not in n} if names else names
    return names


class BlockStore:
    model: nn.Module
    adapter: Adapter
    writer: ShardWriter | None = None
    writing: bool = True        # False during read-only passes (analysis before pruning)
    # Optional rewrite of a block's tensors before they are written (e.g. packed quantized weights).
    transform: Callable[[int, dict], dict] | None = None
    untransform: Callable[[int, dict], dict] | None = None
    # Further outputs written alongside (e.g. the dequantized copy of a quantized model).
    extra_writers: list

    def load_block(self, i: int) -> nn.Module:
        return self.adapter.block_list()[i]

    @contextmanager
    def scoped(self, tower: Adapter):
        """The engine's view of one tower of a multi-tower model: its blocks numbered from 0, written
        to the shards of their global numbers (`tower.block_offset + i`)."""
        whole = self.adapter
        self.adapter = tower
        try:
            yield self
        finally:
            self.adapter = whole

    def release_block(self, i: int) -> None:
        if self.writing and (self.writer is not None or self.extra_writers):
            prefix = self.adapter.block_prefix(i) + "."
            block = self.adapter.block_list()[i]
            tensors = {prefix + k: v for k, v in block.state_dict().items()}
            g = self.adapter.block_offset + i
            for w in self.extra_writers:
                w.write(g, tensors)
            if self.writer is not None:
                self.writer.write(g, self.transform(g, tensors) if self.transform else tensors)

    def restore_block(self, i: int) -> None:
        """Load block i's finished weights back from its output shard (resume)."""
        from safetensors.torch import load_file

        assert self.writer is not None
        g = self.adapter.block_offset + i
        tensors = load_file(str(self.writer.dir / self.writer.shard_name(g)))
        if self.untransform is not None:
            tensors = self.untransform(g, tensors)
        block = self.load_block(i)
        prefix = self.adapter.block_prefix(i) + "."
        block.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()}, strict=True)
        self.writer.register_existing(g)
        for w in self.extra_writers:
            w.register_existing(g)
        self._after_restore(i)

    def _after_restore(self, i: int) -> None:
        pass

    def write_rest(self) -> None:
        """Write every tensor outside the blocks into the last shard."""
        if self.writer is None:
            return
        prefixes = self.adapter.block_prefixes()
        rest = {k: v for k, v in self.model.state_dict().items() if not k.startswith(prefixes)}
        self.writer.write(self.adapter.num_blocks, rest)
        self.writer.finish()
        for w in self.extra_writers:
            w.write(self.adapter.num_blocks, rest)
            w.finish()

    @property
    def fully_in_memory(self) -> bool:
        return True


class InMemoryStore(BlockStore):
    """`all_towers`: every tower of a multi-tower model, numbered as one list of blocks (the stages that
    rewrite linears); otherwise the model's primary blocks only (depth, width, token stages)."""

    def __init__(self, model: nn.Module, out_dir: Path | None = None, all_towers: bool = False):
        self.model = model
        self.adapter = engine_adapter(model) if all_towers else get_adapter(model)
        self.writer = ShardWriter(out_dir, self.adapter.num_blocks, tied_names(model),
                                  self.adapter.weights_prefix) if out_dir else None
        self.extra_writers = []


class LazyStore(BlockStore):
    """Blocks stream from the source directory's safetensors and back out to `out_dir`."""

    def __init__(self, src: Path, out_dir: Path | None, dtype: torch.dtype = torch.float32):
        from accelerate import init_empty_weights
        from transformers import AutoConfig

        from ..models.adapters import model_class

        self.src = Path(src)
        self.dtype = dtype
        try:
            config = AutoConfig.from_pretrained(self.src)
        except (ValueError, OSError, KeyError) as e:
            raise ModelLoadError(f"cannot read {self.src / 'config.json'}: {e}") from e
        cls = model_class(config)
        with init_empty_weights(include_buffers=False):
            model = cls.from_config(config, dtype=dtype)
        model.eval()
        self.model = model
        self.adapter = get_adapter(model)
        self._files = self._index()
        from ..models.files import checkpoint_renames

        self._renamed = checkpoint_renames(model, self._files)
        if not (self.src / "layerwise_model.json").exists():
            from ..models.files import check_model_dir, check_shapes

            check_shapes(model, check_model_dir(self.src), self.src)
        self._tied = tied_names(model)
        self.writer = ShardWriter(out_dir, self.adapter.num_blocks, self._tied,
                                  self.adapter.weights_prefix) if out_dir else None
        self.extra_writers = []
        block_prefix = self.adapter.blocks_path + "."
        names = [n for n in _param_and_buffer_names(model) if not n.startswith(block_prefix)]
        self._load_names(names)
        model.tie_weights()
        meta = [n for n, p in model.named_parameters() if p.is_meta and not n.startswith(block_prefix)]
        if meta:
            raise ModelLoadError(f"{self.src}: weights missing from the checkpoint: {', '.join(meta[:5])}")

    def _index(self) -> dict[str, Path]:
        from safetensors import safe_open

        idx = self.src / "model.safetensors.index.json"
        files: dict[str, Path] = {}
        if idx.exists():
            for k, f in json.loads(idx.read_text())["weight_map"].items():
                files[k] = self.src / f
        else:
            single = self.src / "model.safetensors"
            if not single.exists():
                raise ModelLoadError(f"{self.src} has no safetensors weights to stream")
            with safe_open(str(single), "pt") as f:
                for k in f.keys():
                    files[k] = single
        return files

    def _key(self, name: str) -> str | None:
        if name in self._files:
            return name
        if name in self._renamed:
            return self._renamed[name]
        prefix = getattr(self.model, "base_model_prefix", "")
        for cand in (f"{prefix}.{name}", name[len(prefix) + 1:] if name.startswith(prefix + ".") else None):
            if cand and cand in self._files:
                return cand
        return None

    def _load_names(self, names: list[str]) -> None:
        from accelerate.utils import set_module_tensor_to_device
        from safetensors import safe_open

        by_file: dict[Path, list[tuple[str, str]]] = {}
        for n in names:
            key = self._key(n)
            if key is None:
                if n in self._tied or n in dict(self.model.named_buffers()):
                    continue
                raise ModelLoadError(f"{self.src}: tensor '{n}' is not in the checkpoint")
            by_file.setdefault(self._files[key], []).append((n, key))
        for path, pairs in by_file.items():
            with safe_open(str(path), "pt") as f:
                for n, key in pairs:
                    t = f.get_tensor(key)
                    if t.is_floating_point():
                        t = t.to(self.dtype)
                    set_module_tensor_to_device(self.model, n, "cpu", value=t)

    def load_block(self, i: int) -> nn.Module:
        prefix = self.adapter.block_prefix(i) + "."
        block = self.adapter.block_list()[i]
        if any(p.is_meta for p in block.parameters()):
            self._load_names([prefix + n for n, _ in block.named_parameters()])
        return block

    def release_block(self, i: int) -> None:
        super().release_block(i)
        self._free(i)

    def _after_restore(self, i: int) -> None:
        self._free(i)

    def _free(self, i: int) -> None:
        from accelerate.utils import set_module_tensor_to_device

        prefix = self.adapter.block_prefix(i) + "."
        block = self.adapter.block_list()[i]
        for n, _ in list(block.named_parameters()):
            set_module_tensor_to_device(self.model, prefix + n, "meta")
        trim_heap()

    @property
    def fully_in_memory(self) -> bool:
        return False
