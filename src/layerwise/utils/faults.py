"""Fault injection for the reliability tests: `LAYERWISE_FAULT=WHERE:N:ACTION`.

WHERE is `block` (a block-by-block pass has finished and checkpointed N blocks) or `step` (training
has finished and checkpointed N steps). ACTION is a signal sent to this very process (`KILL`, `TERM`,
`INT`, `HUP`) or `stop` (KeyboardInterrupt without a signal). Deterministic: the fault fires at a
point of the computation, never after a wall-clock delay.
"""
from __future__ import annotations

import os
import signal


def fault_point(where: str, n: int) -> None:
    spec = os.environ.get("LAYERWISE_FAULT")
    if not spec:
        return
    try:
        w, k, action = spec.split(":")
        k = int(k)
    except ValueError:
        return
    if w != where or k != n:
        return
    if action == "stop":
        raise KeyboardInterrupt(f"stopped after {where} {n} (LAYERWISE_FAULT)")
    os.kill(os.getpid(), getattr(signal, "SIG" + action.upper()))
