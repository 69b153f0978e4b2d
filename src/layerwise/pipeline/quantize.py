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
from ..engine import Pass, ShardWriter
from ..engine.sequential import BlockWork
from ..engine.stats import relative_recon_error
from ..engine.store import tied_names
from ..errors import ConfigError, LayerwiseError
from ..scores.base import SCORES
from ..plan import Plan, PlanRow
from ..quant import QUANTIZERS, QuantSpec, from_gptq, get_quantizer, gptq_compatible, packed_bits, to_gptq
from .blockwise import BlockwiseStage, Run, run_stage
from .output import evaluate_saved, perplexity_of
from .prune import RECON_TOKENS, PruneStage, select_linears


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


def _bit_plan(store, samples, spec: str, *, bits, high, low, order, order_seed, quantizer, group_size, targets, ignore,
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
        ranking, scores_used = block_ranking(store, samples, order, plan, batch_size, seed, order_seed, spec)
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


# The runtimes a result can be exported to, and the grids each executes exactly (see layerwise.export):
# GGUF's Q4_0 / Q5_0 / Q8_0 hold symmetric 4/5/8-bit groups of 32·k columns; vLLM runs compressed-tensors
# int weights at 4 or 8 bits. Other widths would be stored at the next container width (no saving).
TARGETS = {"gguf": (4, 5, 8), "compressed-tensors": (4, 8)}


def check_target(target, high: int, low: int, group_size: int, sym: bool, act_order: bool) -> None:
    """Refuse bits and layouts the target runtime cannot execute exactly (one line each)."""
    if target is None:
        return
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)} (got {target!r})")
    widths = TARGETS[target]
    bad = [b for b in (high, low) if b not in widths]
    if bad:
        raise ConfigError(f"--target {target} runs {'/'.join(map(str, widths))}-bit grids exactly; "
                          f"--high/--low {bad[0]} would be stored at more bits (choose from {widths})")
    if not sym or act_order:
        raise ConfigError(f"--target {target} needs a symmetric grid without --act-order")
    if target == "gguf" and group_size != -1 and group_size % 32:
        raise ConfigError(f"--target gguf needs --group-size a multiple of 32 (ggml blocks), got {group_size}")


class QuantizeStage(BlockwiseStage):
    """Quantize the selected linears to the plan's bits (mixed precision allocated by block importance);
    written as GPTQ-packed tensors plus a dequantized copy."""

    kind = "quantize"
    planning_time = "ranking_s"

    def __init__(self, bits=4.0, high: int = 4, low: int = 2, order: str = "lim", quantizer: str = "rtn",
                 group_size: int = 128, sym: bool = True, act_order: bool = False, order_seed: int = 0,
                 targets=None, ignore=None, target: str | None = None):
        self.bits, self.high, self.low, self.order, self.quantizer = bits, high, low, order, quantizer
        self.group_size, self.sym, self.act_order, self.order_seed = group_size, sym, act_order, order_seed
        self.targets, self.ignore, self.target = targets, ignore, target

    def check(self) -> None:
        try:
            self.bits = float(self.bits)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--bits must be a number (got {self.bits!r})") from e
        check_bit_request(self.bits, self.high, self.low)
        QUANTIZERS.get(self.quantizer)
        if self.group_size == 0 or self.group_size < -1:
            raise ConfigError(f"--group-size must be a positive number of columns or -1 for per channel "
                              f"(got {self.group_size})")
        if "," not in self.order and self.order not in orders():
            raise ConfigError(f"--order must be one of {', '.join(orders())} or a list of block indices "
                              f"(got {self.order!r})")
        check_target(self.target, self.high, self.low, self.group_size, self.sym, self.act_order)

    def whole_model(self) -> bool:
        return self.order in SCORES and "whole_model" in SCORES[self.order].needs

    def plans_without_data(self) -> bool:
        return ranking_free(self.bits, self.high, self.low, self.order)

    def validate(self, plan: Plan, shapes: dict) -> None:
        plan.validate(shapes, set(QUANTIZERS))
        if any(r.bits is None for r in plan.rows):
            raise ConfigError("a quantization plan needs 'bits' on every row")

    def new_plan(self, store, samples, spec, *, batch_size, seed, fused):
        if fused and not self.plans_without_data():
            raise ConfigError(f"quantization fused after pruning cannot rank blocks by '{self.order}' (the ranking "
                              "would need the pruned model): use uniform bits, --order random or a block list")
        return _bit_plan(store, samples, spec, bits=self.bits, high=self.high, low=self.low, order=self.order,
                         order_seed=self.order_seed, quantizer=self.quantizer, group_size=self.group_size,
                         targets=self.targets, ignore=self.ignore, batch_size=batch_size, seed=seed, fused=fused)

    def make_pass(self, plan, store, partial):
        for r in plan.rows:
            r.group_size = r.group_size or self.group_size
        _warn_incompatible(plan)
        qinst = {m: get_quantizer(m, **({"act_order": self.act_order}
                                        if "act_order" in QUANTIZERS.get(m).Config.model_fields else {}))
                 for m in {r.method for r in plan.rows}}
        self.packing = GPTQPacking(plan, store.adapter, qinst, self.sym, write=partial is not None)
        if partial is not None:
            self.packing.attach(store, partial)
        selected = {r.name for r in plan.rows}
        hessian = any(q.needs_gram for q in qinst.values())
        return Pass(self.packing.action, select=lambda n: n in selected, gram=True,
                    gram_limit=None if hessian else RECON_TOKENS, first_moment=False)

    def options(self) -> dict:
        return {"bits": self.bits, "high": self.high, "low": self.low, "order": self.order,
                "order_seed": self.order_seed, "quantizer": self.quantizer, "group_size": self.group_size,
                "sym": self.sym, "act_order": self.act_order, "targets": self.targets, "ignore": self.ignore,
            "target": self.target}

    def row_key(self, row) -> tuple:
        return row.name, row.bits, row.method, row.group_size

    def description(self) -> str:
        return f"{self.quantizer} {self.bits:g} bits"

    def finish(self, run: Run) -> "QuantizeResult":
        return _result(run, self, title=f"{self.quantizer} {self.bits:g} bits ({self.order} order) on {run.src.spec}")


def quantize(model, *, bits: float = 4.0, high: int = 4, low: int = 2, order: str = "lim",
             quantizer: str = "rtn", group_size: int = 128, sym: bool = True, act_order: bool = False,
             calib: str = "stdlib", nsamples: int = 128, seqlen: int = 256, seed: int = 0, order_seed: int = 0,
             targets: list[str] | None = None, ignore: list[str] | None = None, plan: str | Plan | None = None,
             out: str | Path | None = None, overwrite: bool = False, resume: bool = False,
             overwrite_source: bool = False, batch_size: int = 8, stream: bool | None = None, tokenizer=None,
             evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
             before: list[dict] | None = None, target: str | None = None) -> QuantizeResult:
    """Quantize `model`. `before`: options of prune stages fused into the same block-by-block pass
    (each on its own activation stream, so the weights equal those of the stages run one by one)."""
    stage = QuantizeStage(bits, high, low, order, quantizer, group_size, sym, act_order, order_seed, targets, ignore,
                          target)
    if out is not None and _is_diffusers(model):
        raise ConfigError("quantize cannot write diffusers checkpoints yet (the packed GPTQ format is a transformers "
                          "one); prune, depth and analyze take this model, or quantize it in memory without --out")
    return run_stage(stage, model, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, plan=plan, out=out,
                     overwrite=overwrite, resume=resume, overwrite_source=overwrite_source, batch_size=batch_size,
                     stream=stream, tokenizer=tokenizer, evaluate=evaluate, eval_windows=eval_windows,
                     command=command, before=[PruneStage(**o) for o in before or []])


def _is_diffusers(model) -> bool:
    from ..io.diffusers_format import diffusers_config
    from .source import model_dir

    if hasattr(model, "save_config") or hasattr(getattr(model, "model", None), "save_config"):
        return True
    d = model_dir(model)
    return d is not None and diffusers_config(d) is not None


def _warn_incompatible(plan: Plan) -> None:
    bad = [r.name for r in plan.rows if not gptq_compatible(QuantSpec(r.bits, r.group_size), r.shape[0], r.shape[1])]
    if bad:
        warn(f"{len(bad)} linear(s) (e.g. {bad[0]}) have shapes or bit widths that GPTQ kernels do not accept; "
             "layerwise.load reads them, inference engines may not")


def _result(run: Run, stage: QuantizeStage, title: str) -> QuantizeResult:
    """Evaluate, write (GPTQ format + dequantized copy, verified) and report one quantization run."""
    from ..io import build_manifest

    store, src, output, plan, res, samples = run.store, run.src, run.output, run.plan, run.res, run.samples
    metrics, timings, evaluate, eval_windows = run.metrics, run.timings, run.evaluate, run.eval_windows
    result_model = store.model if store.fully_in_memory else None
    if evaluate and result_model is not None:
        metrics["perplexity"] = perplexity_of(src, result_model, eval_windows)
    bits_rep = bits_report(plan, store.model, None)
    plan.meta.update({"nominal_bits": bits_rep["nominal_bits"]})
    timings["total_s"] = time.perf_counter() - run.t_start
    manifest = build_manifest("quantize", run.options, run.seed, timings, metrics,
                              {"linears": len(plan), "parameters": plan.total_params, **bits_rep}, run.command)
    out_path = None

    def measure(directory: Path) -> None:   # on the written output, before its manifest is written
        bits_rep.update(bits_report(plan, store.model, directory))
        manifest["plan"].update(bits_rep)
        if evaluate and result_model is None:
            evaluate_saved(src, directory, metrics, manifest, eval_windows)

    if output is not None:
        qc = gptq_quantization_config(plan, store.adapter, stage.high, stage.group_size, stage.sym, stage.act_order)
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
    from ..io.structured import is_width_pruned, write_structure

    if store.fully_in_memory and is_width_pruned(store.model):   # per-layer widths: the copy needs them too
        write_structure(store.model, deq)


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
        inputs = store.adapter.model_inputs(sample_ids)
        check_reload(store.model, partial, inputs, what="packed checkpoint")
        check_reload(store.model, deq, inputs, what="dequantized checkpoint")
        return "packed (layerwise.load) and dequantized (stock from_pretrained) logits identical to the in-memory model"
    check_streamed_reload(deq, res.first_ids, res.final_hidden[0])
    return "packed tensors unpack exactly to the dequantized copy; its streamed reload reproduces the engine"
