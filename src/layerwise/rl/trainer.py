"""One trainer for every RL algorithm: rollouts, rewards, the clipped policy update, logs, checkpoints.

Per iteration: `prompts` conditions are drawn (from (seed, iteration) only), each process rolls out
its share (`rank::world`) with the algorithm, scores the leaves' x₀ predictions, and trains on the
transitions the algorithm selects: shuffled, `grad_accum` transitions per optimiser step, loss
`max(−A'·ratio, −A'·clip(ratio, 1 ± ε))` averaged over the step's transitions, A' = clip(A, ±adv_clip),
gradients clipped to `max_grad_norm` (the reference's update; later groups of an iteration are
off-policy and the ratio clip handles it). Model and data stay in float32 and in one mode, so the
first group's ratios are 1 up to rounding; larger deviations stop the run (a rollout/update mismatch).

Counted exactly: forward calls of the rollout (one per node evaluation), transitions trained
(one forward + backward each), wall time of rollouts and updates. A reward that returns NaN or inf
for a prompt's samples makes that prompt's advantages 0 for the iteration (logged); a non-finite
gradient skips that optimiser step (logged) — never a NaN update. State is checkpointed atomically
every `checkpoint_every` iterations and a rerun resumes; the same code runs in one process or under
`accelerate launch` (gradients averaged across processes).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..console import info, progress_bar, warn
from ..errors import ConfigError, LayerwiseError
from .algorithm import RLAlgorithm
from .policy import num_conditions, sample_shape, velocity
from .rewards import Reward, check_rewards
from .sampler import Sampler
from .tree import Transitions, rollout

STATE = "rl_state.pt"


class RLConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(100, ge=1)
    prompts: int = Field(8, ge=1)
    steps: int = Field(20, ge=1)
    shift: float = Field(1.0, gt=0)
    eta: float = Field(0.3, gt=0)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    clip_range: float = Field(1e-3, gt=0)
    adv_clip: float = Field(5.0, gt=0)
    grad_accum: int = Field(12, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    checkpoint_every: int = Field(10, ge=1)
    ratio_tolerance: float = Field(1e-3, gt=0)

    @property
    def sampler(self) -> Sampler:
        return Sampler(self.steps, self.shift, self.eta)


def make_config(cls, data: dict | None, what: str):
    from pydantic import ValidationError

    try:
        return cls(**(data or {}))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
        raise ConfigError(f"{what}: option '{loc}': {err.get('msg')} (got {err.get('input')!r})") from e


def _seed(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def iteration_prompts(cfg: RLConfig, iteration: int, num_classes: int) -> torch.Tensor:
    return torch.randint(0, num_classes, (cfg.prompts,), generator=generator(cfg.seed, iteration, 1))


@dataclass
class RLResult:
    log: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def diversity(x: torch.Tensor, prompt: torch.Tensor) -> float:
    """Mean over prompts of the mean pairwise distance between that prompt's samples."""
    out = []
    for p in prompt.unique():
        xp = x[prompt == p].reshape(int((prompt == p).sum()), -1).float()
        if xp.shape[0] > 1:
            d = torch.cdist(xp, xp)
            out.append(float(d.sum() / (xp.shape[0] * (xp.shape[0] - 1))))
    return sum(out) / len(out) if out else 0.0


def ppo_loss(fn, sampler: Sampler, t: Transitions, clip_range: float, adv_clip: float):
    """(loss, ratio) of a group of transitions under the current policy `fn`."""
    v = fn(t.x, sampler.sigma[t.step], t.cond)
    mean = sampler.mean(t.x, v, t.step)
    logp = sampler.logp(t.x_next, mean, sampler.std(t.step) * t.logp_scale)
    ratio = torch.exp(logp - t.old_logp)
    adv = t.advantage.clamp(-adv_clip, adv_clip)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    return loss, ratio.detach()


def train(model: torch.nn.Module, algo: RLAlgorithm, reward: Reward, cfg: RLConfig, work_dir=None,
          accelerator=None, description: str | None = None, callback=None) -> RLResult:
    """Align `model` (in place) to `reward` with `algo`; returns the per-iteration log.

    `callback(row, model)` runs after every iteration (outside the timed work) and may add entries
    to the row, e.g. an evaluation on fixed samples."""
    from accelerate import Accelerator

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    if acc.device.type == "cpu" and acc.num_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // acc.num_processes))
    sampler = cfg.sampler
    algo.check(sampler)
    if cfg.prompts % acc.num_processes:
        raise ConfigError(f"--prompts {cfg.prompts} must be divisible by the {acc.num_processes} processes")
    classes, shape = num_conditions(model), sample_shape(model)
    rank, world = acc.process_index, acc.num_processes
    work = Path(work_dir) if work_dir is not None else None
    fingerprint = {"rl": cfg.model_dump(), "algo": algo.config_dict(), "reward": reward.config_dict()}
    model = model.float().eval()            # one precision and one mode for rollouts and updates
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    start, log = 0, []
    if work is not None and (work / STATE).exists():
        state = torch.load(work / STATE, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise ConfigError(f"{work / STATE} was written by a run with other settings; remove {work} to restart")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, log = state["iteration"], state["log"]
        if acc.is_main_process and start < cfg.iterations:
            info(f"resuming RL at iteration {start} of {cfg.iterations}")
    wrapped, opt = acc.prepare(model, opt)
    base = acc.unwrap_model(wrapped)
    rollout_fn = velocity(base)
    train_fn = velocity(base, call=wrapped)
    params = [p for p in base.parameters() if p.requires_grad]
    totals = {k: (log[-1][k] if log else 0) for k in ("forward_calls_total", "transitions_total", "wall_s_total")}
    with progress_bar() as prog:
        task = prog.add_task(description or f"RL {algo.name}", total=cfg.iterations, completed=start, info="")
        for it in range(start, cfg.iterations):
            row = _iteration(it, cfg, algo, reward, sampler, classes, shape, rank, world, rollout_fn, train_fn,
                             wrapped, params, opt, acc)
            for k, v in (("forward_calls_total", row["forward_calls"]), ("transitions_total", row["transitions"]),
                         ("wall_s_total", row["wall_s"])):
                totals[k] += v
                row[k] = totals[k]
            if callback is not None:
                callback(row, base)
            log.append(row)
            prog.update(task, advance=1, info=f"reward {row['reward_mean']:.3f}")
            last = it + 1 == cfg.iterations
            if work is not None and ((it + 1) % cfg.checkpoint_every == 0 or last) and acc.is_main_process:
                work.mkdir(parents=True, exist_ok=True)
                tmp = work / f".{STATE}.tmp"
                torch.save({"iteration": it + 1, "model": base.state_dict(), "optimizer": opt.state_dict(),
                            "log": log, "fingerprint": fingerprint}, tmp)
                os.replace(tmp, work / STATE)
            acc.wait_for_everyone()
    return RLResult(log=log)


def _iteration(it, cfg, algo, reward, sampler, classes, shape, rank, world, rollout_fn, train_fn, wrapped,
               params, opt, acc) -> dict:
    t0 = time.perf_counter()
    prompts = iteration_prompts(cfg, it, classes)
    mine = torch.arange(cfg.prompts)[rank::world]
    cond = prompts[mine]
    gens = [generator(cfg.seed, it, 2, int(p)) for p in mine]
    forest = algo.rollout(rollout_fn, cond, sampler, shape, gens, it, cfg.iterations)
    leaves = forest.leaves
    leaf_cond = cond[forest.prompt[leaves]]
    with torch.no_grad():
        r = check_rewards(reward(forest.x0[leaves], leaf_cond), leaves.numel(), reward.name)
    t_roll = time.perf_counter() - t0
    bad = ~torch.isfinite(r)
    skipped = 0
    if bad.any():
        for p in forest.prompt[leaves][bad].unique().tolist():
            in_p = forest.prompt[leaves] == p
            warn(f"iteration {it}: reward '{reward.name}' returned {int((bad & in_p).sum())} non-finite values for "
                 f"prompt {int(cond[p])}; its samples are not trained this iteration")
            r[in_p] = 0.0          # a constant: every advantage of that tree becomes 0
            skipped += 1
    ok = torch.ones_like(r, dtype=torch.bool)
    for p in range(forest.num_prompts):
        if bool((bad & (forest.prompt[leaves] == p)).any()):
            ok &= forest.prompt[leaves] != p
    metrics = reward.metrics(forest.x0[leaves][ok], leaf_cond[ok]) if ok.any() else {}
    t = algo.select(forest, r, it, cfg.iterations, generator(cfg.seed, it, 3, rank))
    t1 = time.perf_counter()
    order = torch.randperm(len(t), generator=generator(cfg.seed, it, 4, rank))
    losses, clipped, ratio_err, skipped_steps = [], 0, 0.0, 0
    for g, i in enumerate(range(0, len(t), cfg.grad_accum)):
        batch = t.take(order[i:i + cfg.grad_accum])
        loss, ratio = ppo_loss(train_fn, sampler, batch, cfg.clip_range, cfg.adv_clip)
        if g == 0:
            ratio_err = float((ratio - 1).abs().max())
            if ratio_err > cfg.ratio_tolerance:
                raise LayerwiseError(f"iteration {it}: the policy's recomputed log-probabilities differ from the "
                                     f"rollout's before any update (max |ratio - 1| = {ratio_err:.2e}); the model "
                                     "is not deterministic between rollout and update (dropout, precision?)")
        acc.backward(loss)
        norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
        if not math.isfinite(float(norm)) or not math.isfinite(float(loss.detach())):
            warn(f"iteration {it}: non-finite loss or gradient; optimiser step skipped")
            skipped_steps += 1
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        clipped += int(((ratio - 1).abs() > cfg.clip_range).sum())
    t_upd = time.perf_counter() - t1
    good = r[ok]
    calls = torch.tensor([forest.forward_calls, len(t), int(good.numel())], dtype=torch.float64)
    sums = torch.tensor([float(good.sum()), float((good ** 2).sum())], dtype=torch.float64)
    if world > 1:
        calls, sums = acc.reduce(calls, reduction="sum"), acc.reduce(sums, reduction="sum")
    n = max(1.0, float(calls[2]))
    mean = float(sums[0]) / n
    row = {"iteration": it + 1, "reward_mean": mean,
           "reward_std": math.sqrt(max(0.0, float(sums[1]) / n - mean ** 2)),
           "forward_calls": int(calls[0]), "transitions": int(calls[1]),
           "loss": sum(losses) / max(1, len(losses)), "clip_fraction": clipped / max(1, len(t)),
           "ratio_error_first_group": ratio_err, "diversity": diversity(forest.x0[leaves], forest.prompt[leaves]),
           "skipped_prompts": skipped, "skipped_steps": skipped_steps,
           "rollout_s": t_roll, "update_s": t_upd, "wall_s": t_roll + t_upd}
    row.update({k: v for k, v in metrics.items()})
    return row


def evaluate(model, reward: Reward, sampler: Sampler, per_class: int = 64, seed: int = 12345,
             classes: list[int] | None = None) -> dict:
    """Mean reward, the reward's metrics and diversity of fresh SDE samples (independent noises)."""
    n_cls = num_conditions(model)
    cond = torch.tensor(classes if classes is not None else list(range(n_cls)))
    gens = [generator(seed, _prompt_key(c), 5) for c in cond]
    was = model.training
    model.eval()
    forest = rollout(velocity(model), cond, sampler, sample_shape(model), gens, roots=per_class, branch=1,
                     same_noise=False)
    model.train(was)
    leaves = forest.leaves
    x, c = forest.x0[leaves], cond[forest.prompt[leaves]]
    with torch.no_grad():
        r = reward(x, c)
    return {"reward": float(r.mean()), **reward.metrics(x, c),
            "diversity": diversity(x, forest.prompt[leaves]), "samples": per_class * len(cond)}


def _prompt_key(c: torch.Tensor) -> int:
    """A class number, or a token sequence folded into one integer (the prompt's noise stream)."""
    if c.ndim == 0:
        return int(c)
    return sum(int(t) * 97 ** k for k, t in enumerate(c.flatten().tolist())) % (2 ** 31)


def samples(model, sampler: Sampler, cond: torch.Tensor, per_class: int, seed: int = 12345) -> torch.Tensor:
    """(len(cond)·per_class, *shape) x₀ predictions at the last step of independent SDE samples."""
    gens = [generator(seed, _prompt_key(c), 5) for c in cond]
    forest = rollout(velocity(model), cond, sampler, sample_shape(model), gens, roots=per_class, branch=1,
                     same_noise=False)
    return forest.x0[forest.leaves]


@torch.no_grad()
def ode_samples(model, sampler: Sampler, cond: torch.Tensor, noise: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Deterministic Euler ODE samples (x₀ prediction of the last step) from given initial noises, one
    per row of `cond`: the sample is a function of its noise alone (initial-noise optimisation)."""
    fn = velocity(model)
    x = noise
    for j in range(sampler.steps):
        jj = torch.full((x.shape[0],), j, dtype=torch.long)
        v = torch.cat([fn(x[i:i + batch], sampler.sigma[jj[i:i + batch]], cond[i:i + batch])
                       for i in range(0, x.shape[0], batch)])
        x0 = sampler.x0(x, v, jj)
        x = sampler.mean(x, v, jj, sde=False)
    return x0
