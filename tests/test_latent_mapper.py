"""OptiPrune's LatentMapper on a tiny text-conditioned UNet: the recorded maps are attention
distributions, the scores follow their definitions, optimisation lowers them, SimPrune inside the
diagnostic passes keeps the maps full-size, and a prompt naming no subject is refused."""
from __future__ import annotations

import pytest
import torch

from layerwise.data.pairs import parse_pair_prompt, prompt_states
from layerwise.errors import ConfigError
from layerwise.tokens.latent_mapper import AttentionRecorder, MapperConfig, attention_scores, diagnose, optimize_noise


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=(8, 16), in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8).eval()


def test_recorded_maps_are_distributions_and_the_model_is_unchanged_afterwards():
    unet = tiny_unet()
    tokens = parse_pair_prompt("3 7, 1 2")
    states = prompt_states(tokens, 32)
    z = torch.randn(2, 1, 8, 16)
    ref = unet(z, torch.full((2,), 500.0), encoder_hidden_states=states).sample
    rec = AttentionRecorder(unet)
    rec.tokens = 128
    rec.install()
    rec.active = True
    out = unet(z, torch.full((2,), 500.0), encoder_hidden_states=states).sample
    rec.remove()
    cross, self_ = rec.maps()
    assert cross.shape == (2, 128, 4) and self_.shape == (2, 128, 128)
    assert torch.allclose(cross.sum(-1), torch.ones(2, 128), atol=1e-5)
    assert torch.allclose(self_.sum(-1), torch.ones(2, 128), atol=1e-5)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.equal(unet(z, torch.full((2,), 500.0), encoder_hidden_states=states).sample, ref)


def test_scores_follow_their_definitions():
    cross = torch.zeros(1, 4, 3)
    cross[0, 0, 0], cross[0, 3, 1] = 0.9, 0.4          # subject 0 peaks at 0 (0.9), subject 1 at 3 (0.4)
    self_ = torch.eye(4)[None].clone()
    s_c, s_s = attention_scores(cross, self_, [0, 1])
    assert float(s_c) == pytest.approx(0.6) and float(s_s) == 0.0   # disjoint self maps: no overlap
    self_[0, 3] = self_[0, 0]
    assert float(attention_scores(cross, self_, [0, 1])[1]) == pytest.approx(0.5)   # identical rows


def test_optimisation_lowers_the_scores_with_and_without_pruning_in_the_diagnostic_passes():
    unet = tiny_unet()
    tokens = parse_pair_prompt("3 7, 1 2, 5 5")
    eps = torch.randn(3, 1, 8, 16, generator=torch.Generator().manual_seed(0))
    for ratio in (0.0, 0.5):
        cfg = MapperConfig(steps=8, lr=0.2, tau_cross=0.0, tau_self=0.0, prune_ratio=ratio)
        res = optimize_noise(unet, tokens, [0, 1], eps, cfg)
        assert res.passes == 9 and res.z.shape == eps.shape and not res.valid.any()
        first, last = res.history[0], res.history[-1]
        assert last["s_cross"] + last["s_self"] < first["s_cross"] + first["s_self"]
    # thresholds every sample passes at once: the noise is returned untouched, one pass
    res = optimize_noise(unet, tokens, [0, 1], eps, MapperConfig(tau_cross=2.0, tau_self=2.0))
    assert res.valid.all() and res.passes == 1 and torch.equal(res.z, eps)


def test_pruned_diagnostic_pass_gives_full_size_maps():
    unet = tiny_unet()
    from layerwise.tokens import TOKEN_SELECTORS
    from layerwise.tokens.diffusion import SpatialTokenPruning

    tokens = parse_pair_prompt("3 7")
    p = SpatialTokenPruning(unet, TOKEN_SELECTORS.create("simprune"), 0.5)
    s_c, s_s = diagnose(unet, torch.randn(1, 1, 8, 16), prompt_states(tokens, 32), [0, 1], MapperConfig(), p)
    assert 0 <= float(s_c.detach()) <= 1 and 0 <= float(s_s.detach()) <= 0.5


@pytest.mark.parametrize("prompt", ["cat dog", "3", "", "12 4"])
def test_a_prompt_naming_no_known_subject_is_refused(prompt):
    with pytest.raises(ConfigError):
        parse_pair_prompt(prompt)
    with pytest.raises(ConfigError, match="no subject"):
        optimize_noise(tiny_unet(), parse_pair_prompt("3 7"), [], torch.randn(1, 1, 8, 16))
