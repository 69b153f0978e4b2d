"""Image setting of the RL issue: flat GRPO vs BranchGRPO on zoo:dit-digits at equal rollout budgets.

Reward: log-probability of the prompt's class under zoo:judge-digits (frozen). Both algorithms get
the same number of rollout forward calls (GRPO: 320 per prompt and iteration; BranchGRPO with split
points 0,3,6,9: 203, so it runs proportionally more iterations). Before and after: prompt
consistency (the judge's accuracy) and the Fréchet distance on judge features against the held-out
test digits, on fixed noises; sample grids of every run.

    python benchmarks/rl_images.py --seeds 0,1,2 --grpo-iterations 20 --clip 0.05 --lr 3e-5
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

from layerwise.data.images import digit_images  # noqa: E402
from layerwise.eval.generators import generator_metrics, save_grid  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.rl import REWARDS, RL_ALGORITHMS, RLConfig, Sampler, train  # noqa: E402
from layerwise.rl.tree import tree_counts  # noqa: E402
from layerwise.rl.trainer import samples  # noqa: E402


SLUGS = {"GRPO tf=1.0": "grpo", "GRPO tf=0.6": "grpo_tf06", "BranchGRPO": "branchgrpo",
         "BranchGRPO WidPru": "branchgrpo_widpru"}


def measure(model, judge, sampler, per_class=20):
    classes = torch.arange(10)
    x = samples(model, sampler, classes, per_class, seed=4242)
    return x, generator_metrics(judge, x, classes.repeat_interleave(per_class), digit_images("test").pixels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:dit-digits-misaligned")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--grpo-iterations", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clip", type=float, default=1e-3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    judge = load_model("zoo:judge-digits").model.eval()
    reward = REWARDS.create("judge")
    flat = tree_counts(args.steps, [], 1, roots=16)["forward_calls"]
    tree = tree_counts(args.steps, [0, 3, 6, 9], 2)["forward_calls"]
    iters = {"GRPO tf=1.0": ("grpo", {}, args.grpo_iterations),
             "GRPO tf=0.6": ("grpo", {"timestep_fraction": 0.6}, args.grpo_iterations),
             "BranchGRPO": ("branchgrpo", {}, round(args.grpo_iterations * flat / tree)),
             "BranchGRPO WidPru": ("branchgrpo", {"prune": "width"}, round(args.grpo_iterations * flat / tree))}
    base = load_model(args.model).model.eval()
    sampler = Sampler(args.steps)
    x0, before = measure(base, judge, sampler)
    rows, results, t0 = [], {"before": before, "runs": {}}, time.perf_counter()
    FIG.mkdir(parents=True, exist_ok=True)
    if not args.no_write:
        save_grid(x0[::2], FIG / "rl_images_before.png", 10, "dit-digits before alignment (one row per class)")
    for name, (algo, opts, n_it) in iters.items():
        runs = []
        for seed in seeds:
            model = load_model(args.model).model.eval()
            cfg = RLConfig(iterations=n_it, prompts=args.prompts, steps=args.steps, seed=seed, clip_range=args.clip,
                           lr=args.lr)
            log = train(model, RL_ALGORITHMS.create(algo, opts), reward, cfg, description=f"{name} seed {seed}").log
            x, after = measure(model, judge, sampler)
            runs.append({"log": log, "after": after})   # the full log for the table; trimmed in the JSON
            if seed == seeds[0] and not args.no_write:
                save_grid(x[::2], FIG / f"rl_images_{SLUGS[name]}.png", 10, f"after {name} (seed {seed})")
            print(f"{name} seed {seed}: accuracy {before['prompt_accuracy']:.3f} -> {after['prompt_accuracy']:.3f}, "
                  f"FD {before['frechet_distance']:.2f} -> {after['frechet_distance']:.2f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        results["runs"][name] = runs
        acc = [r["after"]["prompt_accuracy"] for r in runs]
        fd = [r["after"]["frechet_distance"] for r in runs]
        rows.append([name, n_it, runs[0]["log"][-1]["forward_calls_total"], runs[0]["log"][-1]["transitions_total"],
                     f"{statistics.mean(acc):.3f} ± {statistics.pstdev(acc):.3f}",
                     f"{statistics.mean(fd):.2f} ± {statistics.pstdev(fd):.2f}",
                     f"{statistics.median(r['log'][-1]['wall_s_total'] for r in runs):.0f}"])
    table = md_table(["run", "iterations", "rollout forward calls", "transitions trained",
                      "prompt accuracy after (± sd, seeds)", "Fréchet distance after", "wall s (median)"],
                     [["base model", 0, 0, 0, f"{before['prompt_accuracy']:.3f}", f"{before['frechet_distance']:.2f}", "-"]]
                     + rows)
    print(table)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    for runs in results["runs"].values():
        for r in runs:
            r["log"] = [{k: row[k] for k in ("iteration", "reward_mean", "forward_calls_total", "transitions_total",
                                             "wall_s_total", "accuracy") if k in row} for row in r["log"]]
    (out / "rl_images.json").write_text(json.dumps(results, default=str))
    if args.no_write:
        return
    body = (f"Base model {args.model}, reward: log p(prompt class) under zoo:judge-digits; {args.prompts} prompts per "
            f"iteration, {args.steps} SDE steps (eta 0.3), PPO clip {args.clip:g}, AdamW lr {args.lr:g}, "
            f"{len(seeds)} seeds. Equal rollout budgets: GRPO {flat} forward calls per prompt and iteration, "
            f"BranchGRPO {tree}. Evaluation on fixed noises: 20 samples per class, judge accuracy and Fréchet "
            "distance on judge features against the 497 held-out test digits.\n\n" + table +
            "\n\nBefore: ![before](docs/figures/rl_images_before.png) After GRPO: "
            "![grpo](docs/figures/rl_images_grpo.png) After BranchGRPO: "
            "![branchgrpo](docs/figures/rl_images_branchgrpo.png)\n")
    update_section("rl_images", body, "RL alignment on images: BranchGRPO vs flat GRPO on dit-digits")


if __name__ == "__main__":
    main()
