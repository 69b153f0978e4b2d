"""Run a healing job described by a JSON spec; this is what `accelerate launch` starts.

    accelerate launch --num_processes 1 --cpu -m layerwise.distill.run JOB.json
    accelerate launch --num_processes 2 --multi_gpu -m layerwise.distill.run JOB.json   # 2 CPU processes

Kinds are the healing objectives of `distill.objectives.HEALERS` (`layerwise methods` lists them):
  distill  — contiguous layer distillation: {"teacher", "intervals": [{start, end, keep}, ...], "options"}
  finetune — LM fine-tuning of a whole model: {"model"}
  kd       — logit distillation: {"model", "teacher", "options": {"temperature", "alpha"}}
Common: {"train": TrainConfig fields, "work_dir"}. Results go to work_dir: students.safetensors or
model/ (save_pretrained), curve.json, train_state.pt.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .driver import TrainConfig, train
from .objectives import HEALERS, resolve_kind


def load_job(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"job file {path} does not exist")
    try:
        job = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"job file {path} is not valid JSON: {e}") from e
    kind = resolve_kind(str(job.get("kind")))
    if kind not in HEALERS or not HEALERS[kind].trains:
        raise ConfigError(f"job {path}: 'kind' must be one of "
                          f"{', '.join(n for n, c in HEALERS.items() if c.trains)}")
    job["kind"] = kind
    try:
        job["train"] = TrainConfig(**job.get("train", {}))
    except TypeError as e:
        raise ConfigError(f"job {path}: bad 'train' settings: {e}") from e
    if "work_dir" not in job:
        raise ConfigError(f"job {path}: 'work_dir' is required")
    return job


def run_job(job: dict | str | Path):
    from accelerate import Accelerator

    from ..io.load import load_model
    from ..utils.hf import quiet

    quiet()
    if not isinstance(job, dict):
        job = load_job(job)
    elif not isinstance(job.get("train"), TrainConfig):
        job = {**job, "train": TrainConfig(**job.get("train", {}))}
    acc = Accelerator(cpu=True) if job.get("cpu", True) else Accelerator()
    work = Path(job["work_dir"])
    cls = HEALERS[resolve_kind(job["kind"])]
    # older job files kept the objective's options at the top level
    options = job.get("options") or {k: job[k] for k in cls.Config.model_fields if k in job}
    healer = cls(options)
    module, tok = healer.from_job(job, load_model)
    curve = train(module, job["train"], tok, work, description=job.get("description", healer.name), accelerator=acc)
    if acc.is_main_process:
        healer.save(acc.unwrap_model(module), tok, work)
    acc.wait_for_everyone()
    return curve


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(job: str | Path, processes: int, module: str = "layerwise.distill.run") -> list[str]:
    """`accelerate launch` of `python -m module JOB` for `processes` CPU processes.

    accelerate 1.15 runs `--cpu --num_processes N` as ONE process (its multi-CPU path needs mpirun), so
    several CPU processes are started through its torchrun launcher; the job itself forces the CPU.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", str(free_port())]
    else:
        cmd += ["--cpu"]
    return cmd + ["-m", module, str(job)]


def job_main(argv: list[str] | None, module: str, run, errors: type[Exception] = ConfigError) -> int:
    """`python -m MODULE JOB.json` for a launched job: `run(path)`; an `errors` exception is one line, exit 2."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write(f"usage: python -m {module} JOB.json\n")
        return 2
    try:
        run(args[0])
    except errors as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, "layerwise.distill.run", run_job)


if __name__ == "__main__":
    sys.exit(main())
