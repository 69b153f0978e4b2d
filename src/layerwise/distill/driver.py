"""One training loop for every kind of healing, on `accelerate`.

The trainable thing is an `nn.Module` whose `forward(ids)` returns the loss (interval students with
their frozen teacher, a pruned model fine-tuned on LM loss, a student distilled from a teacher's
logits), so that data-parallel wrappers see one forward per step. The batch of step s depends only on
(seed, s); process r of w takes rows r, r+w, … of it, so any number of processes sees the same global
batch. State (trainable weights, optimizer, step, loss curve) is checkpointed atomically and a rerun
resumes. The same code runs on a CPU, one GPU, or `accelerate launch --num_processes N`.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..console import info, progress_bar
from ..utils.faults import fault_point
from ..data.tokens import token_stream, training_batch

STATE = "train_state.pt"


@dataclass
class TrainConfig:
    steps: int = 200
    global_batch: int = 16
    seqlen: int = 256
    lr: float = 2e-4
    min_lr_ratio: float = 0.1
    warmup: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    corpus: str = "stdlib"
    checkpoint_every: int = 50
    offset: int = 0                    # global step of this run's first step (schedules across stages)
    total_steps: int | None = None     # length of the global schedule (default: steps)

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine, over the global schedule (offset + step of total_steps)."""
    total = cfg.total_steps or cfg.steps
    step = step + cfg.offset
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _trainable_state(module: nn.Module) -> dict:
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k in names}


def train(module: nn.Module, cfg: TrainConfig, tokenizer, work_dir: str | os.PathLike,
          description: str = "train", accelerator=None) -> list[dict]:
    """Train `module` (forward(batch) → loss) for cfg.steps; returns the loss curve (one row per step).

    Batches are token windows of `cfg.corpus`, unless the module brings its own data: a module with
    `training_batches(cfg)` returning a callable `global step → batch` (a diffusion model's noised
    images with their targets) trains on that, with the same determinism in (seed, step).
    """
    from accelerate import Accelerator

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    if acc.device.type == "cpu" and acc.num_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // acc.num_processes))
    work = Path(work_dir)
    if acc.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    if cfg.global_batch % acc.num_processes:
        from ..errors import ConfigError

        raise ConfigError(f"the global batch {cfg.global_batch} must be divisible by {acc.num_processes} processes")
    own = getattr(module, "training_batches", None)
    batch_at = own(cfg) if own is not None else None
    if batch_at is None:
        stream = token_stream(cfg.corpus, tokenizer, "train")

        def batch_at(global_step: int):
            return training_batch(stream, global_step, cfg.global_batch, cfg.seqlen, cfg.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    start, curve = 0, []
    state_file = work / STATE
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        if state.get("config") != cfg.to_dict() or set(state["model"]) != set(_trainable_state(module)):
            from ..errors import ConfigError

            raise ConfigError(f"{state_file} was written by a run with other training settings or other "
                              "trainable weights; remove it to restart")
        module.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        start, curve = state["step"], state["curve"]
        if acc.is_main_process:
            info(f"resuming {description} at step {start}")
    module, opt = acc.prepare(module, opt)
    module.train()
    rank, world = acc.process_index, acc.num_processes
    t0 = time.perf_counter()
    with progress_bar() as prog:
        task = prog.add_task(description, total=cfg.steps, completed=start, info="")
        for step in range(start, cfg.steps):
            lr = lr_at(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = batch_at(step + cfg.offset)[rank::world].to(acc.device)
            loss = module(batch)
            acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            mean_loss = float(acc.reduce(loss.detach(), reduction="mean"))
            curve.append({"step": step + 1, "loss": mean_loss, "lr": lr})
            prog.update(task, advance=1, info=f"loss {mean_loss:.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                if acc.is_main_process:
                    tmp = work / f".{STATE}.tmp"
                    torch.save({"step": step + 1, "model": _trainable_state(acc.unwrap_model(module)),
                                "optimizer": opt.state_dict(), "curve": curve, "config": cfg.to_dict()}, tmp)
                    os.replace(tmp, state_file)
                acc.wait_for_everyone()
            if step + 1 < cfg.steps:
                fault_point("step", step + 1)
    if acc.is_main_process:
        (work / "curve.json").write_text(json.dumps({"curve": curve, "config": cfg.to_dict(),
                                                     "processes": world,
                                                     "seconds": time.perf_counter() - t0}, indent=1))
    return curve
