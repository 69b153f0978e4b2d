"""Router training as a job that `accelerate launch` starts (`layerwise tokens --processes N`).

    python -m layerwise.pipeline.tokens_run JOB.json

JOB: {"model": path, "selector": {"name", ...options}, "drop": [per-block shares], "train":
RouterTrainConfig fields, "data": {"seqlen", "batch", "seed", "calib"}, "work_dir"}. Every process
rebuilds the same router (seeded) and the same batches; the trained router is checkpointed to
work_dir/router_state.pt, from which the calling process picks it up.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..errors import ConfigError, LayerwiseError


def build_router(selector, model, seed: int):
    """The router's initial weights depend only on the seed."""
    torch.manual_seed(seed)
    return selector.build(model)


def run_job(path: str | Path) -> list:
    from accelerate import Accelerator

    from ..tokens import TOKEN_SELECTORS
    from ..tokens.train import RouterTrainConfig, train_router
    from ..utils.hf import quiet
    from .source import resolve
    from .tokens import task_data

    quiet()
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"job file {path} does not exist")
    job = json.loads(p.read_text())
    acc = Accelerator(cpu=True)
    src = resolve(job["model"], load=True)
    lm = src.loaded.model.eval()
    cfg = dict(job["selector"])
    selector = TOKEN_SELECTORS.create(cfg.pop("name"), cfg)
    d = job["data"]
    data = task_data(src, d["seqlen"], d["batch"], d["seed"], 8, d.get("calib", "stdlib"))
    build_router(selector, lm, d["seed"])
    return train_router(lm, selector, job["drop"], data.batch_at, RouterTrainConfig(**job["train"]),
                        work_dir=job["work_dir"], description=f"train {selector.name} router",
                        positions=data.positions, accelerator=acc)


def launch(job: dict, work: Path, processes: int) -> None:
    """Run the job in `processes` CPU processes and wait; a failure is one ConfigError."""
    import os
    import subprocess

    from ..distill.run import launch_command

    work.mkdir(parents=True, exist_ok=True)
    jf = work / "router_job.json"
    jf.write_text(json.dumps(job, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    r = subprocess.run(launch_command(jf, processes, "layerwise.pipeline.tokens_run"), env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        last = [ln for ln in r.stderr.strip().splitlines() if ln.strip()][-1:] or ["(no message)"]
        raise ConfigError(f"router training in {processes} processes failed: {last[0]}")


def main(argv: list[str] | None = None) -> int:
    from ..distill.run import job_main

    return job_main(argv, "layerwise.pipeline.tokens_run", run_job, LayerwiseError)


if __name__ == "__main__":
    sys.exit(main())
