"""Adapters describe structure and inputs: blocks, attention hook points, what forward takes; and the
one verified-reload path uses them on every architecture."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_model

from layerwise.errors import LayerwiseError
from layerwise.io.structured import save_model
from layerwise.io.verify import check_reload
from layerwise.models.adapters import get_adapter
from layerwise.models.loader import output_tensor

ARCHS = ["llama", "qwen2", "mistral", "gpt2", "bert"]


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_hook_points_see_every_block(arch):
    """A forward hook on adapter.attention(i) fires once per block per forward, with the block's width."""
    m = tiny_model(arch).eval()
    ad = get_adapter(m)
    seen = []
    hooks = [ad.attention(i).register_forward_hook(lambda mod, a, o, i=i: seen.append(i))
             for i in range(ad.num_blocks)]
    inputs = ad.example_inputs(batch=2, length=9)
    assert set(inputs) == {f.name for f in ad.inputs} and inputs["input_ids"].shape == (2, 9)
    with torch.no_grad():
        out = output_tensor(m(**inputs))
    for h in hooks:
        h.remove()
    assert seen == list(range(ad.num_blocks)) and out.shape[:2] == (2, 9)
    assert all(ad.attention(i) in list(ad.block_list()[i].modules()) for i in range(ad.num_blocks))


def test_example_inputs_are_seeded_and_in_vocabulary():
    ad = get_adapter(tiny_model("llama"))
    a, b, c = ad.example_inputs(seed=1), ad.example_inputs(seed=1), ad.example_inputs(seed=2)
    assert torch.equal(a["input_ids"], b["input_ids"]) and not torch.equal(a["input_ids"], c["input_ids"])
    assert int(a["input_ids"].max()) < ad.model.config.vocab_size


@pytest.mark.parametrize("arch", ARCHS)
def test_check_reload_accepts_exact_and_rejects_changed(arch, tmp_path):
    m = tiny_model(arch).eval()
    save_model(m, None, tmp_path / "m")
    line = check_reload(m, tmp_path / "m")
    assert "identical" in line
    other = copy.deepcopy(m)
    with torch.no_grad():
        next(p for n, p in other.named_parameters() if "layer" in n or ".h." in n).add_(1e-3)
    with pytest.raises(LayerwiseError, match="does not reproduce"):
        check_reload(other, tmp_path / "m")
