"""RL alignment: sampler densities, tree accounting, fusion and advantages against brute force,
BranchGRPO with branch 1 = flat GRPO, resume, bad input, and a toy run that must learn."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from layerwise.errors import ConfigError
from layerwise.io.load import load_model
from layerwise.rl import REWARDS, RL_ALGORITHMS, RLConfig, Sampler, evaluate, train
from layerwise.rl.rewards import Reward
from layerwise.rl.sampler import gaussian_logp_reference
from layerwise.rl.tree import (depth_advantages, fuse_rewards, leaf_advantages, rollout, transitions, tree_counts,
                               width_prune)


def base():
    return load_model("zoo:flow-gmm").model


class Counting:
    """A velocity field that records every row it is asked about (a stand-in for a network)."""

    def __init__(self):
        self.rows = []

    def __call__(self, x, sigma, cond):
        self.rows.append(x.clone())
        return torch.sin(x * 3 + sigma[:, None] + cond[:, None].float())


def forest_of(steps=20, points=(0, 3, 6, 9), branch=2, roots=1, prompts=1, fn=None, scale=4.0, consistent=False,
              seed=0):
    fn = fn or Counting()
    gens = [torch.Generator().manual_seed(seed * 100 + p) for p in range(prompts)]
    f = rollout(fn, torch.arange(prompts), Sampler(steps), (2,), gens, roots=roots, split_points=points,
                branch=branch, split_noise_scale=scale, consistent_split_logprob=consistent)
    return f, fn


# --- the sampler -------------------------------------------------------------------------------------

def test_step_logprob_is_the_gaussian_density():
    s = Sampler(20, eta=0.3)
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(7, 3, 4, generator=g), torch.randn(7, 3, 4, generator=g)
    j = torch.randint(0, 20, (7,), generator=g)
    mean = s.mean(x, v, j)
    std = s.std(j)
    nxt = mean + std[:, None, None] * torch.randn(7, 3, 4, generator=g)
    for k in range(7):
        ref = gaussian_logp_reference(nxt[k:k + 1], mean[k:k + 1], float(std[k]))
        assert torch.allclose(s.logp(nxt[k:k + 1], mean[k:k + 1], std[k:k + 1]).double(), ref, atol=1e-5)


def test_sde_mean_is_euler_plus_score_drift():
    s = Sampler(10, shift=3.0, eta=0.5)
    x, v = torch.randn(4, 2), torch.randn(4, 2)
    j = torch.full((4,), 3)
    sig = s.sigma
    sj, dt = float(sig[3]), float(sig[4] - sig[3])
    x0 = x - sj * v
    score = -(x - (1 - sj) * x0) / sj ** 2
    assert torch.allclose(s.mean(x, v, j), x + dt * v - 0.5 * 0.25 * score * dt, atol=1e-6)
    assert torch.allclose(s.mean(x, v, j, sde=False), x + dt * v)
    assert float(sig[0]) == 1.0 and float(sig[-1]) == 0.0 and bool((sig[1:] < sig[:-1]).all())


def test_stored_logprobs_match_the_density_at_split_and_plain_steps():
    fn = Counting()
    for consistent in (False, True):
        f, _ = forest_of(steps=8, points=(0, 3), fn=fn, consistent=consistent)
        s = Sampler(8)
        e = f.edges()
        par, j = f.parent[e], f.depth[e] - 1
        mean = s.mean(f.x[par], fn(f.x[par], s.sigma[j], f.cond[f.prompt[e]]), j)
        split = torch.isin(j, torch.tensor([0, 3]))
        std = s.std(j) * torch.where(split & consistent, 4.0, 1.0)
        ref = torch.cat([gaussian_logp_reference(f.x[e][k:k + 1], mean[k:k + 1], float(std[k])) for k in range(len(e))])
        assert torch.allclose(f.logp[e].double(), ref, atol=1e-4)


# --- tree accounting ----------------------------------------------------------------------------------

def test_reference_tree_counts():
    c = tree_counts(20, [0, 3, 6, 9], 2)
    assert c == {"forward_calls": 203, "leaves": 16, "edges": 218}
    assert tree_counts(20, [], 1, roots=16)["forward_calls"] == 320
    f, fn = forest_of()
    assert f.forward_calls == 203 == sum(r.shape[0] for r in fn.rows)
    assert f.edges().numel() == 218 and f.leaves.numel() == 16
    adv = depth_advantages(f, fuse_rewards(f, torch.rand(16)))
    kept = width_prune(f, f.edges(), adv, last_split=9, ratio=0.5, mode=2)
    assert kept.numel() == 138
    assert math.isclose(138 / 16, 8.625)


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 10), branch=st.integers(1, 3), roots=st.integers(1, 2), prompts=st.integers(1, 2),
       mask=st.integers(0, 1023))
def test_forward_calls_equal_the_closed_form(steps, branch, roots, prompts, mask):
    points = [j for j in range(steps) if mask >> j & 1][:3]
    f, fn = forest_of(steps, points, branch, roots, prompts)
    c = tree_counts(steps, points, branch, roots)
    assert f.forward_calls == prompts * c["forward_calls"] == sum(r.shape[0] for r in fn.rows)
    assert f.edges().numel() == prompts * c["edges"]
    assert f.leaves.numel() == prompts * c["leaves"]
    # every internal node evaluated exactly once: rows evaluated = nodes that are not leaves
    assert sum(r.shape[0] for r in fn.rows) == int((f.depth < steps).sum())


def test_shared_prefixes_are_computed_once():
    f, fn = forest_of(steps=6, points=(2,), branch=2)
    # steps 0, 1, 2 see one node (the shared prefix), steps 3.. see the two branches
    assert [r.shape[0] for r in fn.rows] == [1, 1, 1, 2, 2, 2]
    kids = torch.nonzero(f.depth == 3).flatten()
    assert kids.numel() == 2 and f.parent[kids[0]] == f.parent[kids[1]]
    assert not torch.equal(f.x[kids[0]], f.x[kids[1]])       # the split drew two noises
    # the evaluated rows are exactly the stored node states (nothing recomputed along a path)
    for j, rows in enumerate(fn.rows):
        assert torch.equal(rows, f.x[f.depth == j])


# --- fusion and advantages vs brute force --------------------------------------------------------------

def _children(f):
    kids = {i: [] for i in range(f.x.shape[0])}
    for i, p in enumerate(f.parent.tolist()):
        if p >= 0:
            kids[p].append(i)
    return kids


def test_fusion_and_depth_advantages_match_brute_force():
    f, _ = forest_of(steps=5, points=(0, 2), branch=2, prompts=2, seed=3)
    g = torch.Generator().manual_seed(4)
    leaf_r = torch.rand(f.leaves.numel(), generator=g)
    r_of = dict(zip(f.leaves.tolist(), leaf_r.tolist()))
    kids = _children(f)

    def leaves_under(n):
        return [n] if not kids[n] else [x for c in kids[n] for x in leaves_under(c)]

    def prob(n):
        if not kids[n]:
            return r_of[n]
        w = [math.exp(float(f.logp[c])) for c in kids[n]]
        return sum(wi / sum(w) * prob(c) for wi, c in zip(w, kids[n]))

    fused = fuse_rewards(f, leaf_r, "mean")
    fused_p = fuse_rewards(f, leaf_r, "prob")
    for n in range(f.x.shape[0]):
        assert math.isclose(float(fused[n]), statistics.mean(r_of[x] for x in leaves_under(n)), rel_tol=1e-5)
        assert math.isclose(float(fused_p[n]), prob(n), rel_tol=1e-4, abs_tol=1e-6)
    adv = depth_advantages(f, fused)
    for p in range(2):
        for d in range(6):
            nodes = [n for n in range(f.x.shape[0]) if f.prompt[n] == p and f.depth[n] == d]
            vals = [float(fused[n]) for n in nodes]
            for n, v in zip(nodes, vals):
                want = 0.0 if len(vals) < 2 else (v - statistics.mean(vals)) / (statistics.stdev(vals) + 1e-8)
                assert math.isclose(float(adv[n]), want, rel_tol=1e-4, abs_tol=1e-5)
    roots = f.depth == 0
    assert bool((adv[roots] == 0).all())
    two = (f.depth >= 1) & (f.depth <= 2)          # depths holding two nodes per prompt
    assert torch.allclose(adv[two].abs(), torch.full_like(adv[two], 1 / math.sqrt(2)), atol=1e-5)
    leaf_adv = leaf_advantages(f, fused)
    for p in range(2):
        lv = [float(leaf_r[k]) for k, n in enumerate(f.leaves.tolist()) if f.prompt[n] == p]
        n0 = int(torch.nonzero(f.prompt == p)[0])
        assert math.isclose(float(leaf_adv[n0]), (float(fused[n0]) - statistics.mean(lv)) / (statistics.stdev(lv) + 1e-8),
                            rel_tol=1e-4, abs_tol=1e-5)


def test_width_pruning_keeps_best_and_worst_after_the_last_split():
    f, _ = forest_of()
    leaf_r = torch.arange(16, dtype=torch.float32)
    adv = depth_advantages(f, fuse_rewards(f, leaf_r))
    e = f.edges()
    kept = width_prune(f, e, adv, 9, 0.5, 2)
    post = kept[f.depth[kept] - 1 > 9]
    assert post.numel() == 80
    assert sorted(set(adv[post].tolist())) == sorted(set(adv[f.leaves].tolist()))[:4] + \
        sorted(set(adv[f.leaves].tolist()))[-4:]
    assert kept[f.depth[kept] - 1 <= 9].numel() == 58
    assert width_prune(f, e, adv, 9, 0.5, 1).numel() == 138


def test_depth_pruning_slides_and_stops():
    algo = RL_ALGORITHMS.create("branchgrpo", prune="depth", slide_interval=10, stop_depth=13)
    assert algo.pruned_depths(0) == [15, 16, 17, 18]
    assert algo.pruned_depths(10) == [14, 15, 16, 17]
    assert algo.pruned_depths(100) == [13, 14, 15, 16]
    f, _ = forest_of()
    g = torch.Generator()
    t = algo.select(f, torch.rand(16), 0, 100, g)
    assert len(t) == 218 - 4 * 16


def test_mix_trains_only_sde_steps():
    algo = RL_ALGORITHMS.create("branchgrpo", prune="mix", mix_window=4, slide_interval=5)
    fn = Counting()
    gens = [torch.Generator().manual_seed(0)]
    f = algo.rollout(fn, torch.tensor([1]), Sampler(20), (2,), gens, iteration=5, total=100)
    assert algo.sde_window(5, 20) == (4, 8)
    t = algo.select(f, torch.rand(16), 5, 100, torch.Generator())
    steps = sorted(set(t.step.tolist()))
    assert steps == [0, 3, 4, 5, 6, 7, 9]
    assert f.forward_calls == 203
    assert bool((f.logp[~f.sde] == 0).all())


# --- training -----------------------------------------------------------------------------------------

def small_cfg(**kw):
    return RLConfig(**{"iterations": 2, "prompts": 2, "steps": 8, "grad_accum": 12, "clip_range": 0.05, **kw})


def test_branch_factor_one_is_flat_grpo():
    a, b = base(), base()
    reward = REWARDS.create("gmm")
    cfg = small_cfg()
    la = train(a, RL_ALGORITHMS.create("grpo", generations=8), reward, cfg).log
    lb = train(b, RL_ALGORITHMS.create("branchgrpo", branch=1, roots=8, split_points=[0, 3]), reward, cfg).log
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert [r["transitions"] for r in la] == [r["transitions"] for r in lb] == [2 * 8 * 8] * 2
    assert la[0]["ratio_error_first_group"] == 0.0
    changed = any(not torch.equal(p, q) for p, q in zip(a.parameters(), base().parameters()))
    assert changed


def test_timestep_fraction_trains_that_share_of_every_trajectory():
    f, _ = forest_of(steps=20, points=(), branch=1, roots=16)
    t = RL_ALGORITHMS.create("grpo", generations=16, timestep_fraction=0.6).select(
        f, torch.rand(16), 0, 1, torch.Generator().manual_seed(0))
    assert len(t) == 16 * 12


def test_resume_is_bit_identical(tmp_path):
    reward = REWARDS.create("gmm")
    cfg = small_cfg(iterations=4, checkpoint_every=1)
    algo = RL_ALGORITHMS.create("branchgrpo", split_points=[0, 2], prune="width")
    ref = base()
    train(ref, algo, reward, cfg)

    class Stop(Reward):
        name = "stop-after-two"
        calls = 0

        def __call__(self, x, cond):
            Stop.calls += 1
            if Stop.calls == 3:
                raise KeyboardInterrupt
            return reward(x, cond)

    stopping = Stop()
    stopping.config = reward.config
    stopping.config_dict = reward.config_dict
    m = base()
    with pytest.raises(KeyboardInterrupt):
        train(m, algo, stopping, cfg, work_dir=tmp_path / "w")
    m2 = base()
    log = train(m2, algo, reward, cfg, work_dir=tmp_path / "w").log
    assert len(log) == 4
    for p, q in zip(ref.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_nan_reward_is_skipped_and_logged(capsys):
    class Half(Reward):
        name = "nan-half"

        def __call__(self, x, cond):
            r = torch.ones(x.shape[0])
            r[cond == cond[0]] = float("nan")
            return r

    m = base()
    log = train(m, RL_ALGORITHMS.create("branchgrpo", split_points=[0, 2]), Half(), small_cfg(iterations=1)).log
    assert log[0]["skipped_prompts"] >= 1
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert math.isfinite(log[0]["loss"])
    assert "non-finite" in capsys.readouterr().err


@pytest.mark.parametrize("algo, opts, match", [
    ("branchgrpo", {"split_points": [0, 25]}, "beyond the 20 sampling steps"),
    ("branchgrpo", {"branch": 0}, "branch"),
    ("branchgrpo", {"prune": "sideways"}, "prune"),
    ("grpo", {"timestep_fraction": 0}, "timestep_fraction"),
])
def test_bad_settings_are_one_line_errors(algo, opts, match):
    with pytest.raises(ConfigError, match=match):
        a = RL_ALGORITHMS.create(algo, opts)
        a.check(Sampler(20))


def test_cli_bad_split_point_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "layerwise", "rl", "zoo:flow-gmm", "--option", "split_points=[0,30]",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "split points [30]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cli_writes_a_reloadable_aligned_model(tmp_path):
    from layerwise.cli import main

    out = tmp_path / "aligned"
    assert main(["rl", "zoo:flow-gmm", "--algo", "branchgrpo", "--prune", "width", "--iterations", "2",
                 "--prompts", "2", "--steps", "8", "--option", "split_points=[0,2]", "--eval-samples", "8",
                 "--out", str(out)]) in (0, None)
    for f in ("config.json", "model.safetensors", "rl.json", "manifest.json", "report.md", "rl_curves.png",
              "rl_samples.png"):
        assert (out / f).exists(), f
    assert not (tmp_path / "aligned.work").exists()
    m = load_model(str(out)).model
    x, s, c = torch.randn(5, 2), torch.rand(5), torch.randint(0, 8, (5,))
    assert not torch.equal(m(x, s, c), base()(x, s, c))


def test_toy_run_learns():
    """B-2D in CI: both trainers raise the prompt reward by a clear margin in a few seconds."""
    reward = REWARDS.create("gmm")
    cfg = RLConfig(iterations=12, prompts=8, clip_range=0.05, seed=1)
    for algo in (RL_ALGORITHMS.create("grpo"), RL_ALGORITHMS.create("branchgrpo", prune="width")):
        m = base()
        before = evaluate(m, reward, cfg.sampler, 32)["reward"]
        train(m, algo, reward, cfg)
        after = evaluate(m, reward, cfg.sampler, 32)["reward"]
        assert after > before + 0.1, (algo.name, before, after)


def test_diffusers_transformer_is_a_policy():
    """Any diffusers-style flow model trains through the same code (random weights; no quality claim)."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=1,
                                num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=4)
    log = train(dit, RL_ALGORITHMS.create("branchgrpo", split_points=[0]),
                _MeanPixel(), RLConfig(iterations=1, prompts=2, steps=3, grad_accum=4)).log
    assert log[0]["forward_calls"] == 2 * tree_counts(3, [0], 2)["forward_calls"]
    assert log[0]["ratio_error_first_group"] < 1e-5


class _MeanPixel(Reward):
    name = "mean-pixel"

    def __call__(self, x, cond):
        return x.reshape(x.shape[0], -1).mean(1)


def test_transitions_carry_the_child_state_and_step():
    f, _ = forest_of(steps=4, points=(1,))
    e = f.edges()
    t = transitions(f, e, torch.zeros(f.x.shape[0]))
    assert torch.equal(t.x_next, f.x[e]) and torch.equal(t.x, f.x[f.parent[e]])
    assert t.step.tolist() == (f.depth[e] - 1).tolist()


def test_rl_on_the_zoo_dit_with_the_judge_reward(tmp_path):
    """The image setting end to end: a diffusers DiT, the judge's log-probability, saved and reloaded."""
    from layerwise.pipeline.rl import rl

    r = rl("zoo:dit-digits-misaligned", algo="branchgrpo", reward="judge", options={"split_points": [0]},
           settings={"iterations": 1, "prompts": 2, "steps": 4, "grad_accum": 8}, eval_per_class=2,
           out=tmp_path / "aligned")
    assert r.log[0]["forward_calls"] == 2 * tree_counts(4, [0], 2)["forward_calls"]
    assert "accuracy" in r.before and (tmp_path / "aligned" / "rl_samples.png").exists()
    back = load_model(str(tmp_path / "aligned")).model
    assert type(back).__name__ == "DiTTransformer2DModel"
    assert "identical" in (tmp_path / "aligned" / "report.md").read_text()


def test_two_accelerate_processes_train_and_hand_over(tmp_path):
    """`--processes 2`: two launched CPU processes split the prompts; the counts are summed over both."""
    r = subprocess.run([sys.executable, "-m", "layerwise", "rl", "zoo:flow-gmm", "--algo", "grpo", "--iterations", "2",
                        "--prompts", "2", "--steps", "6", "--eval-samples", "4", "--processes", "2",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    log = json.loads((tmp_path / "o" / "rl.json").read_text())["log"]
    assert [row["forward_calls"] for row in log] == [2 * 16 * 6] * 2
    assert not (tmp_path / "o.work").exists()
