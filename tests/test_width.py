from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise import zoo
from layerwise.cli import main
from layerwise.io.structured import save_model
from layerwise.io.load import load_model
from layerwise.pipeline.width import block_params, prune_once, stage_tokens, width
from layerwise.prune.width import (LayerCut, apply_mask, keep_multiples, layouts, plan_cuts, removed_params, shrink,
                                   unit_scores)


def model(arch="llama", layers=3, bias=False):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    kw = dict(vocab_size=4096, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
              num_attention_heads=8, num_key_value_heads=4)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw)).eval()  # q/k/v carry biases
    return LlamaForCausalLM(LlamaConfig(**kw, attention_bias=bias)).eval()


def ids(seed=0):
    return torch.randint(0, 4096, (2, 20), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, bias", [("llama", False), ("llama", True), ("qwen2", True)])
def test_masked_equals_physically_removed_and_reloaded(arch, bias, tmp_path):
    m = model(arch, bias=bias)
    cuts = [LayerCut(0, [1], [0, 5, 9]), LayerCut(1, [0, 3], []), LayerCut(2, [], list(range(40)))]
    masked = apply_mask(copy.deepcopy(m), cuts)
    small = shrink(copy.deepcopy(m), cuts)
    x = ids()
    with torch.no_grad():
        a, b = masked(input_ids=x).logits, small(input_ids=x).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    lays = layouts(small)
    assert [l.kv_heads for l in lays] == [3, 2, 4] and [l.intermediate for l in lays] == [93, 96, 56]
    assert all(l.rep == 2 for l in lays)  # GQA ratio kept
    assert small.model.layers[0].self_attn.q_proj.weight.shape == (48, 64)
    save_model(small, None, tmp_path / "m")
    assert (tmp_path / "m" / "layerwise_model.json").exists()
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "m")).model(input_ids=x).logits, b)


def test_uniform_widths_that_stock_configs_reject_use_layerwise_load(tmp_path):
    m = model()
    shrink(m, [LayerCut(i, [2], []) for i in range(3)])  # 6 heads: 64 % 6 != 0
    save_model(m, None, tmp_path / "six")
    assert (tmp_path / "six" / "layerwise_model.json").exists()
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "six")).model(input_ids=ids()).logits, m(input_ids=ids()).logits)


def test_uniform_widths_reload_with_stock_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    m = model()
    cuts = [LayerCut(i, [0, 2], [1, 2, 3]) for i in range(3)]
    shrink(m, cuts)
    save_model(m, None, tmp_path / "u")
    assert not (tmp_path / "u" / "layerwise_model.json").exists()
    cfg = json.loads((tmp_path / "u" / "config.json").read_text())
    assert cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2 and cfg["intermediate_size"] == 93
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "u").eval()
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids()).logits, m(input_ids=ids()).logits)


@pytest.mark.parametrize("criterion", ["magnitude", "wanda", "flap", "taylor"])
def test_criteria_and_budget(criterion):
    lm = zoo.load("llama-tiny")
    P0 = block_params(lm.model)
    samples = torch.randint(0, 4096, (8, 64), generator=torch.Generator().manual_seed(0))
    cuts = prune_once(lm.model, samples, int(0.3 * P0), criterion, adaptive=False)
    got = removed_params(lm.model, cuts)
    ch = layouts(lm.model)[0].channel_params
    assert abs(got - 0.3 * P0) <= len(cuts) * ch  # within one channel per layer
    assert all(len(c.remove_groups) < layouts(lm.model)[c.block].kv_heads for c in cuts)


def test_adaptive_prunes_important_layers_least():
    m = model(layers=4)
    scores = unit_scores(m, "magnitude")
    importance = [0.9, 0.1, 0.2, 0.5]   # layer 0 changes its input most
    cuts = plan_cuts(m, scores, int(0.3 * block_params(m)), adaptive=True, importance=importance)
    rm = [removed_params(m, [c]) for c in cuts]
    assert rm[0] == min(rm) and rm[1] == max(rm)
    flat = plan_cuts(m, scores, int(0.3 * block_params(m)), adaptive=False)
    assert max(removed_params(m, [c]) for c in flat) - min(removed_params(m, [c]) for c in flat) <= 3 * 64


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 100)), min_size=1, max_size=12), st.integers(1, 8))
def test_keep_multiples_rounds_each_layer_and_keeps_the_total(layers, n):
    full = [n * u + extra % n if extra % 3 else n * u for u, extra in layers]   # some widths not multiples
    kept = [max(1, f * (extra % 101) // 100) for f, (_, extra) in zip(full, layers)]
    got = keep_multiples(kept, full, n)
    assert all(1 <= g <= f and (g % n == 0 or g == f) for g, f in zip(got, full))
    assert all(g == f for g, k, f in zip(got, kept, full) if k == f)
    # no cap or floor in the way: the total is the nearest multiple-sum to the exact one
    if all(n <= k <= (f // n) * n - n for k, f in zip(kept, full)):
        assert abs(sum(got) - sum(kept)) <= n / 2 + 1e-9


def test_width_rounds_mlp_channels_to_multiples(tmp_path):
    m = model(layers=4)
    scores = unit_scores(m, "magnitude")
    P0 = block_params(m)
    cuts = plan_cuts(m, scores, int(0.37 * P0), adaptive=True, importance=[0.9, 0.1, 0.2, 0.5], multiple_of=16)
    inter = layouts(m)[0].intermediate
    assert all((inter - len(c.remove_channels)) % 16 == 0 for c in cuts)
    exact = removed_params(m, plan_cuts(m, scores, int(0.37 * P0), adaptive=True, importance=[0.9, 0.1, 0.2, 0.5]))
    assert abs(removed_params(m, cuts) - exact) <= 8 * layouts(m)[0].channel_params
    r = width("zoo:llama-tiny", params=0.6, multiple_of=32, nsamples=4, seqlen=32, criterion="magnitude",
              out=tmp_path / "w")
    sizes = [w.mlp.gate_proj.out_features for w in load_model(str(tmp_path / "w")).model.model.layers]
    assert all(s % 32 == 0 for s in sizes) and abs(r.params_after / r.params_before - 0.6) < 0.03


def test_stage_shards_grow_linearly():
    s = stage_tokens(100, 4)
    assert sum(s) == 100 and s == sorted(s) and s[0] == 10 and s[-1] == 40


def test_incremental_with_distillation(tmp_path):
    r = width("zoo:llama-tiny", params=0.85, incremental=True, step=0.05, tokens=6 * 4 * 32, global_batch=4,
              train_seqlen=32, nsamples=4, seqlen=32, criterion="magnitude", adaptive=True, out=tmp_path / "w",
              lr=1e-3)
    assert len(r.stages) == 3 and [s["steps"] for s in r.stages] == [1, 2, 3]
    assert abs(r.params_after / r.params_before - 0.85) < 0.01
    steps = [c["global_step"] for c in r.curve]
    assert steps == list(range(1, 7))  # one global schedule across stages
    plan = json.loads((tmp_path / "w" / "plan.json").read_text())
    assert plan["meta"]["stages"][-1]["params_after"] == r.params_after
    assert load_model(str(tmp_path / "w")).model.config.vocab_size == 4096


@pytest.mark.parametrize("args, needle", [
    (["--params", "1.2"], "--params"),
    (["--params", "0"], "--params"),
    (["--criterion", "random"], "unknown width criterion"),
    (["--incremental", "--step", "0"], "--step"),
    (["--multiple-of", "0"], "--multiple-of"),
    (["--multiple-of", "100000"], "--multiple-of"),
])
def test_cli_bad_input(args, needle, tmp_path, capsys):
    code = main(["width", "zoo:llama-tiny", "--out", str(tmp_path / "o")] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2", "bert"])
def test_width_surgery_on_every_adapter(arch, tmp_path):
    """Masked == physically removed, and the saved result reloads to the same outputs, on every
    architecture whose adapter declares its unit groups (fused GPT-2 c_attn, BERT post-norm)."""
    from conftest import tiny_model

    from layerwise.models.loader import output_tensor

    m = tiny_model(arch)
    lays = layouts(m)
    cuts = [LayerCut(0, [1], [0, 5, 9]), LayerCut(1, [lays[1].kv_heads - 1], list(range(20)))]
    masked = apply_mask(copy.deepcopy(m), cuts)
    small = shrink(copy.deepcopy(m), cuts)
    x = ids()
    with torch.no_grad():
        a, b = output_tensor(masked(input_ids=x)), output_tensor(small(input_ids=x))
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    after = layouts(small)
    assert [l.kv_heads for l in after] == [lays[0].kv_heads - 1, lays[1].kv_heads - 1]
    assert [l.intermediate for l in after] == [lays[0].intermediate - 3, lays[1].intermediate - 20]
    save_model(small, None, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(output_tensor(load_model(str(tmp_path / "m")).model(input_ids=x)), b)


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "gpt2", "bert"])
def test_cli_width_on_other_architectures(arch, tiny_dirs, capsys, tmp_path):
    crit = "wanda" if arch == "bert" else "taylor"
    code = main(["width", str(tiny_dirs[arch]), "--params", "0.7", "--adaptive", "--criterion", crit,
                 "--nsamples", "4", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert "identical" in man["checks"]["reload"]


def test_taylor_on_an_encoder_is_one_line(tiny_dirs, capsys, tmp_path):
    code = main(["width", str(tiny_dirs["bert"]), "--criterion", "taylor", "--nsamples", "4",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "language-model loss" in err[-1]


