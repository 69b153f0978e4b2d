"""Run manifests: versions, seed, command, options, plan summary, timings, metrics."""
from __future__ import annotations

import datetime as _dt
import os
import platform

import torch


def versions() -> dict:
    import transformers

    from .._version import __version__

    v = {"layerwise": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__}
    try:
        import safetensors

        v["safetensors"] = safetensors.__version__
    except (ImportError, AttributeError):
        pass
    return v


# Set by the CLI entry point for the duration of one command, so a manifest records the
# command line the user typed (sys.argv is the test runner's under pytest, or absent in the API).
CURRENT_COMMAND: str | None = None


def machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def build_manifest(kind: str, options: dict, seed: int | None, timings: dict | None = None,
                   metrics: dict | None = None, plan_summary: dict | None = None,
                   command: str | None = None) -> dict:
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else CURRENT_COMMAND,
        "options": options,
        "seed": seed,
        "versions": versions(),
        "machine": machine(),
        "plan": plan_summary or {},
        "timings": timings or {},
        "metrics": metrics or {},
    }
