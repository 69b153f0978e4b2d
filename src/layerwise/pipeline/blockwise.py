"""One driver for every stage that rewrites linears block by block (prune, quantize, and those to come).

A stage says only what is its own: how to check its options, build its Plan (budgets, allocation),
turn the Plan into an engine `Pass`, key the Plan's rows for the resume fingerprint, and write its
result. The driver does the rest the same way for every stage: the guarded output directory, the
model source (streamed or in memory), calibration data, plan replay and resume, earlier stages fused
into the same sweep (each on its own activation stream), the sequential engine, and the dense
baseline of an evaluation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..engine import Checkpointer, InMemoryStore, LazyStore, Pass, fingerprint, run_towers
from ..errors import ConfigError
from ..io.artifacts import input_paths
from ..models.adapters.towers import whole_model_dir
from ..plan import Plan
from ..utils.hf import quiet
from .output import OutputDir, apply_resumed_rows, guarded, perplexity_of
from .source import calibration_inputs, model_dir, resolve


class BlockwiseStage:
    """What one block-by-block stage contributes to a run."""

    kind: ClassVar[str] = ""
    propagate: str = "pruned"           # which activations feed the next block: the rewritten or the dense
    planning_time: ClassVar[str] = "allocation_s"

    def check(self) -> None:
        """Everything checkable before the model or the disk is touched."""

    def whole_model(self) -> bool:
        """True when building the plan needs the whole model in memory (a loss-based score)."""
        return False

    def plans_without_data(self) -> bool:
        """True when the plan needs no analysis of the model (so the stage may join an earlier stage's
        sweep, whose output it would otherwise have to analyse)."""
        return False

    def validate(self, plan: Plan, shapes: dict) -> None:
        """A replayed plan must fit this stage and this model."""
        raise NotImplementedError

    def new_plan(self, store, samples, spec: str, *, batch_size: int, seed: int, fused: bool) -> Plan:
        """The stage's plan for this model (budgets allocated); `fused`: earlier stages share the sweep
        (then the plan must not analyse the model, which is not yet what this stage will see)."""
        raise NotImplementedError

    def make_pass(self, plan: Plan, store, partial: Path | None) -> Pass:
        """The engine pass that applies the plan; may attach writers to the store."""
        raise NotImplementedError

    def options(self) -> dict:
        """The stage's options, for the manifest and the resume fingerprint."""
        raise NotImplementedError

    def row_key(self, row) -> tuple:
        """What of a plan row decides the weights (the resume fingerprint)."""
        raise NotImplementedError

    def description(self) -> str:
        return self.kind

    def finish(self, run: "Run"):
        """Evaluate, write (verified) and report; returns the stage's result."""
        raise NotImplementedError


@dataclass
class Run:
    """What the driver produced, handed to the stage that writes the result."""

    stage: BlockwiseStage
    store: Any
    src: Any
    output: OutputDir | None
    plan: Plan
    res: Any
    samples: Any
    options: dict
    t_start: float
    seed: int
    evaluate: bool
    eval_windows: int
    command: str | None
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


PROBE_TOKENS = 64
BATCH_TOKENS = 2048


def default_batch(seqlen: int) -> int:
    """Calibration sequences per block forward when none is given: 8, or fewer so that a batch holds
    at most 2048 tokens. The MLP's intermediate activations of one batch are the largest transient of
    a streamed run (4 × tokens × MLP width floats: 320 MB for 4096 tokens at the 0.5B shape); below
    about 1024 tokens per batch the matrix products stop getting faster on a CPU."""
    return max(1, min(8, BATCH_TOKENS // max(1, seqlen)))


def verification_probe(samples: torch.Tensor) -> torch.Tensor:
    """What a streamed result is checked on after it is written: the first calibration sequence, cut to
    64 tokens. The engine carries it through every compressed block in a batch of its own, so the
    reload check costs a short forward instead of a calibration batch's (a quarter of a forward
    pass over the calibration set at the 0.5B shape)."""
    p = samples[:1]
    return p[:, :PROBE_TOKENS] if p.ndim == 2 and not p.is_floating_point() else p


def check_calibration(nsamples: int, seqlen: int, batch_size: int) -> None:
    if nsamples < 1 or seqlen < 2 or batch_size < 1:
        raise ConfigError("--nsamples and --batch-size must be >= 1 and --seqlen >= 2")


def _check_positions(config, seqlen: int) -> None:
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if max_pos and seqlen > max_pos:
        raise ConfigError(f"--seqlen {seqlen} exceeds the model's {max_pos} positions")


def run_stage(stage: BlockwiseStage, model, *, calib="stdlib", nsamples: int = 128, seqlen: int = 256,
              seed: int = 0, plan=None, out=None, overwrite: bool = False, resume: bool = False,
              overwrite_source: bool = False, batch_size: int | None = None, stream: bool | None = None, tokenizer=None,
              evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
              before: list[BlockwiseStage] = ()):
    """Run `stage` on `model` block by block, after the `before` stages fused into the same sweep."""
    quiet()
    t_start = time.perf_counter()
    for s in (*before, stage):
        s.check()
    if batch_size is None:
        batch_size = default_batch(seqlen)
    check_calibration(nsamples, seqlen, batch_size)
    output = OutputDir(out, overwrite=overwrite, resume=resume, overwrite_source=overwrite_source,
                       model_path=model_dir(model),
                       inputs=input_paths(model_dir(model), tokenizer, plan, calib)) if out is not None else None
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    # A multi-tower model (dual encoder, vision-language) is compressed in memory: the capture of a
    # later tower runs the whole model, earlier towers included.
    in_memory = (plan is None and stage.whole_model()) or whole_model_dir(model_dir(model))
    src = resolve(model, tokenizer, load=not (stream is not False and out is not None) or in_memory)
    with guarded(output):
        return _run(stage, src, output, plan, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed,
                    resume=resume, batch_size=batch_size, evaluate=evaluate, eval_windows=eval_windows,
                    command=command, before=before, t_start=t_start)


def _run(stage, src, output, plan, *, calib, nsamples, seqlen, seed, resume, batch_size, evaluate, eval_windows,
         command, before, t_start):
    from .source import calib_name

    use_stream = src.loaded is None
    partial = output.begin() if output is not None else None
    store = LazyStore(src.path, partial) if use_stream else InMemoryStore(src.loaded.model, partial, all_towers=True)
    _check_positions(getattr(store.model, "config", None), seqlen)
    replay = plan is not None
    if replay:
        stage.validate(plan, {r.name: r.shape for r in store.adapter.all_linears()})
    samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed, src.spec, store.adapter)
    before_plans = [s.new_plan(store, samples, src.spec, batch_size=batch_size, seed=seed, fused=k > 0)
                    for k, s in enumerate(before)]
    t0 = time.perf_counter()
    if not replay and resume and output is not None and output.partial_has_state():
        plan = Plan.load(output.partial / "plan_in_progress.json")
    elif not replay:
        plan = stage.new_plan(store, samples, src.spec, batch_size=batch_size, seed=seed, fused=bool(before))
    t_plan = time.perf_counter() - t0
    if output is not None:
        plan.save(output.partial / "plan_in_progress.json")
    main = stage.make_pass(plan, store, partial)
    options = {"model": src.spec, **stage.options(), "calib": calib_name(calib), "nsamples": nsamples,
               "seqlen": seqlen, "seed": seed, "batch_size": batch_size, "streamed": use_stream}
    if before:
        options["before"] = [s.options() for s in before]
    ckpt = Checkpointer(partial, fingerprint({"options": options, "plan": [stage.row_key(r) for r in plan.rows]})) \
        if partial else None
    metrics: dict = {"perplexity_dense": perplexity_of(src, None, eval_windows)} if evaluate else {}
    res = run_towers(store, samples, main.action, select=main.select, gram=main.gram,
                         gram_limit=main.gram_limit, first_moment=main.first_moment,
                         second_moment=main.second_moment, propagate=stage.propagate,
                         batch_size=batch_size, checkpointer=ckpt, description=stage.description(),
                         propagate_last=False,
                         before=[s.make_pass(p, store, None) for s, p in zip(before, before_plans)],
                         probe=verification_probe(samples) if use_stream and output is not None else None)
    if before_plans:
        plan.meta["before"] = [p.to_dict() for p in before_plans]
    apply_resumed_rows(plan, res)
    res.propagate = stage.propagate
    run = Run(stage, store, src, output, plan, res, samples, options, t_start, seed, evaluate, eval_windows, command,
              metrics, {**res.timings.to_dict(), stage.planning_time: t_plan})
    return stage.finish(run)
