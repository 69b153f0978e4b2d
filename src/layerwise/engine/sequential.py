"""The block-by-block engine.

For each block: collect input statistics of its linears over the calibration batches (one pass of
the still-dense block), run the block's action (prune, quantize, ...), then feed the *compressed*
block's outputs to the next block (`propagate="pruned"`, the default of Wanda/SparseGPT) or the
dense outputs from the first pass (`propagate="dense"`). Only one block needs to be materialized.
After each block an atomic checkpoint (next block, propagated activations, plan rows) lets a killed
run resume at the last finished block with the same result.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..console import progress_bar
from ..errors import ConfigError
from ..models.adapters import StopForward
from ..utils.faults import fault_point
from .capture import BlockBatch, capture_block_inputs, check_finite
from .stats import InputStats, StatsCollector
from .store import BlockStore, trim_heap

PROPAGATE = ("pruned", "dense")
STATE_FILE = "engine_state.pt"


@dataclass
class Timings:
    capture_s: float = 0.0
    forward_s: float = 0.0      # block forward passes (statistics pass without hook time + propagation)
    stats_s: float = 0.0        # time inside the statistics hooks
    solve_s: float = 0.0        # the action itself (mask selection, OBS updates, rounding, ...)
    io_s: float = 0.0           # loading / writing blocks and checkpoints
    total_s: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BlockWork:
    """What an action receives for one block."""

    index: int
    block: torch.nn.Module
    linears: list            # list[LinearRef] selected for this block
    stats: dict[str, InputStats]
    batches: list[BlockBatch]


Action = Callable[[BlockWork], list[dict]]


@dataclass
class EngineResult:
    rows: list[dict] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    final_hidden: list[torch.Tensor] | None = None
    resumed_from: int = 0
    propagate: str = "pruned"
    probe_ids: torch.Tensor | None = None     # a short input carried through every compressed block ...
    probe_hidden: torch.Tensor | None = None  # ... and its last-block output, which a reload must reproduce


class Checkpointer:
    def __init__(self, directory: Path, fingerprint: str, name: str = STATE_FILE):
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        self.name = name

    @property
    def path(self) -> Path:
        return self.dir / self.name

    def for_tower(self, tower: str) -> "Checkpointer":
        """The state of one tower's sweep (a multi-tower run resumes tower by tower)."""
        return Checkpointer(self.dir, self.fingerprint, STATE_FILE.replace(".pt", f".{tower}.pt"))

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"the partial run in {self.dir} was started with other options; "
                              "rerun with the same options or without --resume")
        return state

    def save(self, next_block: int, hidden: list[torch.Tensor], rows: list[dict], timings: Timings,
             before: list | None = None, probe: torch.Tensor | None = None) -> None:
        tmp = self.dir / f".{self.name}.tmp"
        torch.save({"fingerprint": self.fingerprint, "next_block": next_block, "hidden": hidden,
                    "rows": rows, "timings": timings.to_dict(), "before": before or [], "probe": probe}, tmp)
        os.replace(tmp, self.path)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class Pass:
    """A stage that runs before the main action in the same block-by-block sweep (a fused recipe).

    It keeps its own activation stream: on each block it collects statistics from *its* stream
    with the block as the earlier passes left it, applies its action, then propagates its stream
    through the block. So pass k sees exactly what a separate run of stage k on the output of
    stages < k would see, and a fused run gives the same weights as the stages run one by one.
    """

    action: Action
    select: Callable[[str], bool] = lambda name: True
    gram: bool = True
    gram_limit: int | None = None
    first_moment: bool = False
    second_moment: bool = True
    rows: list = field(default_factory=list)
    hidden: list | None = None


def _statistics(adapter, block, i, refs, hiddens, batches, gram, gram_limit, first_moment, keep, timings,
                second_moment=True):
    """One forward of `block` over every calibration batch with statistics hooks on `refs`."""
    outs: list[torch.Tensor] = []
    t0 = time.perf_counter()
    with StatsCollector(refs, gram=gram, gram_limit=gram_limit, first_moment=first_moment, second_moment=second_moment,
                        stop_early=not keep) as coll:
        for h, b in zip(hiddens, batches):
            try:
                out = adapter.call_block(block, h, b.args, b.kwargs)
            except StopForward:      # the statistics are complete; the output is not needed
                out = None
            else:
                check_finite(out, f"leaving block {i}")
            coll.end_batch()
            if keep:
                outs.append(out)
    timings.stats_s += coll.seconds
    timings.forward_s += time.perf_counter() - t0 - coll.seconds
    return coll.stats, outs


def _propagate(adapter, block, i, hiddens, batches, timings) -> list[torch.Tensor]:
    t0 = time.perf_counter()
    new = [adapter.call_block(block, h, b.args, b.kwargs) for h, b in zip(hiddens, batches)]
    timings.forward_s += time.perf_counter() - t0
    for h in new:
        check_finite(h, f"leaving block {i}")
    return new


def _run_pass(p: Pass, adapter, block, i, batches, timings) -> None:
    refs = [r for r in adapter.linears(i, block) if p.select(r.name)]
    if refs:
        stats, _ = _statistics(adapter, block, i, refs, p.hidden, batches, p.gram, p.gram_limit, p.first_moment,
                               False, timings, p.second_moment)
        t0 = time.perf_counter()
        p.rows.extend(p.action(BlockWork(i, block, refs, stats, batches)))
        timings.solve_s += time.perf_counter() - t0
    p.hidden = _propagate(adapter, block, i, p.hidden, batches, timings)


def _resume(checkpointer, store, batches, before, res, probe) -> int:
    state = checkpointer.load()
    if state is None:
        return 0
    start = state["next_block"]
    if probe is not None:
        probe.hidden = state.get("probe")
    res.rows = state["rows"]
    res.timings = Timings(**state["timings"])
    for b, h in zip(batches, state["hidden"]):
        b.hidden = h
    for p, (hidden, rows) in zip(before, state.get("before", [])):
        p.hidden, p.rows = hidden, rows
    t0 = time.perf_counter()
    for i in range(start):
        store.restore_block(i)
    res.timings.io_s += time.perf_counter() - t0
    res.resumed_from = start
    return start


def run_sequential(store: BlockStore, samples: torch.Tensor, action: Action, *,
                   select: Callable[[str], bool] = lambda name: True, gram: bool = True,
                   gram_limit: int | None = None, first_moment: bool = True, second_moment: bool = True,
                   propagate: str = "pruned", batch_size: int = 8, checkpointer: Checkpointer | None = None,
                   description: str = "compress",
                   observe: Callable[[int, list, list], None] | None = None,
                   propagate_last: bool = True, before: list[Pass] | tuple = (),
                   probe: torch.Tensor | None = None) -> EngineResult:
    """Run `action` on every block, after the `before` passes of a fused recipe (each on its own
    stream). `observe(i, inputs, outputs)` sees each block's input and output hidden states (lists
    over calibration batches) after the action. `probe` (model inputs) is carried through every
    block as compressed, in a batch of its own: `res.probe_hidden` is what a reload of the result
    must compute on it, checked at the cost of a short input instead of a calibration batch."""
    if propagate not in PROPAGATE:
        raise ConfigError(f"propagate must be one of {', '.join(PROPAGATE)} (got {propagate!r})")
    adapter = store.adapter
    res = EngineResult()
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    batches = capture_block_inputs(store.model, adapter, samples, batch_size)
    res.timings.capture_s = time.perf_counter() - t0
    for p in before:
        p.hidden = [b.hidden for b in batches]
    pb = capture_block_inputs(store.model, adapter, probe, probe.shape[0])[0] if probe is not None else None
    start = _resume(checkpointer, store, batches, before, res, pb) if checkpointer is not None else 0
    n = adapter.num_blocks
    with torch.no_grad(), progress_bar() as prog:
        task = prog.add_task(description, total=n, completed=start, info="")
        for i in range(start, n):
            t0 = time.perf_counter()
            block = store.load_block(i)
            res.timings.io_s += time.perf_counter() - t0
            for p in before:
                _run_pass(p, adapter, block, i, batches, res.timings)
            refs = [r for r in adapter.linears(i, block) if select(r.name)]
            prog.update(task, info=f"block {i}: statistics")
            stats, dense_out = _statistics(adapter, block, i, refs, [b.hidden for b in batches], batches, gram,
                                           gram_limit, first_moment, propagate == "dense", res.timings,
                                           second_moment)
            prog.update(task, info=f"block {i}: solve")
            trim_heap()     # the statistics pass's freed activations, before the solve's matrices
            t0 = time.perf_counter()
            res.rows.extend(action(BlockWork(i, block, refs, stats, batches)) if refs else [])
            res.timings.solve_s += time.perf_counter() - t0
            del stats
            trim_heap()
            if i == n - 1 and not propagate_last and observe is None:
                new = [b.hidden for b in batches]   # nothing reads the last block's output
            elif propagate == "pruned":
                new = _propagate(adapter, block, i, [b.hidden for b in batches], batches, res.timings)
            else:
                new = dense_out
            if observe is not None:
                observe(i, [b.hidden for b in batches], new)
            for b, h in zip(batches, new):
                b.hidden = h
            if pb is not None and pb.hidden is not None:
                pb.hidden = _propagate(adapter, block, i, [pb.hidden], [pb], res.timings)[0]
            t0 = time.perf_counter()
            store.release_block(i)
            if checkpointer is not None:
                checkpointer.save(i + 1, [b.hidden for b in batches], res.rows, res.timings,
                                  [(p.hidden, p.rows) for p in before], pb.hidden if pb is not None else None)
            res.timings.io_s += time.perf_counter() - t0
            prog.advance(task)
            if i + 1 < n:
                fault_point("block", adapter.block_offset + i + 1)
    res.final_hidden = [b.hidden for b in batches]
    if pb is not None and pb.hidden is not None:
        res.probe_ids, res.probe_hidden = probe, pb.hidden
    res.timings.total_s += time.perf_counter() - t_all
    return res


def run_towers(store: BlockStore, samples, action: Action, *, checkpointer: Checkpointer | None = None,
               description: str = "compress", observe: Callable[[int, list, list], None] | None = None,
               **kwargs) -> EngineResult:
    """`run_sequential` over every tower of the store's model, one after another in forward order
    (each tower's first-block inputs captured through the model with the earlier towers already
    rewritten). Block numbers seen by `action` and `observe` are global (`tower.block_offset + i`)."""
    towers = store.adapter.towers()
    if len(towers) == 1:
        return run_sequential(store, samples, action, checkpointer=checkpointer, description=description,
                              observe=observe, **kwargs)
    res = EngineResult()
    for t in towers:
        off = t.block_offset

        def act(work: BlockWork, off=off) -> list[dict]:
            work.index += off
            return action(work)

        obs = (lambda i, a, b, off=off: observe(off + i, a, b)) if observe is not None else None
        with store.scoped(t):
            part = run_sequential(store, samples, act, observe=obs, description=f"{description} [{t.tower_name}]",
                                  checkpointer=checkpointer.for_tower(t.tower_name) if checkpointer else None,
                                  **kwargs)
        res.rows.extend(part.rows)
        for k, v in part.timings.to_dict().items():
            setattr(res.timings, k, getattr(res.timings, k) + v)
        res.resumed_from += part.resumed_from
        res.final_hidden, res.propagate = part.final_hidden, part.propagate
        res.probe_ids, res.probe_hidden = part.probe_ids, part.probe_hidden
    return res
