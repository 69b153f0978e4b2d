from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LAYERWISE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(int(os.environ.get("LAYERWISE_THREADS", min(2, os.cpu_count() or 1))))

VOCAB = 4096


def tiny_config(arch: str):
    from transformers import (BertConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config)

    common = dict(vocab_size=VOCAB)
    if arch == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=512, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=512, **common)
    if arch == "mistral":
        return MistralConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=512, sliding_window=None, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, bos_token_id=0, eos_token_id=0,
                          **common)
    if arch == "bert":
        return BertConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=512, **common)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0):
    from transformers import (BertModel, GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM,
                              Qwen2ForCausalLM)

    cls = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "mistral": MistralForCausalLM,
           "gpt2": GPT2LMHeadModel, "bert": BertModel}[arch]
    torch.manual_seed(seed)
    return cls(tiny_config(arch)).eval()


@pytest.fixture(scope="session")
def zoo_tokenizer():
    from layerwise import zoo

    return zoo.load_tokenizer("llama-tiny")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, zoo_tokenizer):
    """save_pretrained directories (with a tokenizer) of tiny random models of five architectures."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch in ("llama", "qwen2", "mistral", "gpt2", "bert"):
        d = root / arch
        tiny_model(arch).save_pretrained(d)
        zoo_tokenizer.save_pretrained(d)
        out[arch] = d
    return out


def tree_hash(path) -> str:
    """Every file's name and bytes below `path`: equal hashes = nothing was touched."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def load_weights(d) -> dict:
    """All tensors of a directory's safetensors files."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(d).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out
