"""Architecture adapters: where the blocks are, which linears they hold, how a block is called.

One adapter serves a family of architectures. Adding an architecture is one file that subclasses
`Adapter` and registers itself. The sequential engine, the pruners and the exporters only talk to
models through an adapter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


def _conv1d_types() -> tuple:
    try:
        from transformers.pytorch_utils import Conv1D

        return (Conv1D,)
    except ImportError:  # pragma: no cover
        return ()


CONV1D = _conv1d_types()


@dataclass
class LinearRef:
    """A linear layer inside a block, seen as an `out × in` matrix whatever its storage."""

    name: str                # full module name in the model, e.g. "model.layers.3.mlp.down_proj"
    local: str               # name inside the block, e.g. "mlp.down_proj"
    block: int
    module: nn.Module

    @property
    def transposed(self) -> bool:
        return isinstance(self.module, CONV1D)

    @property
    def weight(self) -> torch.Tensor:
        """The weight as `out × in` (a transposed view for GPT-2's Conv1D)."""
        w = self.module.weight
        return w.t() if self.transposed else w

    def set_weight(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            tgt = self.module.weight
            tgt.copy_((w.t() if self.transposed else w).to(tgt.dtype))

    @property
    def shape(self) -> tuple[int, int]:
        w = self.weight
        return int(w.shape[0]), int(w.shape[1])

    @property
    def numel(self) -> int:
        return self.module.weight.numel()


@dataclass(frozen=True)
class InputField:
    """One input of a model's forward, as an adapter describes it.

    kind: "tokens" (integer ids), "pixels" (images), "latents" (noised latents of a generator),
    "timestep" (diffusion time), "condition" (class labels or text embeddings), "mask".
    shape: symbolic dimensions ("batch", "seq", "channels", "height", "width") or integers.
    """

    name: str                     # the forward keyword
    kind: str
    shape: tuple
    dtype: str = "float32"


TOKEN_INPUTS = (InputField("input_ids", "tokens", ("batch", "seq"), "int64"),)


class StopForward(Exception):
    """Raised by the capture hook to end a forward pass once block 0's inputs are recorded."""


class Adapter:
    """Generic adapter driven by a dotted path to the block list; subclasses add specifics."""

    name: ClassVar[str] = "generic"
    model_types: ClassVar[tuple[str, ...]] = ()
    blocks_path: ClassVar[str] = ""
    # The final norm and the LM head, for losses computed from a block's output (None: no LM head).
    final_norm_path: ClassVar[str | None] = None
    head_path: ClassVar[str | None] = None
    # The attention module inside a block (the hook point of token selectors and attention scores).
    attention_path: ClassVar[str | None] = None
    # Whether the config states head_dim apart from hidden_size / heads (so a model whose blocks were
    # all cut to the same widths is described by its config alone and loads with from_pretrained).
    config_head_dim: ClassVar[bool] = False
    # What the model's forward takes.
    inputs: ClassVar[tuple[InputField, ...]] = TOKEN_INPUTS
    # How checkpoint files of this model are named (diffusers: "diffusion_pytorch_model").
    weights_prefix: ClassVar[str] = "model"

    # The global index of this adapter's first block when it is one tower of a multi-tower model (plan
    # rows and checkpoint shards number the blocks of all towers in one sequence).
    block_offset: int = 0
    tower_name: str = ""

    def __init__(self, model: nn.Module):
        self.model = model

    def towers(self) -> list["Adapter"]:
        """The block sequences the model runs, in the order of its forward pass (one for most models;
        an image tower and a text tower or decoder for dual encoders and vision-language models)."""
        return [self]

    # --- structure ----------------------------------------------------------------------------
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return mt in cls.model_types and cls._resolve(model, cls.blocks_path) is not None

    @staticmethod
    def _resolve(root: nn.Module, path: str) -> Any:
        obj: Any = root
        for part in path.split("."):
            if not hasattr(obj, part):
                return None
            obj = getattr(obj, part)
        return obj

    def block_list(self) -> nn.ModuleList:
        blocks = self._resolve(self.model, self.blocks_path)
        if blocks is None:
            raise AttributeError(f"{type(self.model).__name__} has no {self.blocks_path}")
        return blocks

    def blocks_owner(self) -> nn.Module:
        """The module whose forward runs the blocks (where a per-forward hook sees the model's inputs)."""
        parent = self.blocks_path.rsplit(".", 1)[0] if "." in self.blocks_path else ""
        return self._resolve(self.model, parent) if parent else self.model

    @property
    def num_blocks(self) -> int:
        return len(self.block_list())

    def block_prefix(self, i: int) -> str:
        return f"{self.blocks_path}.{i}"

    def linears(self, i: int, block: nn.Module | None = None) -> list[LinearRef]:
        block = self.block_list()[i] if block is None else block
        out = []
        for local, mod in block.named_modules():
            if isinstance(mod, nn.Linear) or (CONV1D and isinstance(mod, CONV1D)):
                out.append(LinearRef(f"{self.block_prefix(i)}.{local}", local, self.block_offset + i, mod))
        return out

    def all_linears(self) -> list[LinearRef]:
        return [ref for i in range(self.num_blocks) for ref in self.linears(i)]

    def block_prefixes(self) -> tuple[str, ...]:
        """Name prefixes of every block's tensors (those outside are written once, after the blocks)."""
        return (self.blocks_path + ".",)

    # --- running one block ---------------------------------------------------------------------
    def call_block(self, block: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        out = block(hidden, *args, **kwargs)
        # Older transformers return (hidden, ...); newer return the tensor. Never index a tensor.
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def clean_kwargs(self, kwargs: dict) -> dict:
        kw = dict(kwargs)
        for k in ("cache", "past_key_value", "past_key_values", "layer_past"):
            if k in kw:
                kw[k] = None
        if "use_cache" in kw:
            kw["use_cache"] = False
        kw.pop("output_attentions", None)
        return kw

    def clean_args(self, args: tuple) -> tuple:
        return args

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the model computes after its last block: final norm, then the LM head."""
        if self.head_path is None:
            raise NotImplementedError(f"{self.name} adapter: no LM head")
        h = self._resolve(self.model, self.final_norm_path)(hidden) if self.final_norm_path else hidden
        return self._resolve(self.model, self.head_path)(h)

    def attention(self, i: int) -> nn.Module:
        """The attention module of block i."""
        if self.attention_path is None:
            raise NotImplementedError(f"the {self.name} adapter does not describe its attention modules")
        return self._resolve(self.block_list()[i], self.attention_path)

    def model_inputs(self, ids: torch.Tensor) -> dict:
        return {"input_ids": ids}

    def example_inputs(self, batch: int = 2, length: int = 32, seed: int = 0) -> dict:
        """Seeded inputs of the kind the model takes (for reload checks, timing, tracing)."""
        g = torch.Generator().manual_seed(seed)
        out = {}
        for f in self.inputs:
            if f.kind == "tokens":
                out[f.name] = torch.randint(0, self.model.config.vocab_size, (batch, length), generator=g)
            else:
                raise NotImplementedError(f"the {self.name} adapter must build example '{f.kind}' inputs itself")
        return out

    def run_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """One forward of the whole model on a batch of calibration inputs (to reach block 0)."""
        model(**self.model_inputs(inputs), use_cache=False)

    def calibration_loss(self, model: nn.Module, inputs) -> torch.Tensor:
        """The model's own training loss on a calibration batch (the zeroth-order score's objective):
        next-token loss for a causal LM; adapters of other models override it."""
        from ...models.loader import is_causal_lm

        if not is_causal_lm(model):
            from ...errors import ConfigError

            raise ConfigError(f"the {self.name} adapter defines no loss for this model")
        return model(**self.model_inputs(inputs), labels=inputs, use_cache=False).loss

    def training_batch(self, step: int, batch: int, seed: int):
        """The training batch of global step `step` when the model brings its own training data (a
        generator's noised images); None for language models, which train on a token corpus."""
        return None

    # --- config bookkeeping ---------------------------------------------------------------------
    def config_num_blocks_key(self) -> str:
        return "num_hidden_layers"

    def describe(self) -> str:
        return f"{self.name} adapter: {self.num_blocks} blocks at {self.blocks_path}"


def causal_config(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def model_class(config):
    """The transformers auto class that builds a model of this config: causal LMs, image classifiers and
    vision-language generators with their head, everything else (encoders) bare."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageClassification

    if causal_config(config):
        return AutoModelForCausalLM
    if any(a.endswith("ForImageClassification") for a in (getattr(config, "architectures", None) or [])):
        return AutoModelForImageClassification
    if any(a.endswith("ForConditionalGeneration") for a in (getattr(config, "architectures", None) or [])):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText
    return AutoModel


ADAPTERS: list[type[Adapter]] = []


def register(cls: type[Adapter]) -> type[Adapter]:
    ADAPTERS.append(cls)
    return cls


def get_adapter(model: nn.Module) -> Adapter:
    if getattr(model, "_layerwise_spec", None) is not None:   # described by layerwise.adapt()
        from .plain import PlainAdapter

        return PlainAdapter(model)
    for cls in ADAPTERS:
        if cls.matches(model):
            return cls(model)
    mt = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    from ...errors import ConfigError

    supported = sorted({t for c in ADAPTERS for t in c.model_types})
    raise ConfigError(f"no adapter for model type '{mt}'; supported: {', '.join(supported)}")


def compile_patterns(patterns: list[str] | None) -> list:
    """Module selectors: a plain string matches as a substring of the name, `re:...` as a regex."""
    out = []
    for p in patterns or []:
        if p.startswith("re:"):
            try:
                out.append(re.compile(p[3:]))
            except re.error as e:
                from ...errors import ConfigError

                raise ConfigError(f"bad regular expression {p!r}: {e}") from e
        else:
            out.append(p)
    return out


def name_matches(name: str, patterns: list) -> bool:
    for p in patterns:
        if isinstance(p, str):
            if p in name:
                return True
        elif p.search(name):
            return True
    return False
