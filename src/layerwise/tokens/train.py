"""Router training with the language model frozen (FTP section 5.2): soft gates in every pruned block,
the log-gate key bias, and three losses:

    L = KL(p_dense ‖ p_routed)                                  distillation on the final logits
      + λ_s · Σ_l relu(s_l − (1 − mean_i g_i^l))²                asymmetric sparsity constraint
      + λ_g(t) · Σ_l BCE(g^l, static keep-set of block l)        guide, decaying linearly to 0

The batch of step s depends only on (seed, s) through `batch_at`; the router and optimizer state are
checkpointed into `work_dir`, so an interrupted run resumes. Training runs on `accelerate`: process r of
w takes rows r, r+w, … of every global batch and the router's gradients are averaged across processes.
The router is shared by all blocks (called several times per forward), so the gradients are reduced
explicitly rather than through a DDP wrapper. The per-block kept share in the sparsity term is the
global one (reduced across processes, with the local gradient), so w processes compute the same loss
and gradient as one process on the whole batch.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..console import progress_bar
from ..errors import ConfigError
from .routing import Site, TokenRouting, keep_from_scores
from .selectors import StaticSelector

STATE = "router_state.pt"


@dataclass
class RouterTrainConfig:
    steps: int = 300
    lr: float = 3e-3
    sparse_weight: float = 10.0
    guide_weight: float = 1.0
    guide_fraction: float = 0.5       # the guide weight reaches 0 after this share of the steps
    symmetric: bool = False           # penalise over-pruning too
    checkpoint_every: int = 50

    def to_dict(self) -> dict:
        return asdict(self)


def _losses(model, selector, drop, ids, real, cfg: RouterTrainConfig, step: int,
            positions: torch.Tensor | None, acc=None) -> tuple[torch.Tensor, dict]:
    with torch.no_grad():
        dense = F.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)
    routing = TokenRouting(model, selector, drop, mode="soft")
    with routing:
        routed = F.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1)
    scored = real.clone()
    if positions is not None:      # a task model: only the outputs it was trained to produce count
        scored &= torch.zeros_like(real).index_fill_(1, positions, True)
    kl = (dense.exp() * (dense - routed)).sum(-1)[scored].mean()
    static = StaticSelector()
    sparse = torch.zeros(())
    guide = torch.zeros(())
    achieved = {}
    for i, g in routing.state.gates.items():
        body = real.clone()
        body[:, 0] = False
        kept = g[body].mean()
        if acc is not None and acc.num_processes > 1:
            kept = kept + (acc.reduce(kept.detach().clone(), reduction="mean") - kept.detach())
        gap = drop[i] - (1 - kept)
        sparse = sparse + (gap.abs() if cfg.symmetric else F.relu(gap)) ** 2
        site = Site(i, ids, drop[i], real, None, len(drop))
        target = keep_from_scores(static.scores(site), site).float()
        guide = guide + F.binary_cross_entropy(g[body].clamp(1e-6, 1 - 1e-6), target[body])
        achieved[i] = float(1 - kept.detach())
    w_guide = cfg.guide_weight * max(0.0, 1 - step / max(1, cfg.guide_fraction * cfg.steps))
    loss = kl + cfg.sparse_weight * sparse + w_guide * guide
    return loss, {"kl": float(kl.detach()), "sparse": float(sparse.detach()), "guide": float(guide.detach()),
                  "achieved": achieved}


def train_router(model, selector, drop: list[float], batch_at: Callable[[int], torch.Tensor],
                 cfg: RouterTrainConfig, work_dir: str | os.PathLike | None = None,
                 description: str = "router", positions: torch.Tensor | None = None,
                 accelerator=None) -> list[dict]:
    """Train `selector.router` (the model stays frozen); returns the curve (one row per step).
    `positions`: the output positions the distillation scores (default: all)."""
    from accelerate import Accelerator

    router = selector.router
    if router is None:
        raise ConfigError(f"token selector '{selector.name}' has no router to train")
    acc = accelerator or Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    if world > 1:
        ids0 = batch_at(0)
        if ids0.shape[0] % world:
            raise ConfigError(f"the router batch {ids0.shape[0]} must be divisible by {world} processes")
        if acc.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.AdamW(router.parameters(), lr=cfg.lr, weight_decay=0.0)
    start, curve = 0, []
    state_file = Path(work_dir) / STATE if work_dir else None
    if state_file is not None and state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        if state["config"] != cfg.to_dict() or state["drop"] != list(drop):
            raise ConfigError(f"{state_file} was written by a router training with other settings; remove it")
        router.load_state_dict(state["router"])
        opt.load_state_dict(state["optimizer"])
        start, curve = state["step"], state["curve"]
    model.eval()
    try:
        with progress_bar() as prog:
            task = prog.add_task(description, total=cfg.steps, completed=start, info="")
            for step in range(start, cfg.steps):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * (0.1 + 0.9 * (1 - step / cfg.steps))
                ids = batch_at(step)[rank::world]
                real = torch.ones_like(ids, dtype=torch.bool)
                loss, parts = _losses(model, selector, drop, ids, real, cfg, step, positions, acc)
                loss.backward()
                if world > 1:
                    for p in router.parameters():
                        if p.grad is not None:
                            p.grad = acc.reduce(p.grad, reduction="mean")
                    loss = acc.reduce(loss.detach().clone(), reduction="mean")
                    parts["kl"] = float(acc.reduce(torch.tensor(parts["kl"]), reduction="mean"))
                    parts["guide"] = float(acc.reduce(torch.tensor(parts["guide"]), reduction="mean"))
                torch.nn.utils.clip_grad_norm_(router.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                curve.append({"step": step + 1, "loss": float(loss.detach()), **parts})
                prog.update(task, advance=1, info=f"kl {parts['kl']:.4f}")
                if state_file is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                    if acc.is_main_process:
                        state_file.parent.mkdir(parents=True, exist_ok=True)
                        tmp = state_file.with_suffix(".tmp")
                        torch.save({"step": step + 1, "router": router.state_dict(), "optimizer": opt.state_dict(),
                                    "curve": curve, "config": cfg.to_dict(), "drop": list(drop),
                                    "processes": world}, tmp)
                        os.replace(tmp, state_file)
                    acc.wait_for_everyone()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    router.eval()
    return curve
