"""Models with several block sequences ("towers"): a dual encoder's image and text towers, a
vision-language model's vision encoder and language decoder.

A model's primary adapter says which towers it has (`towers()`, in forward order). `JointAdapter`
numbers the blocks of all towers in one sequence (tower k's block i is global block offset_k + i):
scores, allocation and the Plan see one list of blocks, so ECoFLaP's global allocation spans the
towers with no change. The engine runs one tower at a time (`store.scoped(tower)`), capturing each
tower's first-block inputs by a forward of the whole model, so a later tower (the decoder) is
calibrated on what the already compressed earlier tower (the vision encoder) produces.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .base import ADAPTERS, Adapter, get_adapter


class TowerAdapter(Adapter):
    """One encoder tower of a multi-tower model (pre-norm blocks with `self_attn` and `mlp`, as CLIP's
    encoders have): the model's forward and inputs are the primary adapter's."""

    attention_path = "self_attn"

    def __init__(self, primary: Adapter, blocks_path: str, tower_name: str):
        super().__init__(primary.model)
        self.primary = primary
        self.blocks_path = blocks_path
        self.tower_name = tower_name
        self.name = f"{primary.name}.{tower_name}"
        self.inputs = primary.inputs

    def model_inputs(self, inputs) -> dict:
        return self.primary.model_inputs(inputs)

    def run_model(self, model, inputs) -> None:
        self.primary.run_model(model, inputs)

    def example_inputs(self, batch: int = 2, length: int = 8, seed: int = 0) -> dict:
        return self.primary.example_inputs(batch, length, seed)

    def describe(self) -> str:
        return f"{self.tower_name} tower: {self.num_blocks} blocks at {self.blocks_path}"


class JointAdapter(Adapter):
    """All towers of a model as one numbered list of blocks (for scoring, planning and writing)."""

    def __init__(self, primary: Adapter):
        super().__init__(primary.model)
        self.primary = primary
        self.parts = primary.towers()
        offset = 0
        for t in self.parts:
            t.block_offset = offset
            offset += t.num_blocks
        self.name = primary.name
        self.inputs = primary.inputs
        self.blocks_path = self.parts[0].blocks_path

    def towers(self) -> list[Adapter]:
        return self.parts

    def _locate(self, g: int) -> tuple[Adapter, int]:
        for t in self.parts:
            if g < t.block_offset + t.num_blocks:
                return t, g - t.block_offset
        raise IndexError(f"block {g} is past the {self.num_blocks} blocks of the towers")

    def block_list(self) -> list[nn.Module]:
        return [b for t in self.parts for b in t.block_list()]

    @property
    def num_blocks(self) -> int:
        return sum(t.num_blocks for t in self.parts)

    def block_prefix(self, i: int) -> str:
        t, local = self._locate(i)
        return t.block_prefix(local)

    def block_prefixes(self) -> tuple[str, ...]:
        return tuple(p for t in self.parts for p in t.block_prefixes())

    def tower_of(self, i: int) -> str:
        return self._locate(i)[0].tower_name

    def linears(self, i: int, block: nn.Module | None = None):
        t, local = self._locate(i)
        return t.linears(local, block)

    def call_block(self, block, hidden, args, kwargs):
        raise RuntimeError("a multi-tower model runs its blocks one tower at a time (store.scoped)")

    def model_inputs(self, inputs) -> dict:
        return self.primary.model_inputs(inputs)

    def run_model(self, model, inputs) -> None:
        self.primary.run_model(model, inputs)

    def calibration_loss(self, model, inputs):
        return self.primary.calibration_loss(model, inputs)

    def example_inputs(self, batch: int = 2, length: int = 8, seed: int = 0) -> dict:
        return self.primary.example_inputs(batch, length, seed)

    def calibration_samples(self, card: dict, nsamples: int, seed: int):
        return self.primary.calibration_samples(card, nsamples, seed)

    def config_num_blocks_key(self) -> str:
        return self.primary.config_num_blocks_key()

    def describe(self) -> str:
        return f"{self.name} adapter, {len(self.parts)} towers: " + "; ".join(t.describe() for t in self.parts)


def engine_adapter(model: nn.Module) -> Adapter:
    """The adapter the block-by-block stages run on: every tower of a multi-tower model, one numbering."""
    primary = get_adapter(model)
    return JointAdapter(primary) if len(primary.towers()) > 1 else primary


def multi_tower_dir(path: Path | None) -> bool:
    """Whether the model saved in `path` has several towers (read from its config, nothing loaded)."""
    if path is None or not (Path(path) / "config.json").is_file():
        return False
    try:
        mt = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return False
    return any(mt in cls.model_types and getattr(cls, "multi_tower", False) for cls in ADAPTERS)


def whole_model_dir(path: Path | None) -> bool:
    """Whether the model saved in `path` is compressed in memory rather than streamed block by block:
    several towers (capturing a later tower runs the earlier ones) or a diffusers checkpoint (its
    tensors follow diffusers' layout, not a transformers config)."""
    if multi_tower_dir(path):
        return True
    try:
        return "_diffusers_version" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False
