"""Vision-language models (LLaVA-style): the adapter, the quadrant task, and vision-token pruning
(FastV, random) checked against references on a random tiny LLaVA."""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from layerwise.data import quadrants as qd
from layerwise.errors import ConfigError
from layerwise.models.adapters import get_adapter
from layerwise.pipeline.tokens_vlm import check_keep_ratio, vlm_schedule
from layerwise.tokens import TOKEN_SELECTORS, TokenRouting


def llava(seed=0):
    torch.manual_seed(seed)
    vc = CLIPVisionConfig(image_size=16, patch_size=2, num_channels=1, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2)
    tc = LlamaConfig(vocab_size=len(qd.VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_id=qd.IMAGE, vision_feature_layer=-1,
                      vision_feature_select_strategy="default", image_seq_length=64)
    return LlavaForConditionalGeneration(cfg).eval()


def inputs(b=3):
    q = qd.quadrant_batch(0, b, seed=1, split="validation")
    return q, {"input_ids": q.ids, "pixel_values": q.pixels}


def test_quadrant_task_knows_its_relevant_tokens():
    q = qd.quadrant_batch(5, 8, seed=0)
    assert q.ids.shape == (8, 1 + 64 + 2) and int((q.ids == qd.IMAGE).sum(1).unique()) == 64
    assert q.relevant.sum(1).tolist() == [16] * 8
    quad = qd.patch_quadrants(16, 2)
    assert quad[:8].tolist() == [0] * 4 + [1] * 4 and quad[-1] == 3
    again = qd.quadrant_batch(5, 8, seed=0)
    assert torch.equal(q.pixels, again.pixels) and torch.equal(q.answer, again.answer)
    assert ((q.answer >= qd.DIGIT0) & (q.answer < qd.DIGIT0 + 10)).all()


def test_adapter_finds_the_decoder_and_the_vision_span():
    m = llava()
    a = get_adapter(m)
    assert a.name == "llava" and a.num_blocks == 4 and a.num_vision_tokens() == 64
    ex = a.example_inputs(batch=2)
    assert a.vision_tokens(ex["input_ids"]).sum(1).tolist() == [64, 64]
    with torch.no_grad():
        m(**ex)


@pytest.mark.parametrize("name", ["fastv", "random", "covipal"])
def test_mask_equals_gather_and_text_tokens_are_never_dropped(name):
    m = llava()
    q, x = inputs()
    drop = vlm_schedule(4, 2, 0.25)
    sel = TOKEN_SELECTORS.create(name)
    if sel.trainable:
        torch.manual_seed(0)
        sel.build(m)
    with torch.no_grad():
        dense = m(**x).logits
        with TokenRouting(m, sel, drop, record=True) as r:
            g = m(**x).logits
            kept = r.state.kept[2]
        with TokenRouting(m, sel, drop, mode="mask"):
            k = m(**x).logits
    vis = q.ids == qd.IMAGE
    assert kept[~vis].all()                                   # every text token stays
    assert kept[vis].view(3, -1).sum(1).tolist() == [16] * 3  # 25% of 64 vision tokens
    assert torch.allclose(g[:, -1], k[:, -1], atol=1e-4)
    assert not torch.allclose(g[:, -1], dense[:, -1], atol=1e-4)


def test_keep_ratio_one_is_the_dense_model():
    m = llava()
    _, x = inputs()
    with torch.no_grad():
        dense = m(**x).logits
        with TokenRouting(m, TOKEN_SELECTORS.create("fastv"), vlm_schedule(4, 1, 1.0)):
            out = m(**x).logits
    assert torch.equal(out, dense)


def test_pruned_kv_cache_is_shorter_after_the_site():
    m = llava()
    _, x = inputs(1)
    with torch.no_grad(), TokenRouting(m, TOKEN_SELECTORS.create("fastv"), vlm_schedule(4, 2, 0.25)):
        out = m(**x, use_cache=True)
    cache = out.past_key_values
    lengths = [int(cache.layers[i].keys.shape[-2]) for i in range(4)]
    assert lengths[:2] == [67, 67] and lengths[2:] == [67 - 48] * 2


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), True])
def test_keep_ratio_outside_zero_one_is_refused(bad):
    with pytest.raises(ConfigError, match="keep-ratio"):
        check_keep_ratio(bad)


def test_site_zero_is_refused_to_fastv_only():
    with pytest.raises(ConfigError, match="--site"):
        vlm_schedule(4, 0, 0.5, TOKEN_SELECTORS.create("fastv"))
    assert vlm_schedule(4, 0, 0.5, TOKEN_SELECTORS.create("random")) == [0.5, 0, 0, 0]


@pytest.mark.parametrize("name", ["random", "covipal"])
def test_pruning_before_decoder_block_zero_mask_equals_gather(name):
    """CoViPAL's l_p = 0: the module reads the projected vision tokens and the text embeddings."""
    m = llava()
    q, x = inputs()
    sel = TOKEN_SELECTORS.create(name)
    if sel.trainable:
        torch.manual_seed(0)
        sel.build(m)
    drop = vlm_schedule(4, 0, 0.25, sel)
    with torch.no_grad():
        with TokenRouting(m, sel, drop, record=True) as r:
            g = m(**x).logits
            kept = r.state.kept[0]
        with TokenRouting(m, sel, drop, mode="mask"):
            k = m(**x).logits
    vis = q.ids == qd.IMAGE
    assert kept[~vis].all() and kept[vis].view(3, -1).sum(1).tolist() == [16] * 3
    assert torch.allclose(g[:, -1], k[:, -1], atol=1e-4)


def test_covipal_trains_only_its_module_and_reloads(tmp_path):
    """A few steps of both stages: the model's weights never change; the module is saved and loaded with
    the model and gives identical answers; a module for another model is refused."""
    from layerwise.errors import ModelLoadError
    from layerwise.tokens import format as token_format
    from layerwise.tokens.covipal import train_ppm

    m = llava()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sel = TOKEN_SELECTORS.create("covipal", {"dim": 16, "stage1_steps": 2, "stage2_steps": 2})
    sel.build(m)
    start = [p.clone() for p in sel.router.parameters()]

    def batch_at(step):
        q = qd.quadrant_batch(step, 4, seed=3)
        return {"input_ids": q.ids, "pixel_values": q.pixels}

    curve = train_ppm(m, sel.router, 1, 0.25, batch_at, guide=3, stage1_steps=2, stage2_steps=2)
    assert [c["stage"] for c in curve] == [1, 1, 2, 2] and all(c["loss"] == c["loss"] for c in curve)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(a, b) for a, b in zip(start, sel.router.parameters()))
    drop = vlm_schedule(4, 1, 0.25)
    _, x = inputs()
    m.save_pretrained(tmp_path)
    routing = TokenRouting(m, sel, drop)
    token_format.write(tmp_path, routing)
    with torch.no_grad(), routing:
        ref = m(**x).logits
    back = token_format.load(tmp_path, torch.float32)
    with torch.no_grad():
        assert torch.equal(back(**x).logits, ref)
    other = llava()
    other.config.text_config.hidden_size = 32
    with pytest.raises(ModelLoadError, match="another model"):
        token_format.selector_from({"selector": {**sel.config_dict(), "dim": 8}}, m, tmp_path)


def test_query_agnostic_module_ignores_the_question():
    from layerwise.tokens.covipal import PPM

    torch.manual_seed(0)
    ppm = PPM(64, 64, dim=16, text=False).eval()
    q, _ = inputs(2)
    vision = q.ids == qd.IMAGE
    h = torch.randn(2, q.ids.shape[1], 64)
    h2 = h.clone()
    h2[:, -2:] = torch.randn(2, 2, 64)           # another question
    real = torch.ones_like(vision)
    with torch.no_grad():
        assert torch.allclose(ppm(h, vision, real)[vision], ppm(h2, vision, real)[vision], atol=1e-6)
        full = PPM(64, 64, dim=16, text=True).eval()
        assert not torch.allclose(full(h, vision, real)[vision], full(h2, vision, real)[vision], atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--method", "tome"], "takes fastv, random or covipal"),
    (["--method", "fastv", "--keep-ratio", "1.5"], "keep-ratio"),
    (["--method", "fastv", "--site", "0"], "--site"),
    (["--method", "covipal", "--option", "guide=1", "--site", "1"], "guidance block"),
    (["--method", "fastv", "--r", "3"], "--r"),
])
def test_vlm_tokens_command_bad_input_exits_2(tmp_path, capsys, argv, message):
    from layerwise.cli import main

    code = main(["tokens", "zoo:llava-quadrants", *argv, "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
