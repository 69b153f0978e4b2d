"""BranchGRPO vs flat GRPO on the 2-D mixture setting (spec B-2D, experiments B1–B6), several seeds.

Every run starts from zoo:flow-gmm (the deliberately misaligned base model) and trains for the same
number of iterations (8 prompts each). Every `--eval-every` iterations the model is evaluated on fixed
noises (64 SDE samples per class, 20 steps): the curves and the thresholds below use that evaluation,
not the noisy per-iteration training reward. Counted exactly: rollout forward calls and trained
transitions; wall time is the rollouts + updates of each run (one process, nothing else running).

    python benchmarks/rl_branchgrpo.py --seeds 0,1,2 --iterations 100
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, md_table, update_section  # noqa: E402

from layerwise.data import gmm  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.rl_report import plot_curves  # noqa: E402
from layerwise.rl import REWARDS, RL_ALGORITHMS, RLConfig, train  # noqa: E402
from layerwise.rl.trainer import samples  # noqa: E402

VARIANTS = {
    # name: (algo, options, clip_range or None for the default)
    "GRPO tf=1.0": ("grpo", {}),
    "GRPO tf=0.6": ("grpo", {"timestep_fraction": 0.6}),
    "BranchGRPO": ("branchgrpo", {}),
    "BranchGRPO WidPru": ("branchgrpo", {"prune": "width"}),
    "BranchGRPO DepPru": ("branchgrpo", {"prune": "depth"}),
    "BranchGRPO Mix": ("branchgrpo", {"prune": "mix"}),
    "BranchGRPO leaf-only adv.": ("branchgrpo", {"advantage": "leaf"}),
    "BranchGRPO split scale 1": ("branchgrpo", {"split_noise_scale": 1.0}),
    "BranchGRPO consistent split logp": ("branchgrpo", {"consistent_split_logprob": True}),
}


def evaluate_fixed(model, sampler, per_class: int = 64) -> dict:
    classes = torch.arange(8)
    x = samples(model, sampler, classes, per_class, seed=4242)
    c = classes.repeat_interleave(per_class)
    r = REWARDS.create("gmm")(x, c)
    hit = gmm.nearest_mode(x) == c
    per = [float(hit[c == k].float().mean()) for k in range(8)]
    spread = [float(torch.cdist(x[c == k], x[c == k]).mean()) for k in range(8)]
    return {"eval_reward": float(r.mean()), "eval_accuracy": float(hit.float().mean()), "eval_min_class_acc": min(per),
            "eval_diversity": statistics.mean(spread)}


def run(name, algo, options, seed, iterations, clip, eval_every):
    model = load_model("zoo:flow-gmm").model
    cfg = RLConfig(iterations=iterations, prompts=8, seed=seed, clip_range=clip)
    a = RL_ALGORITHMS.create(algo, options)
    row0 = {"iteration": 0, "forward_calls_total": 0, "transitions_total": 0, "wall_s_total": 0.0,
            **evaluate_fixed(model, cfg.sampler)}

    def cb(row, m):
        if row["iteration"] % eval_every == 0 or row["iteration"] == iterations:
            row.update(evaluate_fixed(m, cfg.sampler))

    log = train(model, a, REWARDS.create("gmm"), cfg, callback=cb, description=f"{name} seed {seed}").log
    return [row0] + log


def summarise(name, logs, threshold):
    ev = [[r for r in log if "eval_reward" in r] for log in logs]
    final = [e[-1] for e in ev]
    last20 = [statistics.mean(r["reward_mean"] for r in log[-20:]) for log in logs]
    sd20 = [statistics.pstdev(r["reward_mean"] for r in log[-20:]) for log in logs]
    reach = []
    for e in ev:
        hit = next((r for r in e if r["eval_reward"] >= threshold), None)
        reach.append(hit["forward_calls_total"] if hit else None)
    done = [x for x in reach if x is not None]
    it = [r for r in logs[0] if r["iteration"] > 0]
    return {
        "name": name, "seeds": len(logs),
        "final_reward": statistics.mean(f["eval_reward"] for f in final),
        "final_reward_sd": statistics.pstdev(f["eval_reward"] for f in final),
        "final_accuracy": statistics.mean(f["eval_accuracy"] for f in final),
        "min_class_acc": statistics.mean(f["eval_min_class_acc"] for f in final),
        "eval_diversity": statistics.mean(f["eval_diversity"] for f in final),
        "train_leaf_diversity": statistics.mean(statistics.mean(r["diversity"] for r in log[1:]) for log in logs),
        "last20_reward": statistics.mean(last20), "last20_sd": statistics.mean(sd20),
        "calls_per_iter": it[0]["forward_calls"], "transitions_per_iter": statistics.mean(r["transitions"] for r in it),
        "calls_total": logs[0][-1]["forward_calls_total"],
        "wall_s": statistics.median(log[-1]["wall_s_total"] for log in logs),
        "calls_to_threshold": (statistics.median(done) if len(done) == len(reach) else None),
        "reached": f"{len(done)}/{len(reach)}",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--clip", type=float, default=1e-3, help="PPO clip epsilon of the main runs (faithful 1e-3)")
    ap.add_argument("--eps-check", default="GRPO tf=1.0,BranchGRPO",
                    help="variants also run at clip 0.05 (the toy-friendly epsilon)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}
    t0 = time.perf_counter()
    jobs = [(n, args.clip) for n in args.variants.split(",")]
    jobs += [(n, 0.05) for n in args.eps_check.split(",") if n]
    for name, clip in jobs:
        algo, opts = VARIANTS[name]
        label = name if clip == args.clip else f"{name} (clip {clip:g})"
        runs[label] = [run(label, algo, opts, s, args.iterations, clip, args.eval_every) for s in seeds]
        print(f"{label}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    base_eval = runs[next(iter(runs))][0][0]
    flat = runs.get("GRPO tf=1.0")
    threshold = (statistics.mean([[r for r in log if "eval_reward" in r][-1]["eval_reward"] for log in flat])
                 if flat else 0.9)
    summary = [summarise(k, v, threshold) for k, v in runs.items()]
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    keep = ("iteration", "reward_mean", "forward_calls_total", "transitions_total", "wall_s_total", "eval_reward",
            "eval_accuracy", "eval_min_class_acc", "eval_diversity")
    compact = {k: [{"eval": [{f: r[f] for f in keep if f in r} for r in log if "eval_reward" in r],
                    "train_reward": [round(r["reward_mean"], 5) for r in log if r["iteration"] > 0]} for log in v]
               for k, v in runs.items()}
    (out / "rl_branchgrpo.json").write_text(json.dumps({"runs": compact, "summary": summary, "threshold": threshold,
                                                        "base": base_eval}))
    headers = ["run", "final eval reward (± sd over seeds)", "prompt accuracy", "worst-class acc.",
               "rollout calls / iter", "trained transitions / iter", "calls to reach flat's final reward",
               "reward last 20 it. (sd within run)", "leaf diversity (train)", "sample spread (eval)", "wall s"]
    rows = [[s["name"], f"{s['final_reward']:.3f} ± {s['final_reward_sd']:.3f}", f"{s['final_accuracy']:.3f}",
             f"{s['min_class_acc']:.3f}", s["calls_per_iter"], f"{s['transitions_per_iter']:.0f}",
             (f"{s['calls_to_threshold']:,.0f}" if s["calls_to_threshold"] is not None else f"not all ({s['reached']})"),
             f"{s['last20_reward']:.3f} ({s['last20_sd']:.3f})", f"{s['train_leaf_diversity']:.3f}",
             f"{s['eval_diversity']:.3f}", f"{s['wall_s']:.1f}"] for s in summary]
    table = md_table(headers, rows)
    print(table)
    if args.no_write:
        return
    FIG.mkdir(parents=True, exist_ok=True)
    evals = {k: [[r for r in log if "eval_reward" in r] for log in v] for k, v in runs.items()}
    main_keys = [k for k in evals if "clip" not in k and ("adv" not in k and "split" not in k)]
    plot_curves({k: evals[k] for k in main_keys}, FIG / "rl_branchgrpo_curves.png",
                f"flow-gmm, {len(seeds)} seeds (band: min-max), evaluation reward on fixed noises", key="eval_reward")
    ablations = ["BranchGRPO"] + [k for k in evals if k not in main_keys]
    plot_curves({k: evals[k] for k in ablations}, FIG / "rl_branchgrpo_ablations.png",
                "BranchGRPO ablations: advantage, split noise, split log-prob, clip epsilon", key="eval_reward")
    body = (f"Base model zoo:flow-gmm before training: evaluation reward {base_eval['eval_reward']:.3f}, prompt "
            f"accuracy {base_eval['eval_accuracy']:.3f}. {args.iterations} iterations × 8 prompts, 20 SDE steps "
            f"(eta 0.3, shift 1), AdamW lr 1e-4, {len(seeds)} seeds; GRPO: 16 trajectories per prompt; BranchGRPO: "
            "split points 0,3,6,9 (16 leaves), split noise ×4, depth-wise advantages, mean reward fusion. "
            f"PPO clip {args.clip:g} unless stated. Evaluation: 64 SDE samples per class on fixed noises; "
            f"threshold = flat GRPO tf=1.0's final evaluation reward ({threshold:.3f}).\n\n" + table +
            "\n\n![reward curves](docs/figures/rl_branchgrpo_curves.png)\n\n"
            "![ablations](docs/figures/rl_branchgrpo_ablations.png)\n")
    update_section("rl_branchgrpo", body, "RL alignment: BranchGRPO vs flat GRPO (2-D mixture, B1–B6)")


if __name__ == "__main__":
    main()
