"""The flow-matching base models of RL alignment: `flow-gmm` (2-D mixture, misaligned on purpose).

Rectified flow: x_σ = (1 − σ)·x₀ + σ·ε with σ ~ U(0, 1), the network regresses the velocity ε − x₀.
Half of the training labels are replaced by uniformly random classes, so the model generates its
prompt's mode about 9/16 of the time — the "poorly aligned" base model that GRPO-style training
then aligns to the prompt (BranchGRPO spec, CPU setting B-2D).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..console import info, progress_bar
from ..data import gmm
from ..io.artifacts import Artifact
from ..models.flow import FlowMLPConfig, FlowMLPModel
from ..utils.threads import configure_threads
from .specs import ZooSpec


def evaluate(model, spec: ZooSpec) -> dict:
    from ..rl.rewards import REWARDS
    from ..rl.sampler import Sampler
    from ..rl.trainer import evaluate as rl_evaluate

    e = spec.extra["eval"]
    reward = REWARDS.create("gmm", width=e["reward_width"], modes=spec.extra["data"]["modes"])
    return rl_evaluate(model, reward, Sampler(e["steps"], e["shift"], e["eta"]), per_class=e["per_class"])


def plot_samples(model, spec: ZooSpec, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..rl.sampler import Sampler
    from ..rl.trainer import samples

    e = spec.extra["eval"]
    classes = torch.arange(spec.extra["data"]["modes"])
    x = samples(model, Sampler(e["steps"], e["shift"], e["eta"]), classes, 64)
    c = classes.repeat_interleave(64)
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    mu = gmm.means(len(classes))
    ax.scatter(x[:, 0], x[:, 1], c=c, cmap="tab10", s=5, alpha=0.6)
    ax.scatter(mu[:, 0], mu[:, 1], c=classes, cmap="tab10", marker="x", s=80)
    for k in range(len(classes)):
        ax.annotate(str(k), (1.2 * mu[k, 0], 1.2 * mu[k, 1]), ha="center", va="center")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_flow(spec: ZooSpec, art: Artifact, threads: int | None, steps: int | None) -> Path:
    from .card import save_zoo_model
    from .train import training_settings

    nthreads = configure_threads(threads)
    torch.manual_seed(spec.seed)
    model = FlowMLPModel(FlowMLPConfig(**spec.config))
    steps = steps or spec.steps
    d = spec.extra["data"]
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{spec.name}: {nparams:,} parameters, {steps} steps of {spec.batch_size} points, {nthreads} threads")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    g = torch.Generator().manual_seed(spec.seed)
    curve, t0, acc_loss, n_loss = [], time.perf_counter(), 0.0, 0
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for step in range(steps):
            t = (step - spec.warmup) / max(1, steps - spec.warmup)
            lr = spec.lr * (min(1.0, (step + 1) / spec.warmup) if step < spec.warmup else
                            spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
            for group in opt.param_groups:
                group["lr"] = lr
            x0, y = gmm.sample(spec.batch_size, g, label_noise=d["label_noise"], modes=d["modes"], std=d["std"])
            sigma = torch.rand(spec.batch_size, generator=g)
            eps = torch.randn(spec.batch_size, 2, generator=g)
            xs = (1 - sigma[:, None]) * x0 + sigma[:, None] * eps
            loss = ((model(xs, sigma, y) - (eps - x0)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            acc_loss, n_loss = acc_loss + float(loss.detach()), n_loss + 1
            prog.update(task, advance=1, info=f"loss {float(loss.detach()):.4f}")
            if (step + 1) % spec.eval_every == 0 or step + 1 == steps:
                model.eval()
                ev = evaluate(model, spec)
                model.train()
                curve.append({"step": step + 1, "train_loss": acc_loss / n_loss, "reward": ev["reward"],
                              "accuracy": ev["accuracy"]})
                acc_loss, n_loss = 0.0, 0
    model.eval()
    wall = time.perf_counter() - t0
    ev = evaluate(model, spec)
    settings = training_settings(spec, nthreads, wall)
    settings["schedule"] = f"linear warm-up {spec.warmup} steps, cosine to {spec.min_lr_ratio} x lr"
    e = spec.extra["eval"]
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "config": spec.config,
            "data": {"source": "layerwise.data.gmm (8 modes on a circle)", **d},
            "task": {"name": "flow-matching",
                     "definition": "rectified flow x = (1-s) x0 + s eps, s ~ U(0,1), regress v = eps - x0; "
                                   f"{d['label_noise']:.0%} of the labels replaced by random classes"},
            "training": {"seed": spec.seed, "steps": steps, "batch_size": spec.batch_size,
                         "loss": "mean squared velocity error", **settings},
            "eval": {"sampler": f"SDE, {e['steps']} steps, eta {e['eta']}, shift {e['shift']}; reward on the last "
                                "step's x0 prediction", "reward_fn": f"gmm (width {e['reward_width']})", **ev},
            "curve": curve}
    save_zoo_model(art, model, card, extra=lambda d: plot_samples(
        model, spec, d / "samples.png", f"{spec.name}: SDE samples by prompt (x: modes)"))
    info(f"wrote {art.out}: prompt accuracy {ev['accuracy']:.4f}, reward {ev['reward']:.4f} after {wall:.0f} s")
    return art.out
