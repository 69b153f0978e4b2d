"""Llama-like decoders (Llama, Qwen2, Mistral and relatives), GPT-2, and BERT encoders."""
from __future__ import annotations

from .base import Adapter, register
from .layout import Member


@register
class LlamaLikeAdapter(Adapter):
    """Pre-norm decoders with rotary positions and grouped-query attention: q/k/v/o + gate/up/down."""

    name = "llama"
    model_types = ("llama", "qwen2", "mistral", "qwen3", "mixtral_dense")
    blocks_path = "model.layers"
    attention_path = "self_attn"
    config_head_dim = True
    final_norm_path = "model.norm"
    head_path = "lm_head"

    @staticmethod
    def apply_rotary(q, k, cos, sin):
        """Rotary positions as these models apply them to q/k heads ([B, H, n, hd])."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        return apply_rotary_pos_emb(q, k, cos, sin)

    def attention_layout(self) -> dict:
        c = self.model.config
        heads = c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return {"heads": heads, "kv_heads": kv, "head_dim": head_dim}

    # A KV group is its k/v rows, the rows of its query heads in q_proj (repeat_kv's head-major
    # layout) and the matching o_proj columns; keeping whole groups keeps the heads-per-KV ratio.
    def width_units(self, block) -> dict:
        lay = self.attention_layout()
        hd, rep = lay["head_dim"], lay["heads"] // lay["kv_heads"]
        a, m = block.self_attn, block.mlp
        return {"hidden": a.q_proj.in_features, "head_dim": hd, "rep": rep,
                "groups_n": a.k_proj.out_features // hd, "channels_n": m.gate_proj.out_features,
                "groups": [Member("q", "self_attn.q_proj", 0, rep * hd), Member("k", "self_attn.k_proj", 0, hd),
                           Member("v", "self_attn.v_proj", 0, hd), Member("o", "self_attn.o_proj", 1, rep * hd)],
                "channels": [Member("g", "mlp.gate_proj", 0, 1), Member("u", "mlp.up_proj", 0, 1),
                             Member("d", "mlp.down_proj", 1, 1)]}

    def set_widths(self, block, groups: int, channels: int) -> None:
        if hasattr(block.mlp, "intermediate_size"):
            block.mlp.intermediate_size = channels

    def config_widths(self) -> tuple[int, int]:
        c = self.model.config
        return self.attention_layout()["kv_heads"], c.intermediate_size

    def search_space(self):
        """Per block: its KV groups and MLP channels; the stack's depth (a prefix of the blocks)."""
        from .layout import layouts
        from .space import DepthDim, SearchSpace, WidthDim, depth_candidates, width_candidates

        widths = []
        for lay in layouts(self.model):
            widths.append(WidthDim(f"layers.{lay.block}.attn", lay.kv_heads, width_candidates(lay.kv_heads),
                                   "kv_group", lay.block))
            widths.append(WidthDim(f"layers.{lay.block}.mlp", lay.intermediate, width_candidates(lay.intermediate),
                                   "mlp_channel", lay.block))
        n = self.num_blocks
        return SearchSpace("decoder", widths, [DepthDim("layers", tuple(range(n)), depth_candidates(n))])


@register
class GPT2Adapter(Adapter):
    """GPT-2: Conv1D weights stored as in × out (LinearRef transposes them)."""

    name = "gpt2"
    model_types = ("gpt2",)
    blocks_path = "transformer.h"
    attention_path = "attn"
    final_norm_path = "transformer.ln_f"
    head_path = "lm_head"

    def config_num_blocks_key(self) -> str:
        return "n_layer"

    # Heads live in the fused c_attn (q, k and v sections of split_size rows each) and in the
    # columns of attn.c_proj; MLP channels are c_fc outputs and mlp.c_proj inputs.
    def width_units(self, block) -> dict:
        a, m = block.attn, block.mlp
        hd, split = a.head_dim, a.split_size
        return {"hidden": self.model.config.n_embd, "head_dim": hd, "rep": 1, "groups_n": split // hd,
                "channels_n": m.c_fc.nf,
                "groups": [Member("q", "attn.c_attn", 0, hd, 0), Member("k", "attn.c_attn", 0, hd, split),
                           Member("v", "attn.c_attn", 0, hd, 2 * split), Member("o", "attn.c_proj", 1, hd)],
                "channels": [Member("u", "mlp.c_fc", 0, 1), Member("d", "mlp.c_proj", 1, 1)]}

    def set_widths(self, block, groups: int, channels: int) -> None:
        block.attn.num_heads = groups
        block.attn.split_size = groups * block.attn.head_dim

    def config_widths(self) -> tuple[int, int]:
        c = self.model.config
        return c.n_head, c.n_inner or 4 * c.n_embd


@register
class BertAdapter(Adapter):
    """BERT-style encoders (post-norm); the pooler and embeddings stay untouched."""

    name = "bert"
    model_types = ("bert", "roberta")
    attention_path = "attention.self"

    @classmethod
    def matches(cls, model) -> bool:
        mt = getattr(getattr(model, "config", None), "model_type", None)
        return mt in cls.model_types and (cls._resolve(model, "encoder.layer") is not None
                                          or cls._resolve(model, "bert.encoder.layer") is not None)

    def __init__(self, model):
        super().__init__(model)
        self.blocks_path = "encoder.layer" if self._resolve(model, "encoder.layer") is not None \
            else "bert.encoder.layer"

    # Heads: query/key/value rows and attention.output.dense columns; MLP channels: intermediate
    # outputs and output.dense inputs (post-norm blocks: the LayerNorms stay as they are).
    def width_units(self, block) -> dict:
        s, hd = block.attention.self, block.attention.self.attention_head_size
        return {"hidden": self.model.config.hidden_size, "head_dim": hd, "rep": 1,
                "groups_n": s.query.out_features // hd, "channels_n": block.intermediate.dense.out_features,
                "groups": [Member("q", "attention.self.query", 0, hd), Member("k", "attention.self.key", 0, hd),
                           Member("v", "attention.self.value", 0, hd),
                           Member("o", "attention.output.dense", 1, hd)],
                "channels": [Member("u", "intermediate.dense", 0, 1), Member("d", "output.dense", 1, 1)]}

    def set_widths(self, block, groups: int, channels: int) -> None:
        s = block.attention.self
        s.num_attention_heads = groups
        s.all_head_size = groups * s.attention_head_size

    def config_widths(self) -> tuple[int, int]:
        c = self.model.config
        return c.num_attention_heads, c.intermediate_size
