"""Training and knowledge distillation of image classifiers (zoo CNNs, searched networks).

One loop: SGD with Nesterov momentum (CNNs) or AdamW with a linear warm-up (vision transformers),
cosine learning rate to 0, batch-norm in training mode. With a
teacher it minimises `(1 − α)·CE(s, y) + α·T²·KL(softmax(t/T) ‖ softmax(s/T))` (TAS, with the KL
direction of its code: the teacher's softened distribution is the target). Deterministic: the
shuffle of epoch e depends only on (seed, e).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..console import progress_bar
from ..eval.images import classifier_score, logits_of
from .losses import kd_loss


@dataclass
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    kd_alpha: float = 0.9          # weight of the KD term when a teacher is given
    temperature: float = 4.0
    seed: int = 0
    eval_every: int = 0            # epochs between validation points (0: only at the end)
    optimizer: str = "sgd"         # "sgd" (Nesterov) | "adamw"
    warmup_epochs: float = 0.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        # no decay on norms, biases and embeddings-like vectors (the usual ViT recipe)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    if cfg.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                           weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@dataclass
class TrainResult:
    curve: list = field(default_factory=list)
    seen: int = 0                  # training images seen


def train_classifier(model: nn.Module, train, cfg: TrainConfig, teacher: nn.Module | None = None,
                     validation=None, description: str = "train") -> TrainResult:
    """Train `model` in place on `train` (an `ImageSet`), with KD from `teacher` when given."""
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if teacher is not None:
        teacher.eval()
    result, step = TrainResult(), 0
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(description, total=cfg.epochs, info="")
        for epoch in range(cfg.epochs):
            g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            running, n = 0.0, 0
            for x, y in train.batches(cfg.batch_size, g):
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step, total, steps_per_epoch)
                logits = logits_of(model, x)
                loss = F.cross_entropy(logits, y)
                if teacher is not None:
                    with torch.no_grad():
                        t = logits_of(teacher, x)
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(logits, t, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += float(loss.detach()) * len(y)
                n += len(y)
                step += 1
            result.seen += n
            point = {"epoch": epoch + 1, "train_loss": running / n}
            last = epoch + 1 == cfg.epochs
            if validation is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
                point.update({f"val_{k}": v for k, v in classifier_score(model, validation).to_dict().items() if k != "n"})
                model.train()
            result.curve.append(point)
            prog.update(task, advance=1, info=f"loss {point['train_loss']:.3f}")
    model.eval()
    return result
