"""Architecture search (TAS): FLOPs accounting, the relaxation, the supernet, export, the command."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from layerwise.errors import ConfigError
from layerwise.models.adapters.space import depth_candidates, width_candidates
from layerwise.models.resnet import CifarResNetConfig, CifarResNetForImageClassification, resnet_flops
from layerwise.search import SEARCHERS, supernet_for
from layerwise.search.relax import cost_loss, cwi, sample_two, zero_pad


def _dense(seed=0, image_size=12, blocks=(3, 3, 3)):
    torch.manual_seed(seed)
    m = CifarResNetForImageClassification(CifarResNetConfig(image_size=image_size, stage_blocks=list(blocks)))
    with torch.no_grad():   # non-trivial batch-norm statistics, so a wrong BN shows up
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
    return m.eval()


def _random_genotype(sn, rng: torch.Generator) -> dict:
    g = {w.name: w.candidates[int(torch.randint(len(w.candidates), (1,), generator=rng))] for w in sn.width_dims}
    g.update({d.name: d.candidates[int(torch.randint(len(d.candidates), (1,), generator=rng))] for d in sn.depth_dims})
    return g


def _counted(model, image_size) -> int:
    with FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 1, image_size, image_size))
    return fc.get_total_flops()


def test_candidate_rules_follow_tas():
    assert width_candidates(16) == (4, 6, 8, 9, 11, 12, 14, 16)
    assert width_candidates(64) == (19, 25, 32, 38, 44, 51, 57, 64)
    assert width_candidates(8) == (2, 3, 4, 5, 6, 7, 8)         # collisions deduplicated
    assert depth_candidates(2) == (1, 2) and depth_candidates(3) == (1, 2, 3)
    assert depth_candidates(9) == (1, 3, 5, 7, 9) and depth_candidates(18) == (1, 3, 5, 7, 9, 11, 13, 15, 17, 18)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([8, 12, 16]))
def test_analytic_flops_equal_the_flop_counter_for_any_genotype(seed, size):
    sn = supernet_for(_dense(image_size=size))
    g = _random_genotype(sn, torch.Generator().manual_seed(seed))
    cfg = sn.genotype_config(g)
    counted = _counted(CifarResNetForImageClassification(cfg).eval(), size)
    assert abs(resnet_flops(cfg) - counted) <= 0.01 * counted
    assert resnet_flops(cfg) == counted     # in fact exact


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 10_000))
def test_expected_flops_equal_genotype_flops_when_distributions_are_one_hot(seed):
    sn = supernet_for(_dense())
    g = _random_genotype(sn, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for w, a in zip(sn.width_dims, sn.alphas):
            a.fill_(-1e4)
            a[w.candidates.index(g[w.name])] = 0
        for d, b in zip(sn.depth_dims, sn.betas):
            b.fill_(-1e4)
            b[d.candidates.index(g[d.name])] = 0
    assert sn.argmax_genotype() == g
    assert float(sn.expected_flops().detach()) == pytest.approx(sn.genotype_flops(g), rel=1e-5)


def test_cwi_is_the_identity_at_equal_widths_and_preserves_channel_means():
    x = torch.randn(3, 12, 5, 5)
    assert torch.equal(cwi(x, 12), x)
    y = cwi(x, 24)          # each input channel spread over two output channels
    assert y.shape == (3, 24, 5, 5)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-6)
    z = cwi(x, 4)           # three input channels averaged into each output channel
    assert torch.allclose(z[:, 0], x[:, :3].mean(1), atol=1e-6)
    assert torch.equal(zero_pad(x, 12), x) and torch.equal(zero_pad(x, 14)[:, 12:], torch.zeros(3, 2, 5, 5))


def test_two_sample_gumbel_draws_distinct_candidates_and_differentiates_through_them():
    alpha = torch.zeros(8, requires_grad=True)
    (j1, j2), w = sample_two(alpha, 1.0, torch.Generator().manual_seed(0))
    assert j1 != j2 and torch.isclose(w.sum(), torch.tensor(1.0))
    (w[0] * 3 + w[1]).backward()
    touched = (alpha.grad.abs() > 1e-6).nonzero().flatten().tolist()   # log-normaliser cancels elsewhere
    assert sorted(touched) == sorted([j1, j2])


def test_cost_loss_branches():
    e = torch.tensor(50.0, requires_grad=True)
    assert cost_loss(e, 60, 100, 0.5, 0.05)[1] == "down" and float(cost_loss(e, 60, 100, 0.5, 0.05)[0].detach()) > 0
    assert cost_loss(e, 40, 100, 0.5, 0.05)[1] == "up"
    loss, branch = cost_loss(e, 47, 100, 0.5, 0.05)
    assert branch == "in band" and float(loss) == 0


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 10_000))
def test_export_equals_the_supernet_at_the_genotype(seed):
    sn = supernet_for(_dense(seed % 7)).eval()
    g = _random_genotype(sn, torch.Generator().manual_seed(seed))
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        a = sn.forward_genotype(x, g)
        b = sn.export(g)(x).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_full_genotype_of_the_supernet_is_the_dense_network():
    dense = _dense()
    sn = supernet_for(dense).eval()
    full = {**{w.name: w.full for w in sn.width_dims}, **{d.name: max(d.candidates) for d in sn.depth_dims}}
    x = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(sn.forward_genotype(x, full), dense(x).logits, atol=1e-6)


def test_search_forward_runs_and_reaches_the_architecture():
    sn = supernet_for(_dense()).train()
    logits, expected = sn.forward_search(torch.randn(8, 1, 12, 12), 1.0, torch.Generator().manual_seed(0))
    (logits.pow(2).mean() + torch.log(expected)).backward()
    assert all(p.grad is not None for p in sn.betas)
    assert sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in sn.alphas) == len(sn.alphas)


def _small_data(n=384):
    from layerwise.data.images import digit_canvases

    d = digit_canvases("train")
    return type(d)(d.pixels[:n], d.labels[:n], "small")


def test_tas_result_is_in_the_flops_band_even_when_a_short_search_ends_outside():
    sn = supernet_for(_dense())
    g = SEARCHERS.create("tas", flops=0.5, epochs=6, arch_lr=0.05, batch_size=64).search(sn, _small_data())
    assert 0.45 <= g.ratio <= 0.5, g.history
    assert g.notes["selected"] in ("final argmax", "last in band", "repaired")
    assert g.flops == resnet_flops(sn.genotype_config(g.choices))


def test_repair_reaches_the_band_from_either_side():
    from layerwise.search.tas import repair

    sn = supernet_for(_dense())
    full = sn.full_flops()
    big = {**{w.name: w.full for w in sn.width_dims}, **{d.name: max(d.candidates) for d in sn.depth_dims}}
    small = {**{w.name: w.candidates[0] for w in sn.width_dims}, **{d.name: max(d.candidates) for d in sn.depth_dims}}
    for g in (big, small):
        assert 0.45 <= sn.genotype_flops(repair(sn, g, 0.5, 0.05)) / full <= 0.5


@pytest.mark.slow
def test_tas_drives_the_final_argmax_into_the_band():
    """Spec claim 1 with the command's defaults (30 epochs on the zoo CNN's training split)."""
    from layerwise import zoo
    from layerwise.data.images import digit_canvases

    sn = supernet_for(zoo.load("resnet-digits").model)
    g = SEARCHERS.create("tas", flops=0.5).search(sn, digit_canvases("train"))
    assert g.notes["selected"] == "final argmax", g.history


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_uniform_and_random_shapes_meet_the_target(target):
    sn = supernet_for(_dense())
    u = SEARCHERS.create("uniform", flops=target).search(sn)
    assert target - 0.05 <= u.ratio <= target
    r = SEARCHERS.create("random", flops=target, seed=3).search(sn)
    assert target - 0.05 <= r.ratio <= target


def test_width_only_and_depth_only_spaces():
    sn = supernet_for(_dense(), ("width",))
    assert all(len(d.candidates) == 1 for d in sn.depth_dims)
    sn = supernet_for(_dense(), ("depth",))
    assert all(len(w.candidates) == 1 for w in sn.width_dims)
    with pytest.raises(ConfigError, match="unknown search space"):
        supernet_for(_dense(), ("heads",))


def _run(capsys, *args):
    from layerwise.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_command_writes_a_reloadable_network_and_its_plan(tmp_path, capsys):
    out = tmp_path / "tas"
    code, stdout, err = _run(capsys, "search", "zoo:resnet-digits", "--flops", "0.5", "--epochs", "1",
                             "--kd-epochs", "1", "--out", str(out))
    assert code == 0, err
    assert "searched shape (tas)" in stdout
    plan = json.loads((out / "plan.json").read_text())
    assert plan["meta"]["kind"] == "search" and len(plan["blocks"]) == 9 and len(plan["units"]) == 18
    assert {u["where"] for u in plan["units"]} == {"conv1", "conv2"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert "identical" in manifest["checks"]["reload"]
    from layerwise.io.load import load_model

    back = load_model(str(out)).model
    assert resnet_flops(back.config) == plan["meta"]["flops"]
    assert (out / "search.png").exists() and (out / "report.md").exists()


@pytest.mark.parametrize("args,needle", [
    (["--flops", "0"], "--flops must be in (0, 1]"),
    (["--flops", "1.5"], "--flops must be in (0, 1]"),
    (["--space", "heads"], "unknown search space"),
    (["--method", "nope"], "unknown shape search method"),
    (["--align", "pad"], "--align must be cwi or zero"),
    (["--kd-epochs", "0"], "--kd-epochs must be >= 1"),
    (["--epochs", "0"], "option 'epochs'"),
    (["--option", "cost_weight=-1"], "option 'cost_weight'"),
])
def test_bad_search_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code, _, err = _run(capsys, "search", "zoo:resnet-digits", *args, "--out", str(tmp_path / "o"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert needle in lines[0]
    assert not (tmp_path / "o").exists()


def test_a_model_without_a_search_space_is_refused(tmp_path, tiny_dirs, capsys):
    code, _, err = _run(capsys, "search", str(tiny_dirs["bert"]), "--out", str(tmp_path / "o"))
    assert code == 2 and "exposes no search space" in err, err


# --- decoders ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm():
    from layerwise import zoo

    return zoo.load("llama-tiny")


def _decoder_genotype(sn, seed):
    g = _random_genotype(sn, torch.Generator().manual_seed(seed))
    return g


def test_decoder_supernet_at_full_width_is_the_dense_model(tiny_lm):
    sn = supernet_for(tiny_lm.model).eval()
    full = {**{w.name: w.full for w in sn.width_dims}, **{d.name: max(d.candidates) for d in sn.depth_dims}}
    ids = torch.randint(0, 4096, (2, 32))
    with torch.no_grad():
        assert torch.equal(sn.forward_genotype(ids, full), tiny_lm.model(input_ids=ids).logits)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_decoder_export_equals_the_supernet_at_the_genotype(tiny_lm, seed):
    sn = supernet_for(tiny_lm.model).eval()
    g = _decoder_genotype(sn, seed)
    ids = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a = sn.forward_genotype(ids, g)
        model = sn.export(g)
        b = model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert model.config.num_hidden_layers == g["layers"]


def test_decoder_flops_match_the_flop_counter(tiny_lm):
    """The counter sees the projections (dense SDPA on CPU is not counted): ours minus the attention
    products equals it exactly."""
    sn = supernet_for(tiny_lm.model, seqlen=64)
    g = _decoder_genotype(sn, 5)
    model = sn.export(g)
    c = model.config
    with FlopCounterMode(display=False) as fc:
        model(input_ids=torch.randint(0, 4096, (1, 64)))
    head = 2 * c.hidden_size * c.vocab_size * 64
    hd = c.hidden_size // c.num_attention_heads
    rep = c.num_attention_heads // c.num_key_value_heads
    attn = sum(2 * 2 * 64 * hd * g[f"layers.{i}.attn"] * rep * 64 for i in range(g["layers"]))
    assert fc.get_total_flops() - head == sn.genotype_flops(g) * 64 - attn


def test_decoder_expected_flops_at_one_hot(tiny_lm):
    sn = supernet_for(tiny_lm.model)
    g = _decoder_genotype(sn, 11)
    with torch.no_grad():
        for dims, logits in ((sn.width_dims, sn.alphas), (sn.depth_dims, sn.betas)):
            for d, a in zip(dims, logits):
                a.fill_(-1e4)
                a[d.candidates.index(g[d.name])] = 0
    assert float(sn.expected_flops().detach()) == pytest.approx(sn.genotype_flops(g), rel=1e-5)


def test_decoder_search_api_writes_a_reloadable_per_layer_width_model(tmp_path):
    from layerwise.pipeline.search import search

    res = search("zoo:llama-tiny", flops=0.6, space="width,depth", epochs=1, options={"batch_size": 4},
                 search_windows=8, search_seqlen=32, tokens=2 * 8 * 256, global_batch=8, criterion="magnitude",
                 eval_windows_n=4, out=tmp_path / "o")
    assert 0.55 <= res.genotype.ratio <= 0.6
    plan = json.loads((tmp_path / "o" / "plan.json").read_text())
    assert {u["unit"] for u in plan["units"]} == {"kv_group", "mlp_channel"}
    assert "perplexity" in res.metrics and res.plan.meta["tokens"] == 4096
    from layerwise.io.load import load_model

    back = load_model(str(tmp_path / "o")).model
    ids = torch.randint(0, 4096, (1, 16))
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, res.model(input_ids=ids).logits)


def test_eval_of_an_image_classifier_reports_accuracy_and_speed(capsys):
    code, out, err = _run(capsys, "eval", "zoo:resnet-digits", "--split", "test", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["kind"] == "image-classifier" and rep["extra"]["images"] == 994
    assert rep["extra"]["accuracy"] > 0.9 and rep["extra"]["images_per_s"] > 0


def test_prune_on_a_cnn_points_to_search(tmp_path, capsys):
    code, _, err = _run(capsys, "prune", "zoo:resnet-digits", "--out", str(tmp_path / "o"))
    assert code == 2 and "layerwise search" in err, err
