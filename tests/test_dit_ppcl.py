"""PPCL on a diffusion transformer: interval students trained on the DiT's own noised digits, linear
stand-ins, sequential training, and the pluggable family (`layerwise.load(path, depth=N)`)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import layerwise
from layerwise.distill.modules import IntervalStudents
from layerwise.distill.standin import fit_standins
from layerwise.errors import ConfigError
from layerwise.models.adapters import get_adapter
from layerwise.models.standin import LinearStandIn
from layerwise.pipeline.depth import depth
from layerwise.rl.sampler import Sampler
from layerwise.rl.trainer import samples


def tiny_dit(layers: int = 6):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                 num_layers=layers, sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    d = tmp_path_factory.mktemp("fam")
    tiny_dit().save_pretrained(d / "dit")
    r = depth(str(d / "dit"), remove=2, select="ppcl", heal="distill", steps=2, global_batch=4, calib="digits",
              nsamples=8, max_len=2, protect=1, family=True, out=d / "out")
    return d, r


def test_family_members_load_equal_the_assembled_models_and_all_inactive_is_dense(family):
    d, r = family
    meta = json.loads((d / "out" / "plugins" / "plugins.json").read_text())
    assert meta["root_exact"] and len(meta["intervals"]) == len(r.intervals)
    inp = get_adapter(r.model).example_inputs(3, seed=11)
    dense = layerwise.load(str(d / "out"), depth=6).model
    assert torch.equal(dense(**inp).sample, r.teacher(**inp).sample)
    for removed, (m, active) in r.variants.items():
        member = layerwise.load(str(d / "out"), depth=6 - removed).model
        assert len(get_adapter(member).block_list()) == 6 - removed
        assert torch.equal(member(**inp).sample, m(**inp).sample)
    # the root is the full-ratio member, stock-loadable
    from diffusers import DiTTransformer2DModel

    stock = DiTTransformer2DModel.from_pretrained(d / "out")
    assert torch.equal(stock(**inp).sample, r.model(**inp).sample)


def test_any_subset_of_students_loads_and_samples_and_reloads_identically(family):
    d, r = family
    keys = [f"{iv['start']}-{iv['end']}" for iv in r.intervals]
    for subset in [keys[:1], keys[-1:], keys]:
        m = layerwise.load(str(d / "out"), depth=subset).model
        a = samples(m, Sampler(4), torch.tensor([2, 5]), 2, seed=3)
        b = samples(layerwise.load(str(d / "out"), depth=subset).model, Sampler(4), torch.tensor([2, 5]), 2, seed=3)
        assert a.shape == (4, 1, 8, 8) and torch.isfinite(a).all() and torch.equal(a, b)
    with pytest.raises(ConfigError, match="available depths"):
        layerwise.load(str(d / "out"), depth=1)
    with pytest.raises(ConfigError, match="unknown interval"):
        layerwise.load(str(d / "out"), depth=["0-5"])


def test_distillation_trains_only_the_students_on_the_dits_own_data():
    dit = tiny_dit()
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    mod = IntervalStudents(dit, [(1, 2), (3, 4)])
    batches = mod.training_batches(type("C", (), {"global_batch": 4, "seed": 0})())
    b = batches(7)
    assert torch.equal(b.as_dict()["hidden_states"], batches(7).as_dict()["hidden_states"])
    loss = mod(b)
    loss.backward()
    assert all(p.grad is None for p in dit.parameters())
    assert all(p.grad is not None for p in mod.students.parameters())
    assert all(torch.equal(v, before[k]) for k, v in dit.state_dict().items())


def test_sequential_training_equals_teacher_forcing_for_one_interval_and_differs_for_two():
    dit = tiny_dit()
    b = get_adapter(dit).training_batch(0, 4, 0)
    one_tf, one_seq = IntervalStudents(dit, [(1, 2)]), IntervalStudents(dit, [(1, 2)], teacher_forcing=False)
    assert torch.equal(one_tf(b), one_seq(b))
    two_tf, two_seq = IntervalStudents(dit, [(1, 2), (3, 4)]), IntervalStudents(dit, [(1, 2), (3, 4)], teacher_forcing=False)
    assert not torch.equal(two_tf(b), two_seq(b))


def test_linear_standins_fit_better_than_bypass_and_a_planted_linear_run_exactly():
    dit = tiny_dit()
    ad = get_adapter(dit)
    calib = ad.calibration_samples({}, 256, seed=0)
    st = fit_standins(dit, ad, [(2, 3)], calib)["2-3"]
    zero = LinearStandIn(st.proj.in_features)
    mod_fit, mod_zero = IntervalStudents(dit, [(2, 3)], students={"2-3": st}), IntervalStudents(dit, [(2, 3)], students={"2-3": zero})
    held = ad.calibration_samples({}, 16, seed=1)
    assert float(mod_fit(held).detach()) < float(mod_zero(held).detach())
    # a block that is exactly linear in its input is recovered (up to the small ridge)
    W = torch.randn(16, 16) * 0.1
    class Lin(torch.nn.Module):
        def forward(self, h, *a, **k):
            return h + h @ W.T
    ad.block_list()[2] = Lin()
    ad.block_list()[3] = torch.nn.Identity()
    ad.block_list()[3].forward = lambda h, *a, **k: h
    st = fit_standins(dit, ad, [(2, 3)], calib, eps=1e-9)["2-3"]
    assert torch.allclose(st.proj.weight, W, atol=1e-4)


def test_linear_standin_family_round_trips_through_the_loader(tmp_path):
    tiny_dit().save_pretrained(tmp_path / "dit")
    r = depth(str(tmp_path / "dit"), remove=2, select="ppcl", heal="distill", heal_options={"student": "linear"},
              steps=0, calib="digits", nsamples=8, max_len=2, protect=1, out=tmp_path / "out")
    assert isinstance(get_adapter(r.model).block_list()[r.intervals[0]["start"]], LinearStandIn)
    inp = get_adapter(r.model).example_inputs(2, seed=4)
    back = layerwise.load(str(tmp_path / "out")).model
    assert torch.equal(back(**inp).sample, r.model(**inp).sample)


def test_sample_command_takes_a_family_member_and_rejects_a_depth_not_in_it(family, tmp_path):
    d, r = family
    ok = subprocess.run([sys.executable, "-m", "layerwise", "sample", str(d / "out"), "--prompt", "1,2", "--n", "2",
                         "--steps", "3", "--depth", str(6 - max(r.variants)), "--out", str(tmp_path / "g.png")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "layerwise", "sample", str(d / "out"), "--prompt", "1", "--depth", "1",
                          "--out", str(tmp_path / "h.png")], capture_output=True, text=True)
    assert bad.returncode == 2 and "available depths" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_recipe_composes_depth_and_token_pruning_on_a_dit(tmp_path):
    tiny_dit().save_pretrained(tmp_path / "dit")
    recipe = {"calibration": {"corpus": "digits", "nsamples": 8},
              "stages": [{"depth": {"remove": 1, "select": "bi", "heal": "distill", "steps": 2, "global_batch": 4}},
                         {"tokens": {"method": "random", "sparsity": 0.5}}]}
    res = layerwise.compress(str(tmp_path / "dit"), recipe, out=tmp_path / "out")
    back = layerwise.load(str(tmp_path / "out")).model
    assert len(get_adapter(back).block_list()) == 5 and back._layerwise_tokens.ratio == 0.5
    assert [s["stages"] for s in res.steps] == [["depth"], ["tokens"]]
    with pytest.raises(ConfigError, match="stages\\[0\\].tokens.sparsity"):
        layerwise.compress(str(tmp_path / "dit"), {"stages": [{"tokens": {"method": "simprune", "sparsity": 1.2}}]})
