"""A plain PyTorch module, described by its block list, goes through the same engine and methods."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import layerwise
from conftest import tiny_model
from layerwise.errors import ConfigError
from layerwise.pipeline.prune import prune
from layerwise.pipeline.quantize import quantize


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x, scale: float = 1.0):
        return x + scale * self.down(torch.relu(self.up(self.norm(x))))


class Tower(nn.Module):
    """Not a transformers model: no config, no input_ids, blocks called with a keyword side input."""

    def __init__(self, d: int = 32, n: int = 3):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.out = nn.Linear(d, 4)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h, scale=0.5)
        return self.out(h)


def test_plain_module_prunes_and_quantizes_block_by_block():
    torch.manual_seed(0)
    model = layerwise.adapt(Tower(), blocks="blocks")
    calib = torch.randn(16, 10, 8)
    r = prune(model, method="sparsegpt", sparsity=0.5, calib=calib, batch_size=4)
    assert r.plan.measured_sparsity() == pytest.approx(0.5, abs=1e-9)
    assert {x.name.split(".")[-1] for x in r.plan.rows} == {"up", "down"}
    assert torch.isfinite(r.model(calib)).all()
    q = quantize(layerwise.adapt(Tower(), blocks="blocks"), bits=4, high=4, low=4, group_size=16, quantizer="gptq",
                 calib=calib, batch_size=4)
    assert q.plan.mean_bits() == 4 and torch.isfinite(q.model(calib)).all()


def test_plain_adapter_equals_the_llama_adapter(zoo_tokenizer):
    """A Llama described only by its block list is pruned exactly as by the Llama adapter."""
    from conftest import tiny_model

    m = tiny_model("llama")
    ids = torch.randint(0, 4096, (8, 32), generator=torch.Generator().manual_seed(1))
    ref = prune(copy.deepcopy(m), method="wanda", sparsity=0.5, calib=ids, batch_size=4)
    plain = layerwise.adapt(copy.deepcopy(m), blocks="model.layers",
                            call=lambda model, x: model(input_ids=x, use_cache=False))
    got = prune(plain, method="wanda", sparsity=0.5, calib=ids, batch_size=4)
    a, b = ref.model.state_dict(), got.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_descriptions_are_one_line():
    with pytest.raises(ConfigError, match="no non-empty block list at 'layers'"):
        layerwise.adapt(Tower(), blocks="layers")
    with pytest.raises(ConfigError, match="needs an nn.Module"):
        layerwise.adapt("not a model", blocks="x")


def test_plain_adapter_names_its_attention_modules():
    from layerwise.errors import ConfigError
    from layerwise.models.adapters import get_adapter

    m = layerwise.adapt(tiny_model("llama").model, blocks="layers", attention="self_attn")
    assert get_adapter(m).attention(1) is m.layers[1].self_attn
    with pytest.raises(ConfigError, match="no module at 'attn'"):
        layerwise.adapt(tiny_model("llama").model, blocks="layers", attention="attn")
