"""Fitting linear stand-ins (`models.standin`): h ↦ h + W h + b in place of a contiguous run of blocks.

PPCL's cheapest replacement (its `block_proj`): fitted in closed form by ridge regression from the
interval's input states to its update (teacher output − input) over calibration tokens, in float64
(the spec's Appendix B, not the reference's per-batch lstsq that keeps only the last batch), then
optionally fine-tuned with the same cosine alignment as a block student. It ignores every side input
(masks, rotary tables, timestep and class embeddings): whatever the run of blocks did depending on
them, the stand-in can only approximate on average — which the benchmarks measure.
"""
from __future__ import annotations

import torch
from torch import nn

from ..engine.capture import capture_block_inputs
from ..models.standin import LinearStandIn
from ..scores.probes import ridge_fit


@torch.no_grad()
def fit_standins(teacher: nn.Module, adapter, intervals: list[tuple[int, int]], samples, batch_size: int = 8,
                 eps: float = 1e-3) -> dict[str, LinearStandIn]:
    """One ridge-fitted stand-in per interval (s, e), from the teacher's h_s to h_{e+1} − h_s."""
    blocks = adapter.block_list()
    starts = {s: e for s, e in intervals}
    ends = {e: s for s, e in intervals}
    last = max(e for _, e in intervals)
    xs: dict[int, list] = {s: [] for s, _ in intervals}
    ys: dict[int, list] = {s: [] for s, _ in intervals}
    for batch in capture_block_inputs(teacher, adapter, samples, batch_size):
        h, open_ = batch.hidden, {}
        for i in range(last + 1):
            if i in starts:
                open_[i] = h
            h = adapter.call_block(blocks[i], h, batch.args, batch.kwargs)
            if i in ends:
                x = open_.pop(ends[i])
                xs[ends[i]].append(x.reshape(-1, x.shape[-1]))
                ys[ends[i]].append((h - x).reshape(-1, x.shape[-1]))
    out = {}
    for s, e in intervals:
        X, Y = torch.cat(xs[s]), torch.cat(ys[s])
        W, b = ridge_fit(X, Y, eps)
        st = LinearStandIn(X.shape[1])
        st.proj.weight.copy_(W.float())
        st.proj.bias.copy_(b.float())
        out[f"{s}-{e}"] = st
    return out
