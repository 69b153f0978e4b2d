"""Vision transformers: the adapter, and token reduction inside the encoder (ToMe merging, random drop)
checked against slow references on random ViTs."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import ViTConfig, ViTForImageClassification

from layerwise.cli import main
from layerwise.errors import ConfigError
from layerwise.models.adapters import get_adapter
from layerwise.tokens import TOKEN_SELECTORS
from layerwise.tokens.flops import encoder_flops
from layerwise.tokens.merging import EncoderReduction, bipartite_matching, constant_r, token_counts, tome_reduce


def vit(layers=4, attn="sdpa", seed=0, image=16, patch=2):
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=image, patch_size=patch, num_channels=1, hidden_size=64, num_hidden_layers=layers,
                    num_attention_heads=4, intermediate_size=128, num_labels=10)
    cfg._attn_implementation = attn
    return ViTForImageClassification(cfg).eval()


def pixels(b=3, seed=1, image=16):
    return torch.randn(b, 1, image, image, generator=torch.Generator().manual_seed(seed))


def test_adapter_describes_blocks_inputs_and_head():
    m = vit()
    a = get_adapter(m)
    assert a.num_blocks == 4 and a.num_tokens() == 65
    assert [r.local for r in a.linears(0)] == ["attention.q_proj", "attention.k_proj", "attention.v_proj",
                                              "attention.o_proj", "mlp.fc1", "mlp.fc2"]
    x = pixels()
    with torch.no_grad():
        hidden = m.vit(pixel_values=x).last_hidden_state
        # the adapter's head on the last block's raw output is the model's logits
        raw = []
        h = a.block_list()[-1].register_forward_hook(lambda mod, i, o: raw.append(o))
        logits = m(pixel_values=x).logits
        h.remove()
        assert torch.allclose(a.logits_from_hidden(raw[0]), logits, atol=1e-6)
    assert hidden.shape == (3, 65, 64)
    with pytest.raises(ConfigError, match="images of shape"):
        a.model_inputs(torch.randn(2, 3, 16, 16))


@pytest.mark.parametrize("name", ["tome", "random"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_reduction_with_nothing_removed_is_the_stock_model(name, attn):
    m = vit(attn=attn)
    x = pixels()
    with torch.no_grad():
        ref = m(pixel_values=x).logits
        with EncoderReduction(m, TOKEN_SELECTORS.create(name), [0] * 4):
            out = m(pixel_values=x).logits
    assert torch.allclose(out, ref, atol=1e-6)


def test_random_drop_mask_equals_gather():
    m = vit()
    x = pixels(4)
    sel = TOKEN_SELECTORS.create("random", {"seed": 3})
    with torch.no_grad():
        with EncoderReduction(m, sel, [10, 8, 6, 0]):
            g = m(pixel_values=x).logits
        with EncoderReduction(m, sel, [10, 8, 6, 0], mode="mask"):
            k = m(pixel_values=x).logits
        dense = m(pixel_values=x).logits
    assert torch.allclose(g, k, atol=1e-5)
    assert not torch.allclose(g, dense, atol=1e-3)


def slow_matching(metric, r):
    """ToMe's matching, one image at a time, in plain Python loops."""
    out = []
    for m in metric:
        m = m / m.norm(dim=-1, keepdim=True)
        A, B = list(range(0, len(m), 2)), list(range(1, len(m), 2))
        best = []
        for ai, a in enumerate(A):
            sims = [float(m[a] @ m[b]) for b in B]
            j = max(range(len(B)), key=lambda t: (sims[t], -t))
            best.append((float("-inf") if ai == 0 else sims[j], ai, j))
        order = sorted(best, key=lambda t: (-t[0], t[1]))
        src = [(ai, j) for _, ai, j in order[:r]]
        kept = sorted(ai for _, ai, _ in order[r:])
        out.append((kept, src))
    return out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 40), r=st.integers(0, 12), seed=st.integers(0, 10_000))
def test_bipartite_matching_and_weighted_merge_match_a_slow_reference(n, r, seed):
    r = min(r, (n - 1) // 2)
    g = torch.Generator().manual_seed(seed)
    metric, x = torch.randn(2, n, 8, generator=g), torch.randn(2, n, 5, generator=g)
    size = torch.randint(1, 4, (2, n, 1), generator=g).float()
    kept, src, dst = bipartite_matching(metric, r)
    merged, new_size = tome_reduce(x, metric, size, r)
    for b, (kept_ref, src_ref) in enumerate(slow_matching(metric, r)):
        assert kept[b].tolist() == kept_ref
        assert sorted(zip(src[b].tolist(), dst[b].tolist())) == sorted(src_ref)
        A, B = list(range(0, n, 2)), list(range(1, n, 2))
        # every B token: the size-weighted mean of itself and the A tokens merged into it
        for j, bj in enumerate(B):
            members = [bj] + [A[ai] for ai, dj in src_ref if dj == j]
            w = size[b, members]
            ref = (x[b, members] * w).sum(0) / w.sum()
            assert torch.allclose(merged[b, len(kept_ref) + j], ref, atol=1e-5)
            assert float(new_size[b, len(kept_ref) + j]) == float(w.sum())
        assert kept_ref[0] == 0 and torch.allclose(merged[b, 0], x[b, 0], atol=1e-6)    # CLS stays first
    assert merged.shape[1] == n - r and float(new_size.sum()) == pytest.approx(float(size.sum()))


def test_sizes_are_conserved_through_the_encoder_and_the_count_schedule_holds():
    m = vit()
    red = EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [8, 8, 8, 8])
    seen = []
    with red, torch.no_grad():
        hooks = [b.register_forward_hook(lambda mod, i, o: seen.append(o.shape[1])) for b in red.adapter.block_list()]
        m(pixel_values=pixels())
        for h in hooks:
            h.remove()
        assert float(red._state["size"].sum(1).min()) == 65 == float(red._state["size"].sum(1).max())
    assert seen == token_counts([8] * 4, 65)[1] == [57, 49, 41, 33]


def test_proportional_attention_is_the_log_size_bias():
    """With sizes s, prop-attn equals attention over a sequence where each token is repeated s times."""
    from layerwise.tokens.merging import EncoderReduction as ER

    m = vit(layers=1)
    a = get_adapter(m)
    block = a.block_list()[0]
    x = torch.randn(1, 5, 64)
    size = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0])
    bias = size.log()[None, None, None, :]
    rep = x.repeat_interleave(size.long(), dim=1)
    with torch.no_grad():
        out, _ = block.attention(block.layernorm_before(x), bias)
        ref, _ = block.attention(block.layernorm_before(rep), None)
    first = torch.cat([torch.zeros(1), size.cumsum(0)[:-1]]).long()
    assert torch.allclose(out[0], ref[0, first], atol=1e-5)
    assert ER  # the module under test builds exactly this bias (see _bias)


def test_flops_and_constant_schedule():
    m = vit()
    dense = encoder_flops(m, [65] * 4)
    d, q, mm = 64, 64, 128
    assert dense == 4 * (2 * 65 * 4 * d * q + 4 * 65 * 65 * q + 2 * 65 * 2 * d * mm) + 2 * d * 10
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():    # eager: SDPA on CPU is not counted
        vit(attn="eager")(pixel_values=pixels(1))
    patch = 2 * 64 * 4 * 64   # the patch embedding, outside the blocks
    assert abs(fc.get_total_flops() - patch - dense) / dense < 0.03
    r = constant_r(65, 4, 0.25)
    att, mlp = token_counts([r] * 4, 65)
    assert 1 - (sum(att) + sum(mlp)) / (8 * 65) <= 0.25
    att2, mlp2 = token_counts([r + 1] * 4, 65)
    assert 1 - (sum(att2) + sum(mlp2)) / (8 * 65) > 0.25


def test_bad_schedules_are_one_line_errors():
    m = vit()
    with pytest.raises(ConfigError, match="at most 32"):
        EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [33, 0, 0, 0])
    with pytest.raises(ConfigError, match="non-negative integer"):
        EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [1.5, 0, 0, 0])
    with pytest.raises(ConfigError, match="the model has 4"):
        EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [1, 1])
    with pytest.raises(ConfigError, match="decoders only"):
        EncoderReduction(m, TOKEN_SELECTORS.create("fastv"), [1, 1, 1, 1])
    with pytest.raises(ConfigError, match="merges"):
        EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [1, 1, 1, 1], mode="mask")


def test_tokens_command_saves_a_reduced_vit_that_reloads(tmp_path, monkeypatch):
    import layerwise

    m = vit()
    src = tmp_path / "vit"
    m.save_pretrained(src)
    before = (src / "model.safetensors").read_bytes()
    out = tmp_path / "out"
    code = main(["tokens", str(src), "--method", "tome", "--r", "6", "--out", str(out)])
    assert code in (0, None)
    assert (src / "model.safetensors").read_bytes() == before
    meta = json.loads((out / "token_routing.json").read_text())
    assert meta["kind"] == "encoder" and meta["r"] == [6] * 4
    plan = json.loads((out / "plan.json").read_text())
    assert [row["config"]["r"] for row in plan["tokens"]] == [6] * 4
    back = layerwise.load(str(out)).model
    x = pixels()
    with torch.no_grad(), EncoderReduction(m, TOKEN_SELECTORS.create("tome"), [6] * 4):
        ref = m(pixel_values=x).logits
    with torch.no_grad():
        assert torch.equal(back(pixel_values=x).logits, ref)
    # replaying the plan reproduces the schedule
    out2 = tmp_path / "out2"
    assert main(["tokens", str(src), "--method", "tome", "--plan", str(out / "plan.json"), "--out", str(out2)]) in (0, None)
    assert json.loads((out2 / "token_routing.json").read_text())["r"] == [6] * 4


@pytest.mark.parametrize("argv, message", [
    (["--method", "tome", "--r", "40"], "at most"),
    (["--method", "fastv", "--r", "2"], "decoders only"),
    (["--method", "tome", "--sparsity", "0.001"], "below what removing one token"),
    (["--method", "tome", "--keep-ratio", "0.5"], "applies to vision-language models"),
])
def test_tokens_command_bad_input_exits_2(tmp_path, capsys, argv, message):
    src = tmp_path / "vit"
    vit().save_pretrained(src)
    capsys.readouterr()
    code = main(["tokens", str(src), *argv, "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_prune_quantize_and_analyze_run_on_the_zoo_vit(tmp_path):
    """The block-by-block commands calibrate a ViT on its own digit canvases, streamed from safetensors
    (transformers' legacy key names followed), and the results still classify."""
    import layerwise
    from layerwise.data.images import canvases_for
    from layerwise.eval.images import classifier_score

    out = tmp_path / "w50"
    assert main(["prune", "zoo:vit-digits", "--method", "wanda", "--sparsity", "0.5", "--nsamples", "32",
                 "--out", str(out)]) in (0, None)
    q = tmp_path / "q4"
    assert main(["quantize", "zoo:vit-digits", "--bits", "4", "--quantizer", "gptq", "--nsamples", "32",
                 "--out", str(q)]) in (0, None)
    assert main(["analyze", "zoo:vit-digits", "--scores", "lim,bi", "--nsamples", "16"]) in (0, None)
    lm = layerwise.load("zoo:vit-digits")
    test = canvases_for("test", 16, lm.card["data"])
    dense = classifier_score(lm.model, test).accuracy
    pruned = classifier_score(layerwise.load(str(out)).model, test).accuracy
    quant = classifier_score(layerwise.load(str(q)).model, test).accuracy
    assert dense > 0.9 and 0.5 < pruned < dense + 0.01 and quant > dense - 0.05


def test_width_depth_and_ecoflap_run_on_the_zoo_vit(tmp_path):
    """Width (wanda units, no healing), depth (Block Influence) and ECoFLaP's zeroth-order allocation on the
    ViT; `layerwise eval` of the results finds the source's canvases through the manifest."""
    import layerwise
    from layerwise.eval.evaluate import evaluate

    w, d, e = tmp_path / "w", tmp_path / "d", tmp_path / "e"
    assert main(["width", "zoo:vit-digits", "--keep-params", "0.7", "--criterion", "wanda", "--nsamples", "16",
                 "--out", str(w)]) in (0, None)
    assert main(["depth", "zoo:vit-digits", "--remove", "1", "--select", "bi", "--nsamples", "16",
                 "--out", str(d)]) in (0, None)
    assert main(["prune", "zoo:vit-digits", "--method", "wanda", "--sparsity", "0.5", "--allocation", "ecoflap",
                 "--nsamples", "16", "--out", str(e)]) in (0, None)
    assert layerwise.load(str(d)).model.config.num_hidden_layers == 5
    for out in (w, d, e):
        rep = evaluate(str(out), data="digits", speed=False)
        assert rep.extra["images"] == 1200 and rep.extra["accuracy"] > 0.5
    assert main(["width", "zoo:vit-digits", "--keep-params", "0.7", "--criterion", "wanda", "--tokens", "1000",
                 "--out", str(tmp_path / "x")]) == 2


def test_width_healing_on_the_vit_recovers_accuracy(tmp_path, capsys):
    """Width at 50% of the block parameters, then one epoch of distillation from the dense ViT on its training
    canvases: the healed model classifies the test canvases better than the one-shot cut."""
    import layerwise
    from layerwise.eval.evaluate import evaluate

    base = ["width", "zoo:vit-digits", "--keep-params", "0.5", "--criterion", "wanda", "--nsamples", "16"]
    assert main(base + ["--out", str(tmp_path / "cut")]) in (0, None)
    assert main(base + ["--epochs", "1", "--lr", "1e-3", "--global-batch", "64", "--out", str(tmp_path / "healed")]) \
        in (0, None)
    cut = evaluate(str(tmp_path / "cut"), data="digits", speed=False).extra["accuracy"]
    healed = evaluate(str(tmp_path / "healed"), data="digits", speed=False).extra["accuracy"]
    assert healed > cut + 0.05, (cut, healed)
    from layerwise.prune.width import widths

    same = widths(layerwise.load(str(tmp_path / "cut")).model)      # healing trains, it does not re-cut
    assert same == widths(layerwise.load(str(tmp_path / "healed")).model) and len(same) == 6
    capsys.readouterr()
    assert main(["width", "zoo:llama-tiny", "--keep-params", "0.7", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--epochs heals image classifiers" in err and len(err.strip().splitlines()) == 1, err
