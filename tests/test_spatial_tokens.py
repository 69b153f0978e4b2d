"""Token pruning in diffusion models' self-attention (SimPrune, ToMe-SD, random drop): the fast
selections against slow loop references, exact bookkeeping (ratio 0 and nothing pruned give the
stock block), CFG halves pruned alike, ratio validation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from layerwise.errors import ConfigError
from layerwise.tokens import TOKEN_SELECTORS
from layerwise.tokens.diffusion import SpatialTokenPruning, attention_sites
from layerwise.tokens.spatial import Reduction, random_drop, simprune, tome_sd


def tiny_unet(size=(8, 16)):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8).eval()


def unet_inputs(B=4, size=(8, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"sample": torch.randn(B, 1, *size, generator=g), "timestep": torch.rand(B, generator=g) * 1000,
            "encoder_hidden_states": torch.randn(B, 4, 32, generator=g)}


def windows(h, w):
    return [[(r + a) * w + (c + b) for a in range(2) for b in range(2)] for r in range(0, h - 1, 2) for c in range(0, w - 1, 2)]


def simprune_reference(x, h, w, n, noise):
    """SiTo's procedure written out per sample with loops (alpha·noise given)."""
    kept_all, assign_all = [], []
    for b in range(x.shape[0]):
        xn = F.normalize(x[b].double(), dim=-1)
        G = xn @ xn.T
        score = G.sum(1) + noise[b].double()
        base = [max(win, key=lambda i: float(score[i])) for win in windows(h, w)]
        cand = [i for i in range(x.shape[1]) if i not in base]
        near = {i: max(float(G[i, j]) for j in base) for i in cand}
        pruned = sorted(cand, key=lambda i: -near[i])[:n]
        kept = sorted(i for i in range(x.shape[1]) if i not in pruned)
        assign = [kept.index(i) if i in kept else max(range(len(kept)), key=lambda k: float(G[i, kept[k]]))
                  for i in range(x.shape[1])]
        kept_all.append(kept)
        assign_all.append(assign)
    return torch.tensor(kept_all), torch.tensor(assign_all)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.sampled_from([0.1, 0.25, 0.5, 0.7]), hw=st.sampled_from([(4, 4), (4, 8), (6, 4)]))
def test_simprune_equals_the_loop_reference(seed, ratio, hw):
    h, w = hw
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, h * w, 6, generator=g)
    red = simprune(x, h, w, ratio, torch.Generator().manual_seed(seed + 1), alpha=0.1)
    noise = 0.1 * torch.randn(2, h * w, generator=torch.Generator().manual_seed(seed + 1))
    kept, assign = simprune_reference(x, h, w, int(h * w * ratio), noise)
    assert torch.equal(red.kept, kept) and torch.equal(red.assign, assign)


def tome_sd_reference(x, h, w, r, dst_cells):
    """ToMe-SD merge/unmerge per sample with loops: returns the merged inputs and each position's slot."""
    out_x, out_slot = [], []
    for b in range(x.shape[0]):
        xn = F.normalize(x[b].double(), dim=-1)
        dst = sorted(dst_cells[b])
        src = [i for i in range(x.shape[1]) if i not in dst]
        best = {i: max(dst, key=lambda j: float(xn[i] @ xn[j])) for i in src}
        sim = {i: float(xn[i] @ xn[best[i]]) for i in src}
        merged = sorted(src, key=lambda i: -sim[i])[:r]
        kept = sorted([i for i in src if i not in merged] + dst)
        groups = {k: [k] + [i for i in merged if best[i] == k] for k in kept}
        out_x.append(torch.stack([x[b, groups[k]].mean(0) for k in kept]))
        out_slot.append([kept.index(i) if i in kept else kept.index(best[i]) for i in range(x.shape[1])])
    return torch.stack(out_x), torch.tensor(out_slot)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), ratio=st.sampled_from([0.25, 0.5, 0.75]))
def test_tome_sd_equals_the_loop_reference(seed, ratio):
    h, w = 4, 8
    x = torch.randn(2, h * w, 5, generator=torch.Generator().manual_seed(seed))
    red = tome_sd(x, h, w, ratio, torch.Generator(), use_rand=False)
    top_left = [win[0] for win in windows(h, w)]
    ref_x, ref_slot = tome_sd_reference(x, h, w, int(h * w * ratio), [top_left, top_left])
    assert torch.equal(red.assign, ref_slot)
    assert torch.allclose(red.reduce(x), ref_x, atol=1e-6)


@pytest.mark.parametrize("fn", [simprune, random_drop, tome_sd])
def test_restore_gives_kept_positions_their_own_output_and_cfg_halves_share_random_draws(fn):
    x = torch.randn(4, 64, 8)
    red = fn(x, 8, 8, 0.5, torch.Generator().manual_seed(3), halves=True)
    assert red.kept.shape == (4, 32) and red.assign.shape == (4, 64)
    y = torch.randn(4, 32, 8)
    full = red.restore(y)
    assert torch.equal(full.gather(1, red.kept[..., None].expand(-1, -1, 8)), y)
    if fn is random_drop:
        assert torch.equal(red.kept[:2], red.kept[2:])
    same = torch.cat([x[:2], x[:2]])
    red2 = fn(same, 8, 8, 0.5, torch.Generator().manual_seed(3), halves=True)
    assert torch.equal(red2.kept[:2], red2.kept[2:]) and torch.equal(red2.assign[:2], red2.assign[2:])


@pytest.mark.parametrize("method", ["simprune", "tome-sd", "random"])
def test_ratio_zero_and_nothing_pruned_equal_the_stock_model(method):
    unet = tiny_unet()
    inp = unet_inputs()
    ref = unet(**inp).sample
    sel = TOKEN_SELECTORS.create(method)
    with SpatialTokenPruning(unet, sel, 0.0):
        assert torch.equal(unet(**inp).sample, ref)
    # a ratio that prunes no token of the 128-token grid still goes through reduce/restore
    with SpatialTokenPruning(unet, sel, 0.005) as p:
        out = unet(**inp).sample
        assert p.stats["pruned_calls"] > 0 and p.computed_share() == 1.0
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    with SpatialTokenPruning(unet, sel, 0.5) as p:
        pruned = unet(**inp).sample
        assert p.computed_share() == 0.5
    assert not torch.allclose(pruned, ref)
    assert torch.equal(unet(**inp).sample, ref)          # removed: the stock model again


def test_only_the_highest_resolution_is_pruned_by_default_and_the_same_seed_repeats():
    unet = tiny_unet()
    inp = unet_inputs()
    sel = TOKEN_SELECTORS.create("simprune")
    with SpatialTokenPruning(unet, sel, 0.5, seed=1) as p:
        a = unet(**inp).sample
        # the top level: one down and two up transformer blocks; the mid block (4×8 grid) stays dense
        assert p.stats["pruned_calls"] == 3 and p.stats["calls"] == 4
    with SpatialTokenPruning(unet, sel, 0.5, seed=1):
        b = unet(**inp).sample
    with SpatialTokenPruning(unet, sel, 0.5, seed=2):
        c = unet(**inp).sample
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(attention_sites(unet)) == 4


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, 0.8])
def test_bad_ratios_are_refused(ratio):
    with pytest.raises(ConfigError):
        SpatialTokenPruning(tiny_unet(), TOKEN_SELECTORS.create("simprune"), ratio)


def test_a_selector_without_a_dense_form_is_refused():
    with pytest.raises(ConfigError, match="cannot prune a diffusion"):
        SpatialTokenPruning(tiny_unet(), TOKEN_SELECTORS.create("fastv"), 0.5)


def test_reduction_average_is_the_mean_of_assigned_positions():
    x = torch.arange(12.).view(1, 4, 3)
    red = Reduction(torch.tensor([[0, 2]]), torch.tensor([[0, 0, 1, 1]]), average=True)
    assert torch.equal(red.reduce(x), torch.stack([x[0, :2].mean(0), x[0, 2:].mean(0)])[None])


def test_tokens_command_on_a_text_conditioned_unet_saves_and_reloads_with_pruning(tmp_path):
    import subprocess
    import sys

    import layerwise
    from layerwise.pipeline.tokens import tokens

    unet = tiny_unet((8, 16))
    unet.save_pretrained(tmp_path / "unet")
    res = tokens(str(tmp_path / "unet"), method="simprune", sparsity=0.5, out=tmp_path / "out", samples_per_prompt=1,
                 speed_repeats=1)
    m = res.metrics
    assert 0 < m["relative_error_mean"] and m["computed_share"] == 0.5 and m["speedup"] > 0
    back = layerwise.load(str(tmp_path / "out")).model
    assert back._layerwise_tokens.ratio == 0.5
    from layerwise.rl.sampler import Sampler
    from layerwise.rl.trainer import samples
    from layerwise.data.pairs import parse_pair_prompt

    p = parse_pair_prompt("3 7")
    a = samples(back, Sampler(3), p, 2, seed=1)
    b = samples(layerwise.load(str(tmp_path / "out")).model, Sampler(3), p, 2, seed=1)
    assert torch.equal(a, b)
    r = subprocess.run([sys.executable, "-m", "layerwise", "sample", str(tmp_path / "out"), "--prompt", "3 7, 1 _",
                        "--n", "2", "--steps", "3", "--out", str(tmp_path / "g.png"), "--judge", "zoo:judge-digits"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path / "g.pt")["samples"].shape == (4, 1, 8, 16)
    bad = subprocess.run([sys.executable, "-m", "layerwise", "sample", str(tmp_path / "out"), "--prompt", "cat dog",
                          "--out", str(tmp_path / "h.png")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no known subject" in bad.stderr
    for args in (["--sparsity", "1.0"], ["--sparsity", "0.9"], ["--sparsity", "-0.2"]):
        bad = subprocess.run([sys.executable, "-m", "layerwise", "tokens", str(tmp_path / "unet"), "--method", "simprune",
                              *args], capture_output=True, text=True)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
