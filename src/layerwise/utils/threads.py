from __future__ import annotations

import os

import torch


def configure_threads(n: int | None = None) -> int:
    """Use all cores unless LAYERWISE_THREADS says otherwise; return the count in use."""
    if n is None:
        env = os.environ.get("LAYERWISE_THREADS")
        n = int(env) if env else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()
