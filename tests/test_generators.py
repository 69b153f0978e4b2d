"""Image generators: diffusers directories through layerwise's loader, the generator metrics, the judge
reward and `layerwise sample`."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from layerwise.errors import ModelLoadError
from layerwise.eval.generators import frechet_distance, generator_metrics, judge_features, prompt_accuracy
from layerwise.io.load import load_model
from layerwise.rl import REWARDS
from layerwise.rl.sampler import Sampler
from layerwise.rl.trainer import samples


def tiny_dit():
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                 num_layers=3, sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()


def test_frechet_distance_matches_the_scipy_formula():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(300, 6, generator=g) * 1.5 + 0.3
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    ref = (np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2)
           + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real))
    assert abs(frechet_distance(a, b) - ref) < 1e-6 * max(1.0, abs(ref))
    assert abs(frechet_distance(a, a)) < 1e-8
    assert abs(frechet_distance(a, b) - frechet_distance(b, a)) < 1e-8


def test_diffusers_directory_loads_and_samples_identically(tmp_path):
    dit = tiny_dit()
    dit.save_pretrained(tmp_path / "dit")
    back = load_model(str(tmp_path / "dit"))
    assert type(back.model).__name__ == "DiTTransformer2DModel" and back.tokenizer is None
    s = Sampler(6)
    a = samples(dit, s, torch.tensor([1, 7]), 3, seed=5)
    b = samples(back.model, s, torch.tensor([1, 7]), 3, seed=5)
    assert torch.equal(a, b)


def test_dit_checkpoint_with_a_missing_block_is_one_line(tmp_path):
    tiny_dit().save_pretrained(tmp_path / "dit")
    f = tmp_path / "dit" / "diffusion_pytorch_model.safetensors"
    t = {k: v for k, v in load_file(f).items() if not k.startswith("transformer_blocks.1.")}
    save_file(t, f)
    with pytest.raises(ModelLoadError, match="transformer_blocks.1"):
        load_model(str(tmp_path / "dit"))
    r = subprocess.run([sys.executable, "-m", "layerwise", "sample", str(tmp_path / "dit"), "--prompt", "1",
                        "--out", str(tmp_path / "g.png")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "g.png").exists()


def test_judge_and_metrics_on_real_digits():
    from layerwise.data.images import digit_images

    judge = load_model("zoo:judge-digits").model.eval()
    test = digit_images("test")
    assert prompt_accuracy(judge, test.pixels, test.labels) > 0.95
    m = generator_metrics(judge, test.pixels[:200], test.labels[:200], test.pixels[200:])
    assert m["prompt_accuracy"] > 0.95 and m["frechet_distance"] < 5.0
    assert judge_features(judge, test.pixels[:3]).shape[0] == 3
    reward = REWARDS.create("judge")
    r = reward(test.pixels[:50], test.labels[:50])
    assert r.shape == (50,) and float(r.mean()) > -0.3
    wrong = reward(test.pixels[:50], (test.labels[:50] + 1) % 10)
    assert float(wrong.mean()) < float(r.mean()) - 2


def test_sample_command_writes_a_grid(tmp_path):
    from layerwise.cli import main

    out = tmp_path / "grid.png"
    assert main(["sample", "zoo:dit-digits", "--prompt", "0,3", "--n", "4", "--steps", "8", "--out", str(out),
                 "--judge", "zoo:judge-digits"]) in (0, None)
    assert out.exists() and out.with_suffix(".pt").exists()
    saved = torch.load(out.with_suffix(".pt"))
    assert saved["samples"].shape == (8, 1, 8, 8) and saved["classes"].tolist() == [0] * 4 + [3] * 4


@pytest.mark.parametrize("prompt, match", [("12", "names no known class"), ("three", "class numbers")])
def test_sample_bad_prompt_exits_2(tmp_path, prompt, match):
    r = subprocess.run([sys.executable, "-m", "layerwise", "sample", "zoo:dit-digits", "--prompt", prompt,
                        "--out", str(tmp_path / "g.png")], capture_output=True, text=True)
    assert r.returncode == 2 and match in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_denoising_loss_increase_is_zero_for_the_reference_and_positive_when_damaged():
    import copy

    from layerwise.data.images import digit_images
    from layerwise.eval.generators import denoising_loss_per_timestep

    dit = load_model("zoo:dit-digits-misaligned").model.eval()
    data = digit_images("test")
    rows = denoising_loss_per_timestep(dit, dit, data.pixels[:64], data.labels[:64])
    assert all(r["increase"] == 0.0 for r in rows) and len(rows) == 5
    damaged = copy.deepcopy(dit)
    with torch.no_grad():
        damaged.transformer_blocks[1].ff.net[2].weight.mul_(0.0)
    rows = denoising_loss_per_timestep(damaged, dit, data.pixels[:64], data.labels[:64])
    assert sum(r["increase"] for r in rows) > 0


def test_dit_goes_through_analyze_and_prune(tmp_path):
    """The DiT adapter: block scores (zeroth-order with the flow-matching loss) and Wanda in memory,
    saved as a diffusers checkpoint that layerwise.load reads back bit for bit."""
    from layerwise.pipeline.analyze import analyze
    from layerwise.pipeline.prune import prune

    an = analyze("zoo:dit-digits-misaligned", scores="bi,zd,zeroth_order", calib="digits", nsamples=8)
    for name in ("bi", "zd", "zeroth_order"):
        vals = an.block_scores[name]
        assert len(vals) == 4 and all(math.isfinite(v) for v in vals)
    r = prune("zoo:dit-digits-misaligned", method="wanda", sparsity=0.5, calib="digits", nsamples=8,
              out=tmp_path / "w50")
    assert abs(r.plan.measured_sparsity() - 0.5) < 1e-6
    back = load_model(str(tmp_path / "w50")).model
    assert type(back).__name__ == "DiTTransformer2DModel"
    s = Sampler(6)
    assert torch.equal(samples(back, s, torch.tensor([2]), 3, seed=1), samples(r.model, s, torch.tensor([2]), 3, seed=1))
    assert not torch.equal(samples(back, s, torch.tensor([2]), 3, seed=1),
                           samples(load_model("zoo:dit-digits-misaligned").model, s, torch.tensor([2]), 3, seed=1))


def test_dit_depth_removal_saves_a_smaller_diffusers_model(tmp_path):
    from layerwise.pipeline.depth import depth

    r = depth("zoo:dit-digits-misaligned", remove=1, select="bi", calib="digits", nsamples=8, out=tmp_path / "d")
    back = load_model(str(tmp_path / "d")).model
    assert len(back.transformer_blocks) == 3 and back.config.num_layers == 3
    s = Sampler(5)
    assert torch.equal(samples(back, s, torch.tensor([4]), 2, seed=3), samples(r.model, s, torch.tensor([4]), 2, seed=3))


def test_quantize_refuses_to_write_a_diffusers_checkpoint(tmp_path):
    r = subprocess.run([sys.executable, "-m", "layerwise", "quantize", "zoo:dit-digits-misaligned", "--bits", "4",
                        "--calib", "digits", "--out", str(tmp_path / "q")], capture_output=True, text=True)
    assert r.returncode == 2 and "diffusers" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()


def test_ode_samples_from_given_noise_equal_the_eta_zero_sampler():
    from layerwise.rl.trainer import _prompt_key, generator, ode_samples

    dit = tiny_dit()
    cond = torch.tensor([1, 4])
    s = Sampler(5, eta=0.0)
    ref = samples(dit, s, cond, 3, seed=9)
    noise = torch.cat([torch.randn((3, 1, 8, 8), generator=generator(9, _prompt_key(c), 5)) for c in cond])
    out = ode_samples(dit, s, cond.repeat_interleave(3), noise)
    assert torch.allclose(out, ref, atol=1e-5)
