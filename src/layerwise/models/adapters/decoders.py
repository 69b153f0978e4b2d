"""Llama-like decoders (Llama, Qwen2, Mistral and relatives), GPT-2, and BERT encoders."""
from __future__ import annotations

from .base import Adapter, register


@register
class LlamaLikeAdapter(Adapter):
    """Pre-norm decoders with rotary positions and grouped-query attention: q/k/v/o + gate/up/down."""

    name = "llama"
    model_types = ("llama", "qwen2", "mistral", "qwen3", "mixtral_dense")
    blocks_path = "model.layers"
    final_norm_path = "model.norm"
    head_path = "lm_head"

    def attention_layout(self) -> dict:
        c = self.model.config
        heads = c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return {"heads": heads, "kv_heads": kv, "head_dim": head_dim}


@register
class GPT2Adapter(Adapter):
    """GPT-2: Conv1D weights stored as in × out (LinearRef transposes them)."""

    name = "gpt2"
    model_types = ("gpt2",)
    blocks_path = "transformer.h"
    final_norm_path = "transformer.ln_f"
    head_path = "lm_head"

    def config_num_blocks_key(self) -> str:
        return "n_layer"


@register
class BertAdapter(Adapter):
    """BERT-style encoders (post-norm); the pooler and embeddings stay untouched."""

    name = "bert"
    model_types = ("bert", "roberta")

    @classmethod
    def matches(cls, model) -> bool:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return mt in cls.model_types and (cls._resolve(model, "encoder.layer") is not None
                                          or cls._resolve(model, "bert.encoder.layer") is not None)

    def __init__(self, model):
        super().__init__(model)
        self.blocks_path = "encoder.layer" if self._resolve(model, "encoder.layer") is not None \
            else "bert.encoder.layer"
