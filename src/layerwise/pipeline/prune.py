"""`layerwise prune`: calibrate, plan, prune block by block, export, verify."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..engine import Pass
from ..engine.sequential import BlockWork
from ..errors import ConfigError
from ..models.adapters import compile_patterns, name_matches
from ..scores.base import SCORES
from ..plan import Plan, PlanRow
from ..prune import PRUNERS, Budget, check_sparsity, get_pruner, nm_str, parse_nm
from .blockwise import BlockwiseStage, Run, run_stage
from .output import evaluate_saved, perplexity_of


# Methods without a Hessian estimate the plan's reconstruction error from this many calibration tokens
# (one batch of 8 × 256): the Gram matrix over all tokens would cost more than the pruning itself.
RECON_TOKENS = 2048


@dataclass
class PruneResult:
    plan: Plan
    out: Path | None
    model: nn.Module | None
    timings: dict
    metrics: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


def uniform_plan(linears, method: str, sparsity: float, nm: tuple | None) -> Plan:
    rows = [PlanRow(name=r.name, block=r.block, shape=r.shape, sparsity=0.0 if nm else sparsity,
                    pattern=nm_str(nm), method=method) for r in linears]
    return Plan(rows, {"allocation": "uniform", "target_sparsity": (1 - nm[0] / nm[1]) if nm else sparsity,
                       "method": method, "pattern": nm_str(nm)})


def select_linears(adapter, targets: list[str] | None, ignore: list[str] | None):
    inc = compile_patterns(targets)
    exc = compile_patterns(ignore)
    all_lin = adapter.all_linears()
    chosen = [r for r in all_lin if (not inc or name_matches(r.name, inc)) and not name_matches(r.name, exc)]
    if not chosen:
        what = f"--targets {' '.join(targets)}" if targets else "the selection"
        raise ConfigError(f"{what} matches no linear layer inside the blocks "
                          f"(e.g. {all_lin[0].name if all_lin else 'none'})")
    for pat, raw in zip(inc, targets or []):
        if not any(name_matches(r.name, [pat]) for r in all_lin):
            raise ConfigError(f"target pattern {raw!r} matches no linear layer inside the blocks")
    return chosen


def make_prune_action(plan: Plan, pruners: dict):
    rows = plan.by_name()

    def action(work: BlockWork) -> list[dict]:
        done = []
        for ref in work.linears:
            row = rows[ref.name]
            t0 = time.perf_counter()
            budget = Budget(row.sparsity, parse_nm(row.pattern) if row.pattern != "unstructured" else None)
            W = ref.weight.detach().float().clone()
            st = work.stats[ref.name]
            out = pruners[row.method].prune(W, st, budget)
            ref.set_weight(out.weight)
            Wn = ref.weight.detach()
            row.recon_error = st.recon_error(W, Wn)
            row.zeros_planned = budget.planned_zeros(ref.shape)
            row.zeros = int((Wn == 0).sum())
            row.damping = out.info.get("damping")
            row.seconds = time.perf_counter() - t0
            done.append(row.to_dict())
        return done

    return action


def allocate_on(store, plan: Plan, samples, allocation: str, allocation_params: dict | None, sparsity: float,
                max_sparsity: float, batch_size: int, seed: int, model_name: str) -> None:
    """Score the blocks the allocator needs (a read-only pass over the store) and fill the plan."""
    from ..allocate import allocate, get_allocator
    from ..scores.analyze import analyze_store

    names = {r.name for r in plan.rows}
    store.writing = False
    alloc = get_allocator(allocation)
    an = analyze_store(store, samples, list(alloc.scores), select=lambda n: n in names, batch_size=batch_size,
                       seed=seed, model_name=model_name, keep_eigs=False,
                       esd_opts=alloc(allocation_params or {}).esd_options())
    store.writing = True
    allocate(allocation, plan, an.block_scores, sparsity, max_sparsity, **(allocation_params or {}))


def prune_pass(plan: Plan) -> Pass:
    """The engine pass that applies a pruning plan (alone, or fused before another stage)."""
    pruners = {m: get_pruner(m) for m in {r.method for r in plan.rows}}
    # Every method reports its reconstruction error, which needs the Gram matrix; only
    # Hessian-based methods need it from every calibration token.
    hessian = any(pruners[m].needs_gram for m in pruners)
    # Σx² is what the activation-aware scores (Wanda) read; magnitude reads nothing, Hessian methods H
    norms = any("calibration" in p.needs and not p.needs_gram for p in pruners.values())
    selected = {r.name for r in plan.rows}
    return Pass(make_prune_action(plan, pruners), select=lambda n: n in selected, gram=True,
                gram_limit=None if hessian else RECON_TOKENS, first_moment=False, second_moment=norms)


class PruneStage(BlockwiseStage):
    """Sparsify the selected linears by a plan of per-layer budgets (uniform or allocated)."""

    kind = "prune"
    planning_time = "allocation_s"

    def __init__(self, method: str = "wanda", sparsity: float = 0.5, nm=None, targets=None, ignore=None,
                 allocation: str = "uniform", allocation_params: dict | None = None, max_sparsity: float = 0.99,
                 propagate: str = "pruned"):
        self.method, self.sparsity, self.nm, self.targets, self.ignore = method, sparsity, nm, targets, ignore
        self.allocation, self.allocation_params = allocation, allocation_params or {}
        self.max_sparsity, self.propagate = max_sparsity, propagate

    def check(self) -> None:
        from ..allocate import get_allocator

        PRUNERS.get(self.method)
        self.nm_t = parse_nm(self.nm)
        self.sparsity = check_sparsity(self.sparsity)
        if self.propagate not in ("pruned", "dense"):
            raise ConfigError(f"--propagate must be pruned or dense (got {self.propagate!r})")
        self.alloc = get_allocator(self.allocation)
        if self.allocation != "uniform" and self.nm_t is not None:
            raise ConfigError(f"allocation '{self.allocation}' works with unstructured sparsity, not --nm")
        if not 0 < self.max_sparsity < 1:
            raise ConfigError(f"--max-sparsity must be in (0, 1) (got {self.max_sparsity:g})")
        if self.sparsity > self.max_sparsity:
            raise ConfigError(f"target sparsity {self.sparsity:g} exceeds --max-sparsity {self.max_sparsity:g}")
        self.alloc(self.allocation_params)   # validates the allocator's options

    def whole_model(self) -> bool:
        return any("whole_model" in SCORES[s].needs for s in self.alloc.scores)

    def plans_without_data(self) -> bool:
        return self.allocation == "uniform"

    def validate(self, plan: Plan, shapes: dict) -> None:
        plan.validate(shapes, set(PRUNERS))

    def new_plan(self, store, samples, spec, *, batch_size, seed, fused):
        if fused and not self.plans_without_data():
            raise ConfigError(f"a prune stage fused after another cannot allocate by '{self.allocation}' (the "
                              "scores would need the earlier stage's output): use uniform allocation")
        plan = uniform_plan(select_linears(store.adapter, self.targets, self.ignore), self.method, self.sparsity,
                            self.nm_t)
        if self.allocation != "uniform":
            allocate_on(store, plan, samples, self.allocation, self.allocation_params, self.sparsity,
                        self.max_sparsity, batch_size, seed, spec)
        return plan

    def make_pass(self, plan, store, partial):
        return prune_pass(plan)

    def options(self) -> dict:
        return {"method": self.method, "sparsity": self.sparsity, "nm": nm_str(self.nm_t),
                "allocation": self.allocation, "allocation_params": self.allocation_params,
                "propagate": self.propagate, "targets": self.targets, "ignore": self.ignore}

    def row_key(self, row) -> tuple:
        return row.name, row.sparsity, row.pattern, row.method

    def label(self) -> str:
        return f"{self.method} {nm_str(self.nm_t) if self.nm_t else f'{self.sparsity:.0%}'}"

    def description(self) -> str:
        return self.label()

    def finish(self, run: Run) -> "PruneResult":
        run.options["allocation"] = run.plan.meta.get("allocation", self.allocation)
        return _result(run, title=f"{self.label()} on {run.src.spec}")


def prune(model, *, method: str = "wanda", sparsity: float = 0.5, nm=None, calib: str = "stdlib",
          nsamples: int = 128, seqlen: int = 256, seed: int = 0, targets: list[str] | None = None,
          ignore: list[str] | None = None, plan: str | Plan | None = None, allocation: str = "uniform",
          out: str | Path | None = None, overwrite: bool = False, resume: bool = False, overwrite_source: bool = False,
          propagate: str = "pruned", batch_size: int | None = None, stream: bool | None = None, tokenizer=None,
          evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
          max_sparsity: float = 0.99, allocation_params: dict | None = None,
          before: list[dict] | None = None) -> PruneResult:
    """Prune `model` layer by layer. Returns the plan (with what was done), and the model when it
    was processed in memory. With `out`, writes a reloadable checkpoint + plan + manifest + report.
    `before`: options of prune stages fused into the same sweep."""
    stage = PruneStage(method, sparsity, nm, targets, ignore, allocation, allocation_params, max_sparsity, propagate)
    return run_stage(stage, model, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, plan=plan, out=out,
                     overwrite=overwrite, resume=resume, overwrite_source=overwrite_source, batch_size=batch_size,
                     stream=stream, tokenizer=tokenizer, evaluate=evaluate, eval_windows=eval_windows,
                     command=command, before=[PruneStage(**o) for o in before or []])


def _result(run: Run, title: str) -> PruneResult:
    """Evaluate, write (verified) and report one pruning run."""
    from ..io import build_manifest

    plan, metrics, timings = run.plan, run.metrics, run.timings
    plan.meta.update({"measured_sparsity": plan.measured_sparsity()})
    plan_summary = {"linears": len(plan), "parameters": plan.total_params,
                    "planned_sparsity": plan.mean_sparsity(), "measured_sparsity": plan.measured_sparsity()}
    result_model = run.store.model if run.store.fully_in_memory else None
    if run.evaluate and result_model is not None:
        metrics["perplexity"] = perplexity_of(run.src, result_model, run.eval_windows)
    timings["total_s"] = time.perf_counter() - run.t_start
    manifest = build_manifest("prune", run.options, run.seed, timings, metrics, plan_summary, run.command)
    measure = (lambda d: evaluate_saved(run.src, d, metrics, manifest, run.eval_windows)) \
        if run.evaluate and result_model is None else None
    out_path = run.output.finish(run.store, run.src, plan, manifest, run.res, run.samples[:2], title=title,
                                 before_manifest=measure) if run.output else None
    return PruneResult(plan, out_path, result_model, timings, metrics, manifest)
