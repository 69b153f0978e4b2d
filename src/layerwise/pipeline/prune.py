"""`layerwise prune`: calibrate, plan, prune block by block, export, verify."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..engine import Checkpointer, InMemoryStore, LazyStore, Pass, fingerprint, run_sequential
from ..engine.sequential import BlockWork
from ..engine.stats import relative_recon_error
from ..errors import ConfigError
from ..models.adapters import compile_patterns, name_matches
from ..scores.base import SCORES
from ..plan import Plan, PlanRow
from ..prune import PRUNERS, Budget, check_sparsity, get_pruner, nm_str, parse_nm
from ..utils.hf import quiet
from .output import OutputDir, apply_resumed_rows, evaluate_saved, guarded, perplexity_of
from ..io.artifacts import input_paths
from .source import calib_name, calibration_inputs, model_dir, resolve


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
            Wn = ref.weight.detach().double()
            if st.H is not None:
                row.recon_error = relative_recon_error(W, Wn, st.H)
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
    selected = {r.name for r in plan.rows}
    return Pass(make_prune_action(plan, pruners), select=lambda n: n in selected, gram=True,
                gram_limit=None if hessian else RECON_TOKENS, first_moment=False)


def fused_prune_plan(store, samples, spec: str, *, method: str = "wanda", sparsity: float = 0.5, nm=None,
                     targets=None, ignore=None, allocation: str = "uniform", allocation_params: dict | None = None,
                     max_sparsity: float = 0.99, batch_size: int = 8, seed: int = 0) -> Plan:
    """The plan of a prune stage that runs fused before another stage on the same store."""
    PRUNERS.get(method)
    nm_t = parse_nm(nm)
    sparsity = check_sparsity(sparsity)
    plan = uniform_plan(select_linears(store.adapter, targets, ignore), method, sparsity, nm_t)
    if allocation != "uniform":
        allocate_on(store, plan, samples, allocation, allocation_params, sparsity, max_sparsity, batch_size, seed,
                    spec)
    return plan


def prune(model, *, method: str = "wanda", sparsity: float = 0.5, nm=None, calib: str = "stdlib",
          nsamples: int = 128, seqlen: int = 256, seed: int = 0, targets: list[str] | None = None,
          ignore: list[str] | None = None, plan: str | Plan | None = None, allocation: str = "uniform",
          out: str | Path | None = None, overwrite: bool = False, resume: bool = False, overwrite_source: bool = False,
          propagate: str = "pruned", batch_size: int = 8, stream: bool | None = None, tokenizer=None,
          evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
          max_sparsity: float = 0.99, allocation_params: dict | None = None) -> PruneResult:
    """Prune `model` layer by layer. Returns the plan (with what was done), and the model when it
    was processed in memory. With `out`, writes a reloadable checkpoint + plan + manifest + report."""
    quiet()
    t_start = time.perf_counter()
    nm_t, sparsity, alloc = _check_options(method, nm, sparsity, nsamples, seqlen, batch_size, propagate, allocation,
                                           max_sparsity, allocation_params)
    output = OutputDir(out, overwrite=overwrite, resume=resume, overwrite_source=overwrite_source,
                       model_path=model_dir(model),
                       inputs=input_paths(model_dir(model), tokenizer, plan, calib)) if out is not None else None
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    needs_memory = plan is None and any("whole_model" in SCORES[s].needs for s in alloc.scores)
    src = resolve(model, tokenizer, load=not (stream is not False and out is not None) or needs_memory)
    use_stream = src.loaded is None
    with guarded(output):
        partial = output.begin() if output is not None else None
        store = (LazyStore(src.path, partial) if use_stream else InMemoryStore(src.loaded.model, partial))
        adapter = store.adapter
        shapes = {r.name: r.shape for r in adapter.all_linears()}
        replay = plan is not None
        if plan is None:
            chosen = select_linears(adapter, targets, ignore)
            plan = uniform_plan(chosen, method, sparsity, nm_t)
        else:
            plan.validate(shapes, set(PRUNERS))
        _check_positions(getattr(store.model, "config", None), seqlen)
        samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed, src.spec)
        t_alloc = 0.0
        if not replay and allocation != "uniform" and not (resume and output and output.partial_has_state()):
            t0 = time.perf_counter()
            allocate_on(store, plan, samples, allocation, allocation_params, sparsity, max_sparsity, batch_size,
                        seed, src.spec)
            t_alloc = time.perf_counter() - t0
        elif resume and output and output.partial_has_state() and allocation != "uniform" and not replay:
            plan = Plan.load(output.partial / "plan_in_progress.json")
        if output is not None and not replay:
            plan.save(output.partial / "plan_in_progress.json")
        ppass = prune_pass(plan)
        metrics: dict = {"perplexity_dense": perplexity_of(src, None, eval_windows)} if evaluate else {}
        options = {"model": src.spec, "method": method, "sparsity": sparsity, "nm": nm_str(nm_t),
                   "allocation": plan.meta.get("allocation", allocation),
                   "allocation_params": allocation_params or {}, "calib": calib_name(calib), "nsamples": nsamples,
                   "seqlen": seqlen, "seed": seed, "propagate": propagate, "batch_size": batch_size,
                   "targets": targets, "ignore": ignore, "streamed": use_stream}
        ckpt = Checkpointer(partial, fingerprint({"options": options, "plan": [
            (r.name, r.sparsity, r.pattern, r.method) for r in plan.rows]})) if partial else None
        res = run_sequential(store, samples, ppass.action, select=ppass.select,
                             gram=True, gram_limit=ppass.gram_limit, first_moment=False, propagate=propagate,
                             batch_size=batch_size, checkpointer=ckpt,
                             description=f"{method} {nm_str(nm_t) if nm_t else f'{sparsity:.0%}'}",
                             propagate_last=use_stream and output is not None)
        apply_resumed_rows(plan, res)
        res.propagate = propagate
        res.first_ids = samples[:batch_size]
        timings = {**res.timings.to_dict(), "allocation_s": t_alloc}
        return _result(store, src, output, plan, res, samples, metrics, timings, options, t_start, seed=seed,
                       evaluate=evaluate, eval_windows=eval_windows, command=command,
                       title=f"{method} {nm_str(nm_t) if nm_t else f'{sparsity:.0%}'} on {src.spec}")


def _check_options(method, nm, sparsity, nsamples, seqlen, batch_size, propagate, allocation, max_sparsity,
                   allocation_params):
    """Everything checkable before touching the model or the disk."""
    from ..allocate import get_allocator

    PRUNERS.get(method)
    nm_t = parse_nm(nm)
    sparsity = check_sparsity(sparsity)
    if nsamples < 1 or seqlen < 2 or batch_size < 1:
        raise ConfigError("--nsamples and --batch-size must be >= 1 and --seqlen >= 2")
    if propagate not in ("pruned", "dense"):
        raise ConfigError(f"--propagate must be pruned or dense (got {propagate!r})")
    alloc = get_allocator(allocation)
    if allocation != "uniform" and nm_t is not None:
        raise ConfigError(f"allocation '{allocation}' works with unstructured sparsity, not --nm")
    if not 0 < max_sparsity < 1:
        raise ConfigError(f"--max-sparsity must be in (0, 1) (got {max_sparsity:g})")
    if sparsity > max_sparsity:
        raise ConfigError(f"target sparsity {sparsity:g} exceeds --max-sparsity {max_sparsity:g}")
    alloc(allocation_params or {})   # validates the allocator's options
    return nm_t, sparsity, alloc


def _check_positions(config, seqlen: int) -> None:
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if max_pos and seqlen > max_pos:
        raise ConfigError(f"--seqlen {seqlen} exceeds the model's {max_pos} positions")


def _result(store, src, output, plan, res, samples, metrics, timings, options, t_start, *, seed, evaluate,
            eval_windows, command, title) -> PruneResult:
    """Evaluate, write (verified) and report one pruning run."""
    from ..io import build_manifest

    plan.meta.update({"measured_sparsity": plan.measured_sparsity()})
    plan_summary = {"linears": len(plan), "parameters": plan.total_params,
                    "planned_sparsity": plan.mean_sparsity(), "measured_sparsity": plan.measured_sparsity()}
    result_model = store.model if store.fully_in_memory else None
    if evaluate and result_model is not None:
        metrics["perplexity"] = perplexity_of(src, result_model, eval_windows)
    timings["total_s"] = time.perf_counter() - t_start
    manifest = build_manifest("prune", options, seed, timings, metrics, plan_summary, command)
    measure = (lambda d: evaluate_saved(src, d, metrics, manifest, eval_windows)) \
        if evaluate and result_model is None else None
    out_path = output.finish(store, src, plan, manifest, res, samples[:2], title=title,
                             before_manifest=measure) if output else None
    return PruneResult(plan, out_path, result_model, timings, metrics, manifest)
