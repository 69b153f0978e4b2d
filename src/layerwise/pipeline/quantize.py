"""`layerwise quantize`: mixed-precision weight quantization by layer importance, block by block.

Blocks are ranked by a score (LIM, ZD, any analysis score, a user list, random or reverse); the most
important keep `high` bits, the rest get `low` bits, so that the parameter-weighted average meets the
fractional target. Each linear is quantized with RTN or GPTQ (GPTQ sees the already-quantized
upstream blocks). The output is a GPTQ-format checkpoint with per-module bit overrides plus a
dequantized copy that stock `from_pretrained` loads.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..allocate.bits import orders, allocate_bits, check_bit_request, parse_order, ranking_from_scores
from ..console import warn
from ..engine import Checkpointer, InMemoryStore, LazyStore, ShardWriter, fingerprint, run_sequential
from ..engine.sequential import BlockWork
from ..engine.stats import relative_recon_error
from ..engine.store import tied_names
from ..errors import ConfigError, LayerwiseError
from ..scores.base import SCORES
from ..plan import Plan, PlanRow
from ..quant import QUANTIZERS, QuantSpec, from_gptq, get_quantizer, gptq_compatible, packed_bits, to_gptq
from ..utils.hf import quiet
from .output import OutputDir, apply_resumed_rows, evaluate_saved, guarded, perplexity_of
from .prune import RECON_TOKENS, fused_prune_plan, prune_pass, select_linears
from ..io.artifacts import input_paths
from .source import calib_name, calibration_inputs, model_dir, resolve


@dataclass
class QuantizeResult:
    plan: Plan
    out: Path | None
    model: nn.Module | None
    timings: dict
    bits: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


def block_ranking(store, samples, order: str, plan: Plan, batch_size: int, seed: int, order_seed: int,
                  model_name: str) -> tuple[list[int], dict]:
    n = store.adapter.num_blocks
    user = parse_order(order, n)
    if user is not None:
        return user, {}
    if order == "random":
        rng = np.random.default_rng(order_seed)
        return [int(i) for i in rng.permutation(n)], {}
    score = "lim" if order == "reverse" else order
    from ..scores.analyze import analyze_store

    names = {r.name for r in plan.rows}
    store.writing = False
    an = analyze_store(store, samples, [score], select=lambda x: x in names, batch_size=batch_size, seed=seed,
                       model_name=model_name, keep_eigs=False)
    store.writing = True
    ranking = ranking_from_scores(score, an.block_scores[score])
    if order == "reverse":
        ranking = ranking[::-1]
    return ranking, {score: an.block_scores[score]}


def bits_report(plan: Plan, model: nn.Module, out: Path | None) -> dict:
    """Nominal bits, effective bits (packing metadata, then unquantized tensors too), bytes on disk."""
    q_params = plan.total_params
    q_bits = 0
    for r in plan.rows:
        spec = QuantSpec(r.bits, r.group_size or -1)
        q_bits += sum(packed_bits(spec, r.shape[0], r.shape[1]).values())
    quantized = {r.name + ".weight" for r in plan.rows}
    other_bits, other_params = 0, 0
    seen = set()
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if name in quantized or p.data_ptr() in seen or p.is_meta:
            continue
        seen.add(p.data_ptr())
        if name.endswith(("inv_freq", "original_inv_freq", "position_ids")):
            continue
        other_params += p.numel()
        other_bits += p.numel() * p.element_size() * 8
    rep = {"nominal_bits": plan.mean_bits(), "effective_bits_quantized": q_bits / q_params,
           "effective_bits_model": (q_bits + other_bits) / (q_params + other_params),
           "quantized_params": q_params, "unquantized_params": other_params}
    if out is not None:
        rep["bytes_on_disk"] = sum(f.stat().st_size for f in Path(out).glob("*.safetensors"))
        deq = Path(out) / "dequantized"
        if deq.exists():
            rep["bytes_on_disk_dequantized"] = sum(f.stat().st_size for f in deq.glob("*.safetensors"))
    return rep


def _check_options(bits, high: int, low: int, quantizer: str, group_size: int, order: str, nsamples: int,
                   seqlen: int, batch_size: int) -> float:
    try:
        bits = float(bits)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--bits must be a number (got {bits!r})") from e
    check_bit_request(bits, high, low)
    QUANTIZERS.get(quantizer)
    if group_size == 0 or group_size < -1:
        raise ConfigError(f"--group-size must be a positive number of columns or -1 for per channel (got {group_size})")
    if "," not in order and order not in orders():
        raise ConfigError(f"--order must be one of {', '.join(orders())} or a list of block indices (got {order!r})")
    if nsamples < 1 or seqlen < 2 or batch_size < 1:
        raise ConfigError("--nsamples and --batch-size must be >= 1 and --seqlen >= 2")
    return bits


def _bit_plan(store, samples, src, *, bits, high, low, order, order_seed, quantizer, group_size, targets, ignore,
              batch_size, seed, fused: bool) -> Plan:
    """Rows for the selected linears with bits allocated by block importance (`order`)."""
    adapter = store.adapter
    chosen = select_linears(adapter, targets, ignore)
    plan = Plan([PlanRow(name=r.name, block=r.block, shape=r.shape, method=quantizer, group_size=group_size)
                 for r in chosen], {"kind": "quantize", "quantizer": quantizer, "order": order})
    scores_used: dict = {}
    if high == low or bits >= high - 1e-12:
        ranking = list(range(adapter.num_blocks))
    elif fused:
        ranking = parse_order(order, adapter.num_blocks) or [
            int(i) for i in np.random.default_rng(order_seed).permutation(adapter.num_blocks)]
    else:
        ranking, scores_used = block_ranking(store, samples, order, plan, batch_size, seed, order_seed, src.spec)
    allocate_bits(plan, ranking, bits, high, low)
    for r in plan.rows:
        for k, v in scores_used.items():
            r.scores[k] = float(v[r.block])
    return plan


class GPTQPacking:
    """Quantizes each block's linears by the plan and, when writing, swaps their weights for GPTQ tensors
    as the block is saved (and back on resume); a dequantized copy is written alongside."""

    def __init__(self, plan: Plan, adapter, quantizers: dict, sym: bool, write: bool):
        self.plan, self.adapter, self.quantizers, self.sym, self.write = plan, adapter, quantizers, sym, write
        self.rows = plan.by_name()
        self.packed: dict[str, dict] = {}

    def action(self, work: BlockWork) -> list[dict]:
        done = []
        for ref in work.linears:
            row = self.rows[ref.name]
            t1 = time.perf_counter()
            W = ref.weight.detach().float().clone()
            st = work.stats[ref.name]
            res = self.quantizers[row.method].quantize(W, st, QuantSpec(row.bits, row.group_size, self.sym, min_zero=1))
            ref.set_weight(res.dequantize())
            if self.write:
                self.packed[ref.name] = to_gptq(res)
            if st.H is not None:
                row.recon_error = relative_recon_error(W, ref.weight.detach(), st.H)
            row.damping = res.info.get("damping")
            row.seconds = time.perf_counter() - t1
            done.append(row.to_dict())
        return done

    def transform(self, i: int, tensors: dict) -> dict:
        out = dict(tensors)
        for name in [n for n in self.packed if self.rows[n].block == i]:
            out.pop(name + ".weight")
            for k, v in self.packed.pop(name).items():
                out[f"{name}.{k}"] = v
        return out

    def untransform(self, i: int, tensors: dict) -> dict:
        out = dict(tensors)
        for name in [r.name for r in self.plan.rows if r.block == i]:
            row = self.rows[name]
            part = {k: out.pop(f"{name}.{k}") for k in ("qweight", "qzeros", "scales", "g_idx")}
            W = from_gptq(part, row.bits, row.shape[1], row.shape[0])
            ref = next(x for x in self.adapter.linears(i) if x.name == name)
            out[name + ".weight"] = W.t() if ref.transposed else W
        return out

    def attach(self, store, partial: Path) -> None:
        deq_dir = partial / "dequantized"
        deq_dir.mkdir(exist_ok=True)
        store.extra_writers.append(ShardWriter(deq_dir, self.adapter.num_blocks, tied_names(store.model)))
        store.transform, store.untransform = self.transform, self.untransform


def quantize(model, *, bits: float = 4.0, high: int = 4, low: int = 2, order: str = "lim",
             quantizer: str = "rtn", group_size: int = 128, sym: bool = True, act_order: bool = False,
             calib: str = "stdlib", nsamples: int = 128, seqlen: int = 256, seed: int = 0, order_seed: int = 0,
             targets: list[str] | None = None, ignore: list[str] | None = None, plan: str | Plan | None = None,
             out: str | Path | None = None, overwrite: bool = False, resume: bool = False,
             overwrite_source: bool = False, batch_size: int = 8, stream: bool | None = None, tokenizer=None,
             evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
             before: list[dict] | None = None) -> QuantizeResult:
    """Quantize `model`. `before`: options of prune stages fused into the same block-by-block pass
    (each on its own activation stream, so the weights equal those of the stages run one by one)."""
    quiet()
    t_start = time.perf_counter()
    bits = _check_options(bits, high, low, quantizer, group_size, order, nsamples, seqlen, batch_size)
    output = OutputDir(out, overwrite=overwrite, resume=resume, overwrite_source=overwrite_source,
                       model_path=model_dir(model),
                       inputs=input_paths(model_dir(model), tokenizer, plan, calib)) if out is not None else None
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    need_memory = plan is None and order in SCORES and "whole_model" in SCORES[order].needs
    src = resolve(model, tokenizer, load=not (stream is not False and out is not None) or need_memory)
    use_stream = src.loaded is None
    with guarded(output):
        partial = output.begin() if output is not None else None
        store = LazyStore(src.path, partial) if use_stream else InMemoryStore(src.loaded.model, partial)
        adapter = store.adapter
        samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed, src.spec)
        before_plans = [fused_prune_plan(store, samples, src.spec, batch_size=batch_size, seed=seed, **opts)
                        for opts in before or []]
        if before_plans and plan is None and not ranking_free(bits, high, low, order):
            raise ConfigError(f"quantization fused after pruning cannot rank blocks by '{order}' (the ranking "
                              "would need the pruned model): use uniform bits, --order random or a block list")
        t0 = time.perf_counter()
        if plan is not None:
            plan.validate({r.name: r.shape for r in adapter.all_linears()}, set(QUANTIZERS))
            if any(r.bits is None for r in plan.rows):
                raise ConfigError("a quantization plan needs 'bits' on every row")
        elif resume and output is not None and output.partial_has_state():
            plan = Plan.load(output.partial / "plan_in_progress.json")
        else:
            plan = _bit_plan(store, samples, src, bits=bits, high=high, low=low, order=order, order_seed=order_seed,
                             quantizer=quantizer, group_size=group_size, targets=targets, ignore=ignore,
                             batch_size=batch_size, seed=seed, fused=bool(before_plans))
        t_alloc = time.perf_counter() - t0
        for r in plan.rows:
            r.group_size = r.group_size or group_size
        if output is not None:
            plan.save(output.partial / "plan_in_progress.json")
        _warn_incompatible(plan)
        qinst = {m: get_quantizer(m, **({"act_order": act_order}
                                        if "act_order" in QUANTIZERS.get(m).Config.model_fields else {}))
                 for m in {r.method for r in plan.rows}}
        packing = GPTQPacking(plan, adapter, qinst, sym, write=output is not None)
        if output is not None:
            packing.attach(store, partial)
        options = {"model": src.spec, "bits": bits, "high": high, "low": low, "order": order,
                   "order_seed": order_seed, "quantizer": quantizer, "group_size": group_size, "sym": sym,
                   "act_order": act_order, "calib": calib_name(calib), "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                   "targets": targets, "ignore": ignore, "streamed": use_stream, "before": before or []}
        ckpt = Checkpointer(partial, fingerprint({"options": options, "plan": [
            (r.name, r.bits, r.method, r.group_size) for r in plan.rows]})) if partial else None
        metrics: dict = {"perplexity_dense": perplexity_of(src, None, eval_windows)} if evaluate else {}
        selected = {r.name for r in plan.rows}
        hessian = any(q.needs_gram for q in qinst.values())
        res = run_sequential(store, samples, packing.action, select=lambda n: n in selected, gram=True,
                             gram_limit=None if hessian else RECON_TOKENS, propagate="pruned", batch_size=batch_size,
                             checkpointer=ckpt, description=f"{quantizer} {bits:g} bits",
                             before=[prune_pass(p) for p in before_plans])
        if before_plans:
            plan.meta["before"] = [p.to_dict() for p in before_plans]
        apply_resumed_rows(plan, res)
        res.first_ids = samples[:batch_size]
        timings = {**res.timings.to_dict(), "ranking_s": t_alloc}
        return _result(store, src, output, plan, res, samples, metrics, timings, options, t_start,
                       high=high, group_size=group_size, sym=sym, act_order=act_order, evaluate=evaluate,
                       eval_windows=eval_windows, command=command, seed=seed,
                       title=f"{quantizer} {bits:g} bits ({order} order) on {src.spec}")


def _warn_incompatible(plan: Plan) -> None:
    bad = [r.name for r in plan.rows if not gptq_compatible(QuantSpec(r.bits, r.group_size), r.shape[0], r.shape[1])]
    if bad:
        warn(f"{len(bad)} linear(s) (e.g. {bad[0]}) have shapes or bit widths that GPTQ kernels do not accept; "
             "layerwise.load reads them, inference engines may not")


def _result(store, src, output, plan, res, samples, metrics, timings, options, t_start, *, high, group_size, sym,
            act_order, evaluate, eval_windows, command, seed, title) -> QuantizeResult:
    """Evaluate, write (GPTQ format + dequantized copy, verified) and report one quantization run."""
    from ..io import build_manifest

    result_model = store.model if store.fully_in_memory else None
    if evaluate and result_model is not None:
        metrics["perplexity"] = perplexity_of(src, result_model, eval_windows)
    bits_rep = bits_report(plan, store.model, None)
    plan.meta.update({"nominal_bits": bits_rep["nominal_bits"]})
    timings["total_s"] = time.perf_counter() - t_start
    manifest = build_manifest("quantize", options, seed, timings, metrics,
                              {"linears": len(plan), "parameters": plan.total_params, **bits_rep}, command)
    out_path = None

    def measure(directory: Path) -> None:   # on the written output, before its manifest is written
        bits_rep.update(bits_report(plan, store.model, directory))
        manifest["plan"].update(bits_rep)
        if evaluate and result_model is None:
            evaluate_saved(src, directory, metrics, manifest, eval_windows)

    if output is not None:
        qc = gptq_quantization_config(plan, store.adapter, high, group_size, sym, act_order)
        out_path = output.finish(store, src, plan, manifest, res, samples[:2], title=title,
                                 config_updates={"quantization_config": qc},
                                 verify=lambda: _verify_quantized(store, res, output.partial, samples[:2]),
                                 after_config=lambda: _write_dequantized_meta(store, src, output.partial),
                                 before_manifest=measure)
    return QuantizeResult(plan, out_path, result_model, timings, bits_rep, metrics, manifest)


def ranking_free(bits: float, high: int, low: int, order: str) -> bool:
    """True when the bit allocation needs no analysis pass (so it can follow a fused stage)."""
    return high == low or float(bits) >= high - 1e-12 or order == "random" or "," in str(order)


def gptq_quantization_config(plan: Plan, adapter, default_bits: int, group_size: int, sym: bool,
                             act_order: bool) -> dict:
    dynamic = {}
    for r in plan.rows:
        if r.bits != default_bits:
            dynamic[f"+:^{re.escape(r.name)}$"] = {"bits": r.bits}
    planned = {r.name for r in plan.rows}
    for ref in adapter.all_linears():
        if ref.name not in planned:
            dynamic[f"-:^{re.escape(ref.name)}$"] = {}
    from .._version import __version__

    return {"quant_method": "gptq", "checkpoint_format": "gptq", "bits": default_bits, "group_size": group_size,
            "desc_act": act_order, "sym": sym, "static_groups": False, "true_sequential": False,
            "damp_percent": 0.01, "lm_head": False, "dynamic": dynamic,
            "meta": {"quantizer": [f"layerwise:{__version__}"]}}


def _write_dequantized_meta(store, src, partial: Path) -> None:
    deq = partial / "dequantized"
    cfg = store.model.config
    qc = getattr(cfg, "quantization_config", None)
    if qc is not None:
        delattr(cfg, "quantization_config")
    cfg.save_pretrained(deq)
    if qc is not None:
        cfg.quantization_config = qc
    if src.tokenizer is not None:
        src.tokenizer.save_pretrained(deq)


@torch.no_grad()
def _verify_quantized(store, res, partial: Path, sample_ids: torch.Tensor) -> str:
    """Packed checkpoint and dequantized copy must both reproduce what the engine computed."""
    from safetensors.torch import load_file

    from ..io.quantized import module_bits

    deq = partial / "dequantized"
    # 1. every packed tensor unpacks to exactly the dequantized copy (block by block, low memory)
    for f in sorted(partial.glob("model-*.safetensors")):
        packed, plain = load_file(str(f)), load_file(str(deq / f.name))
        for k in [k for k in packed if k.endswith(".qweight")]:
            base = k[: -len(".qweight")]
            w = plain[base + ".weight"]
            bits = module_bits(base, store.model.config.quantization_config)
            W = from_gptq({s: packed[f"{base}.{s}"] for s in ("qweight", "qzeros", "scales", "g_idx")}, bits,
                          packed[base + ".g_idx"].numel(), packed[base + ".scales"].shape[1])
            if not (torch.equal(W, w) or torch.equal(W.t(), w)):
                raise LayerwiseError(f"packed weights of {base} do not unpack to the dequantized copy")
    from ..io.verify import check_reload, check_streamed_reload

    if store.fully_in_memory:
        inputs = {"input_ids": sample_ids}
        check_reload(store.model, partial, inputs, what="packed checkpoint")
        check_reload(store.model, deq, inputs, what="dequantized checkpoint")
        return "packed (layerwise.load) and dequantized (stock from_pretrained) logits identical to the in-memory model"
    check_streamed_reload(deq, res.first_ids, res.final_hidden[0])
    return "packed tensors unpack exactly to the dequantized copy; its streamed reload reproduces the engine"
