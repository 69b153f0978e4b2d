"""TAS (Dong & Yang, NeurIPS 2019): differentiable search of widths and depths under a FLOPs target.

Alternating updates on two halves of the training data (class-balanced for images): a weight step (SGD on the
shared weights, cross-entropy of a sampled architecture) on one half, an architecture step (Adam on
α, β: cross-entropy plus λ·(±log E[FLOPs]), the sign chosen by the argmax genotype's FLOPs against
the band) on a random batch of the other half. τ follows a cosine from τ_max to τ_min over the
epochs. The result is the *last* argmax genotype (the reference's choice), with the per-epoch
history (FLOPs ratio of the argmax, branch of the cost term, τ, losses).

The band is a promise to the user, so when the last argmax lies outside it (near-tied logits make the
argmax flip late in short searches) the result is the most recent in-band argmax of the second half
of the search, and failing that the last argmax repaired one width step at a time, each step the
one the logits object to least. `notes["selected"]` says which ("final argmax", "last in band",
"repaired").
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ..console import progress_bar
from .base import SEARCHERS, Genotype, SearchConfig, ShapeSearch
from .relax import cost_loss, tau_at


class TASConfig(SearchConfig):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=2)
    weight_lr: float = Field(0.05, gt=0, description="SGD (Nesterov) on the shared weights, cosine to 0")
    weight_decay: float = 5e-4
    arch_lr: float = Field(0.01, gt=0, description="Adam on the architecture logits (betas 0.5, 0.999)")
    arch_weight_decay: float = 1e-3
    cost_weight: float = Field(2.0, ge=0, description="λ of the FLOPs term")
    tau_max: float = Field(5.0, gt=0)
    tau_min: float = Field(0.1, gt=0)


@SEARCHERS.register
class TAS(ShapeSearch):
    name = "tas"
    description = "TAS: Gumbel-sampled widths with channel-wise interpolation, depth mixing, FLOPs-targeted"
    Config = TASConfig
    needs = frozenset({"whole_model", "training", "gradients"})

    def search(self, supernet, train) -> Genotype:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        w_set, a_set = train.split_half(cfg.seed)
        opt_w = torch.optim.SGD(supernet.weight_parameters(), lr=cfg.weight_lr, momentum=0.9, nesterov=True,
                                weight_decay=cfg.weight_decay)
        opt_a = torch.optim.Adam(supernet.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                                 weight_decay=cfg.arch_weight_decay)
        full = float(supernet.full_flops())
        steps = math.ceil(len(w_set) / cfg.batch_size)
        total, step, history, in_band = cfg.epochs * steps, 0, [], None
        supernet.train()
        with progress_bar() as prog:
            task = prog.add_task("TAS search", total=cfg.epochs, info="")
            for epoch in range(cfg.epochs):
                tau = tau_at(epoch, cfg.epochs, cfg.tau_max, cfg.tau_min)
                sums = {"weight_ce": 0.0, "arch_ce": 0.0, "n": 0}
                branches: dict[str, int] = {}
                for xw, yw in w_set.batches(cfg.batch_size, gen):
                    for group in opt_w.param_groups:
                        group["lr"] = cfg.weight_lr * 0.5 * (1 + math.cos(math.pi * step / total))
                    logits, _ = supernet.forward_search(xw, tau, gen, cost=False)
                    loss_w = supernet.task_loss(logits, yw)
                    opt_w.zero_grad(set_to_none=True)
                    loss_w.backward()
                    opt_w.step()

                    xa, ya = a_set.sample(len(yw), gen)
                    logits, expected = supernet.forward_search(xa, tau, gen)
                    ce_a = supernet.task_loss(logits, ya)
                    disc = supernet.genotype_flops(supernet.argmax_genotype())
                    cost, branch = cost_loss(expected, disc, full, cfg.flops, cfg.tolerance)
                    if branch == "in band" and 2 * step >= total:
                        in_band = supernet.argmax_genotype()
                    opt_a.zero_grad(set_to_none=True)
                    (ce_a + cfg.cost_weight * cost).backward()
                    opt_a.step()
                    opt_w.zero_grad(set_to_none=True)
                    sums["weight_ce"] += float(loss_w.detach()) * len(yw)
                    sums["arch_ce"] += float(ce_a.detach()) * len(yw)
                    sums["n"] += len(yw)
                    branches[branch] = branches.get(branch, 0) + 1
                    step += 1
                g = supernet.argmax_genotype()
                ratio = supernet.genotype_flops(g) / full
                history.append({"epoch": epoch + 1, "tau": tau, "flops_ratio": ratio,
                                "expected_flops_ratio": float(supernet.expected_flops().detach()) / full,
                                "weight_ce": sums["weight_ce"] / sums["n"], "arch_ce": sums["arch_ce"] / sums["n"],
                                "cost_branches": branches})
                prog.update(task, advance=1, info=f"τ {tau:.2f} FLOPs {ratio:.3f} CE {history[-1]['arch_ce']:.3f}")
        supernet.eval()
        g, selected = self._select(supernet, supernet.argmax_genotype(), in_band, full)
        return Genotype(g, supernet.genotype_flops(g), int(full), self.name, history,
                        {"align": supernet.align_name, "epochs": cfg.epochs, "selected": selected,
                         "final_argmax_ratio": history[-1]["flops_ratio"]})

    def _in_band(self, supernet, g: dict, full: float) -> bool:
        return self.config.flops - self.config.tolerance <= supernet.genotype_flops(g) / full <= self.config.flops

    def _select(self, supernet, last: dict, in_band: dict | None, full: float) -> tuple[dict, str]:
        if self._in_band(supernet, last, full):
            return last, "final argmax"
        if in_band is not None:
            return in_band, "last in band"
        return repair(supernet, last, self.config.flops, self.config.tolerance), "repaired"


def repair(supernet, genotype: dict, target: float, tolerance: float, alphas=None, betas=None) -> dict:
    """Move one width (or, where no width can move, one depth) a candidate at a time toward the band,
    each time the move its logits (`alphas`, `betas`; default the supernet's) object to least, until the
    FLOPs lie in [target − tolerance, target]. When a step jumps over the band, the best genotype seen
    under the target is returned."""
    alphas = supernet.alphas if alphas is None else alphas
    betas = supernet.betas if betas is None else betas
    g = dict(genotype)
    full = supernet.full_flops()
    seen, best_under = set(), None
    for _ in range(10_000):
        ratio = supernet.genotype_flops(g) / full
        if target - tolerance <= ratio <= target:
            return g
        if ratio <= target and (best_under is None or ratio > best_under[0]):
            best_under = (ratio, dict(g))
        key = tuple(sorted(g.items()))
        if key in seen:
            break
        seen.add(key)
        step = -1 if ratio > target else 1
        move = _cheapest(supernet.width_dims, alphas, g, step) or _cheapest(supernet.depth_dims, betas, g, step)
        if move is None:
            break
        g[move[0]] = move[1]
    return best_under[1] if best_under is not None else g


def _cheapest(dims, logits, g: dict, step: int):
    best = None
    for dim, a in zip(dims, logits):
        j = dim.candidates.index(g[dim.name]) + step
        if 0 <= j < len(dim.candidates):
            cost = float((a[j - step] - a[j]).detach())
            if best is None or cost < best[0]:
                best = (cost, dim.name, dim.candidates[j])
    return None if best is None else best[1:]
