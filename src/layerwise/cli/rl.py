from __future__ import annotations

from typing import List, Optional

import typer

from ..console import console
from ..rl import REWARDS, RL_ALGORITHMS
from .app import app
from .common import parse_options, registry_option


@app.command("rl")
def rl_cmd(
    model: str = typer.Argument(..., help="A flow generator: zoo:NAME or a save_pretrained directory."),
    algo: str = registry_option("branchgrpo", "--algo", registry=RL_ALGORITHMS),
    prune: Optional[str] = typer.Option(None, "--prune", help="BranchGRPO tree pruning: none | width | depth | mix."),
    reward: str = registry_option("gmm", "--reward", registry=REWARDS),
    option: Optional[List[str]] = typer.Option(None, "--option", "-O",
                                               help="Algorithm option KEY=VALUE (repeatable), e.g. split_points=[0,3,6,9], "
                                                    "branch=2, timestep_fraction=0.6, advantage=leaf."),
    reward_option: Optional[List[str]] = typer.Option(None, "--reward-option", help="Reward option KEY=VALUE."),
    iterations: int = typer.Option(100, help="Training iterations (one rollout of every prompt each)."),
    prompts: int = typer.Option(8, help="Prompts per iteration."),
    steps: int = typer.Option(20, help="Sampling steps."),
    eta: float = typer.Option(0.3, help="SDE noise level."),
    shift: float = typer.Option(1.0, help="Schedule shift (3 for FLUX-like schedules)."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate."),
    clip_range: float = typer.Option(1e-3, help="PPO ratio clip epsilon."),
    grad_accum: int = typer.Option(12, help="Transitions per optimizer step."),
    seed: int = typer.Option(0, help="Seed of prompts, noises and shuffles."),
    eval_samples: int = typer.Option(64, help="Evaluation samples per class, before and after."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (written atomically)."),
    work_dir: Optional[str] = typer.Option(None, help="Training state; rerun to resume (default OUT.work)."),
    processes: int = typer.Option(1, help="Train with `accelerate launch` in N CPU processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
):
    """Align a flow generator to a reward with flat GRPO or BranchGRPO (tree rollouts), and save it.

    Example: layerwise rl zoo:flow-gmm --algo branchgrpo --prune width --reward gmm --out runs/aligned
    """
    from ..pipeline.rl import rl

    settings = dict(iterations=iterations, prompts=prompts, steps=steps, eta=eta, shift=shift, lr=lr,
                    clip_range=clip_range, grad_accum=grad_accum, seed=seed)
    res = rl(model, algo=algo, reward=reward, prune=prune, options=parse_options(option, "--option"),
             reward_options=parse_options(reward_option, "--reward-option"), settings=settings, out=out,
             overwrite=overwrite, work_dir=work_dir, processes=processes, eval_per_class=eval_samples)
    last = res.log[-1] if res.log else {}
    console.print(f"reward {res.before['reward']:.4f} -> {res.after['reward']:.4f}"
                  + "".join(f", {k} {res.before[k]:.4f} -> {res.after[k]:.4f}" for k in res.before
                            if k not in ("reward", "samples")))
    console.print(f"{last.get('forward_calls_total', 0):,} rollout forward calls, "
                  f"{last.get('transitions_total', 0):,} transitions trained, {last.get('wall_s_total', 0):.1f} s")
    if res.out:
        console.print(f"wrote {res.out} (model, rl.json, manifest.json, report.md)")
