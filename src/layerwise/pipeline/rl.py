"""`layerwise rl`: align a flow generator to a reward with GRPO or BranchGRPO, save it, report it.

The model is evaluated before and after on fresh SDE samples (reward, the reward's metrics,
diversity); the aligned model is written with `save_pretrained` (stock loading works), reloaded and
compared bit for bit; `rl.json` holds the settings and the per-iteration log, `report.md` the
reward curves (per iteration, per forward call, per second) and the samples before and after.
Training state lives in `OUT.work` (or `--work-dir`): rerunning the same command resumes, and
`--processes N` trains in N `accelerate`-launched CPU processes.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..console import info
from ..errors import ConfigError, LayerwiseError
from ..io.manifest import build_manifest
from ..io.report import write_json
from ..rl import REWARDS, RL_ALGORITHMS
from ..rl.trainer import RLConfig, evaluate, make_config, train
from ..utils.hf import quiet
from .output import guard_output
from .source import resolve


@dataclass
class RLRunResult:
    model: torch.nn.Module
    log: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    out: Path | None = None


def build(algo: str, options: dict | None, prune: str | None, reward: str, reward_options: dict | None,
          settings: dict | None):
    """The validated algorithm, reward and trainer settings (errors name the option)."""
    opts = dict(options or {})
    if prune is not None:
        cls = RL_ALGORITHMS.get(algo)
        if "prune" not in cls.Config.model_fields:
            if prune != "none":
                raise ConfigError(f"--prune applies to branchgrpo (tree pruning); '{algo}' has no tree to prune")
        else:
            opts["prune"] = prune
    return (RL_ALGORITHMS.create(algo, opts), REWARDS.create(reward, reward_options or {}),
            make_config(RLConfig, settings, "rl"))


def rl(model, *, algo: str = "branchgrpo", reward: str = "gmm", prune: str | None = None, options: dict | None = None,
       reward_options: dict | None = None, settings: dict | None = None, out=None, overwrite: bool = False,
       work_dir=None, processes: int = 1, eval_per_class: int = 64) -> RLRunResult:
    quiet()
    algorithm, rew, cfg = build(algo, options, prune, reward, reward_options, settings)
    if not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"--processes must be >= 1 (got {processes!r})")
    if eval_per_class < 1:
        raise ConfigError(f"--eval-samples must be >= 1 (got {eval_per_class})")
    algorithm.check(cfg.sampler)
    art = guard_output(out, model, work_dir=work_dir, overwrite=overwrite)
    work = Path(work_dir) if work_dir else (Path(str(art.out) + ".work") if art is not None else None)
    with art.run() if art is not None else _null():
        src = resolve(model)
        net = src.loaded.model
        before = evaluate(net, rew, cfg.sampler, eval_per_class)
        info(f"before: reward {before['reward']:.4f}" + "".join(f", {k} {v:.4f}" for k, v in before.items()
                                                               if k not in ("reward", "samples")))
        from .rl_report import sample_set

        before_samples = sample_set(net, cfg.sampler) if art is not None else None
        t0 = time.perf_counter()
        if processes > 1:
            _launch(src, algorithm, rew, cfg, work, processes)
        res = train(net, algorithm, rew, cfg, work_dir=work, description=f"{algo} on {src.spec}")
        after = evaluate(net, rew, cfg.sampler, eval_per_class)
        info(f"after:  reward {after['reward']:.4f}" + "".join(f", {k} {v:.4f}" for k, v in after.items()
                                                              if k not in ("reward", "samples")))
        result = RLRunResult(net, res.log, before, after)
        if art is not None:
            tmp = art.begin()
            _write(tmp, src, net, algorithm, rew, cfg, result, time.perf_counter() - t0, processes, before_samples)
            result.out = art.commit()
            if not work_dir and work is not None and work.exists():
                import shutil

                shutil.rmtree(work, ignore_errors=True)
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _launch(src, algorithm, rew, cfg, work: Path | None, processes: int) -> None:
    from ..distill.run import launch_command

    if src.path is None:
        raise ConfigError("--processes > 1 needs the model as a path or zoo:NAME")
    if work is None:
        raise ConfigError("--processes > 1 needs --out or --work-dir (the processes hand their result over there)")
    work.mkdir(parents=True, exist_ok=True)
    job = {"model": str(src.spec if str(src.spec).startswith("zoo:") else src.path),
           "algo": algorithm.config_dict(), "reward": rew.config_dict(), "settings": cfg.model_dump(),
           "work_dir": str(work)}
    (work / "job.json").write_text(json.dumps(job, indent=1) + "\n")
    r = subprocess.run(launch_command(work / "job.json", processes, module="layerwise.rl.run"))
    if r.returncode != 0:
        raise LayerwiseError(f"the {processes}-process RL run failed (exit code {r.returncode}); "
                             f"rerun to resume from {work}")


@torch.no_grad()
def check_velocity_reload(net, directory: Path, inputs) -> str:
    """Load the saved generator back and compare its velocities with the in-memory model's, bit for bit."""
    from ..io.load import load_dir
    from ..io.verify import how_it_loads
    from ..rl.policy import velocity

    back = load_dir(directory)[0]
    a, b = velocity(net)(*inputs), velocity(back)(*inputs)
    if a.shape != b.shape or not torch.equal(a, b):
        raise LayerwiseError("the saved aligned model does not reproduce the in-memory velocities; nothing was written")
    return f"{how_it_loads(directory)} reload: velocities identical to the in-memory model"


def _write(tmp: Path, src, net, algorithm, rew, cfg, result: RLRunResult, seconds: float, processes: int,
           before_samples) -> None:
    from ..rl.policy import num_conditions, sample_shape
    from .rl_report import plot_curves, plot_samples, sample_set, write_rl_report

    net.save_pretrained(tmp)
    g = torch.Generator().manual_seed(0)
    shape = sample_shape(net)
    reload = check_velocity_reload(net, tmp, (torch.randn(4, *shape, generator=g), torch.rand(4, generator=g),
                                               torch.randint(0, num_conditions(net), (4,), generator=g)))
    metrics = {f"before_{k}": v for k, v in result.before.items()}
    metrics.update({f"after_{k}": v for k, v in result.after.items()})
    last = result.log[-1] if result.log else {}
    timings = {"train_s": last.get("wall_s_total", 0.0), "total_s": seconds}
    manifest = build_manifest("rl", {"model": src.spec, "algo": algorithm.config_dict(), "reward": rew.config_dict(),
                                     "settings": cfg.model_dump(), "processes": processes},
                              cfg.seed, timings, metrics,
                              {"forward_calls": last.get("forward_calls_total", 0),
                               "transitions": last.get("transitions_total", 0)})
    manifest["reload"] = reload
    write_json(tmp / "manifest.json", manifest)
    write_json(tmp / "rl.json", {"algo": algorithm.config_dict(), "reward": rew.config_dict(),
                                 "settings": cfg.model_dump(), "before": result.before, "after": result.after,
                                 "log": result.log})
    plot_curves({f"{algorithm.name}": result.log}, tmp / "rl_curves.png", title=f"{algorithm.name} on {src.spec}")
    plot_samples({"before": before_samples, "after": sample_set(net, cfg.sampler)}, tmp / "rl_samples.png")
    write_rl_report(tmp, manifest, result, algorithm)
