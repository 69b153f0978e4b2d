"""Run an RL job described by a JSON spec; this is what `accelerate launch` starts.

    accelerate launch --num_processes 2 --multi_gpu -m layerwise.rl.run JOB.json   # 2 CPU processes

JOB: {"model", "algo": {name, options...}, "reward": {name, options...}, "settings": RLConfig fields,
"work_dir"}. The trained state is left in work_dir (rl_state.pt) for the launching command.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError


def run_job(path) -> None:
    from accelerate import Accelerator

    from ..io.load import load_model
    from ..utils.hf import quiet
    from .algorithm import RL_ALGORITHMS
    from .rewards import REWARDS
    from .trainer import RLConfig, make_config, train

    quiet()
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"job file {path} does not exist")
    job = json.loads(p.read_text())
    algo = dict(job["algo"])
    reward = dict(job["reward"])
    algorithm = RL_ALGORITHMS.create(algo.pop("name"), algo)
    rew = REWARDS.create(reward.pop("name"), reward)
    cfg = make_config(RLConfig, job["settings"], "rl")
    model = load_model(job["model"]).model
    train(model, algorithm, rew, cfg, work_dir=job["work_dir"], accelerator=Accelerator(cpu=True),
          description=f"{algorithm.name} ({job['model']})")


def main(argv: list[str] | None = None) -> int:
    from ..distill.run import job_main

    return job_main(argv, "layerwise.rl.run", run_job)


if __name__ == "__main__":
    sys.exit(main())
