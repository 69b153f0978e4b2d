"""`layerwise quantize`: mixed-precision weight quantization by layer importance, block by block.

Blocks are ranked by a score (LIM, ZD, any analysis score, a user list, random or reverse); the most
important keep `high` bits, the rest get `low` bits, so that the parameter-weighted average meets the
fractional target. Each linear is quantized with RTN or GPTQ (GPTQ sees the already-quantized
upstream blocks). The output is a packed checkpoint — compressed-tensors `pack-quantized` (one config
group per bit width; transformers and vLLM load it) unless act-order or a GPT-2 style Conv1D model
needs GPTQ v1 with per-module bit overrides — plus a dequantized copy that stock `from_pretrained`
loads without any quantization package.
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
from ..engine.store import tied_names
from ..errors import ConfigError, LayerwiseError
from ..scores.base import SCORES
from ..plan import Plan, PlanRow
from ..io.ct_pack import VLLM_FUSED, scheme_key
from ..io.quantized import COMPRESSED_TENSORS, GPTQ, LAYOUTS, Layout
from ..quant import QUANTIZERS, QuantSpec, get_quantizer, gptq_compatible
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


def bits_report(plan: Plan, model: nn.Module, out: Path | None, layout: Layout = COMPRESSED_TENSORS,
                sym: bool = True) -> dict:
    """Nominal bits, effective bits (packing metadata, then unquantized tensors too), bytes on disk."""
    q_params = plan.total_params
    q_bits = 0
    for r in plan.rows:
        spec = QuantSpec(r.bits, r.group_size or -1)
        q_bits += sum(layout.packed_bits(r.bits, spec.groups(r.shape[1]), r.shape[0], r.shape[1], sym).values())
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
              batch_size, seed, fused: bool, same_width: tuple = ()) -> Plan:
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
    allocate_bits(plan, ranking, bits, high, low, fused=same_width)
    for r in plan.rows:
        for k, v in scores_used.items():
            r.scores[k] = float(v[r.block])
    return plan


class Packing:
    """Quantizes each block's linears by the plan and, when writing, swaps their weights for the packed
    tensors of `layout` as the block is saved (and back on resume); a dequantized copy is written alongside."""

    def __init__(self, plan: Plan, adapter, quantizers: dict, sym: bool, write: bool, layout: Layout):
        self.plan, self.adapter, self.quantizers, self.sym, self.write = plan, adapter, quantizers, sym, write
        self.layout, self.qc = layout, None
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
                self.packed[ref.name] = self.layout.pack(res.q, res.zeros, res.scales, res.g_idx, row.bits, self.sym)
            row.recon_error = st.recon_error(W, ref.weight.detach())
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
            W = self.layout.dequantize(self.layout.parts(out, name, pop=True), name, None, self.qc)
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
FUSED_BY_RUNTIME = {"compressed-tensors": VLLM_FUSED}


# Bytes of one 32-weight ggml block holding a symmetric b-bit group exactly (fp16 scale + codes): every
# type costs b + 0.5 bits per weight, so a nominal-bit budget under --target gguf is a file-size budget.
GGUF_BLOCK_BYTES = {4: 18, 5: 22, 8: 34}


def gguf_bytes(plan: Plan) -> int:
    """Bytes the plan's linears take in a GGUF file (exact block types; F16 where the inputs are not a
    multiple of 32, as the export does)."""
    total = 0
    for r in plan.rows:
        rows, cols = r.shape
        total += rows * cols * 2 if cols % 32 else rows * (cols // 32) * GGUF_BLOCK_BYTES[r.bits]
    return total


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


# compressed-tensors 0.20.1 builds the compressed parameters of an asymmetric pack-quantized model on
# the meta device without packing the zero points, so transformers refuses the checkpoint its own
# library wrote (shape mismatch on every `weight_zero_point`; the layout itself matches the library's
# compressor, tests/test_compressed_tensors.py).
ASYM_STOCK_LOAD = ("asymmetric grids loadable by stock transformers (compressed-tensors 0.20.1 expects unpacked "
                   "zero points when it loads pack-quantized checkpoints; layerwise.load reads them)")


def resolve_layout(fmt: str | None, act_order: bool, adapter, plan: Plan | None = None,
                   group_size: int = -1, sym: bool = True) -> Layout:
    """The packed format of the output: compressed-tensors unless it cannot hold the result (act-order,
    Conv1D linears, column groups that do not divide a linear's inputs, asymmetric grids), then GPTQ v1
    with a note why."""
    from ..console import info, warn
    from ..models.adapters.base import CONV1D

    why = []
    if act_order:
        why.append("--act-order groups (its loaders ignore g_idx)")
    if adapter is not None and bool(CONV1D) and any(isinstance(m, CONV1D) for m in adapter.model.modules()):
        why.append("Conv1D linears (GPT-2 style; its loaders decompress nn.Linear only)")
    ragged = [r for r in (plan.rows if plan is not None else [])
              if r.shape[1] % QuantSpec(r.bits, r.group_size or group_size).group(r.shape[1])]
    if ragged:
        r = ragged[0]
        why.append(f"column groups that do not divide the inputs of {len(ragged)} linear(s) (e.g. {r.name}: "
                   f"{r.shape[1]} columns, groups of {r.group_size or group_size}; choose a --group-size that "
                   "divides every width, e.g. after `layerwise width --multiple-of`)")
    if fmt is None:
        if why or not sym:
            info(f"writing GPTQ v1: compressed-tensors cannot hold {why[0] if why else ASYM_STOCK_LOAD}")
            return GPTQ
        return COMPRESSED_TENSORS
    layout = LAYOUTS.get(fmt)
    if layout is None:
        raise ConfigError(f"--format must be one of {', '.join(LAYOUTS)} (got {fmt!r})")
    if layout is COMPRESSED_TENSORS and why:
        raise ConfigError(f"--format compressed-tensors cannot hold {why[0]}; use --format gptq")
    if layout is COMPRESSED_TENSORS and not sym and plan is not None:
        warn("compressed-tensors with zero points: layerwise.load reads it, stock transformers does not "
             "(compressed-tensors 0.20.1 expects unpacked zero points when it loads)")
    return layout


def layout_config(layout: Layout, plan: Plan, adapter, high: int, group_size: int, sym: bool,
                  act_order: bool) -> dict:
    """quantization_config of the packed output."""
    if layout is GPTQ:
        return gptq_quantization_config(plan, adapter, high, group_size, sym, act_order)
    from .._version import __version__
    from ..io.ct_pack import ct_config

    schemes = {r.name: scheme_key(r.bits, r.group_size or group_size, r.shape[1], sym) for r in plan.rows}
    linears = [n for n, m in adapter.model.named_modules() if isinstance(m, nn.Linear) and n not in schemes]
    return {**ct_config(schemes, linears), "version": f"layerwise:{__version__}"}


class QuantizeStage(BlockwiseStage):
    """Quantize the selected linears to the plan's bits (mixed precision allocated by block importance);
    written as packed tensors (compressed-tensors, or GPTQ v1) plus a dequantized copy."""

    kind = "quantize"
    planning_time = "ranking_s"

    def __init__(self, bits=4.0, high: int = 4, low: int = 2, order: str = "lim", quantizer: str = "rtn",
                 group_size: int = 128, sym: bool = True, act_order: bool = False, order_seed: int = 0,
                 targets=None, ignore=None, target: str | None = None, format: str | None = None):
        self.bits, self.high, self.low, self.order, self.quantizer = bits, high, low, order, quantizer
        self.group_size, self.sym, self.act_order, self.order_seed = group_size, sym, act_order, order_seed
        self.targets, self.ignore, self.target = targets, ignore, target
        self.format = "compressed-tensors" if format is None and target == "compressed-tensors" else format

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
        if self.format is not None and self.format not in LAYOUTS:
            raise ConfigError(f"--format must be one of {', '.join(LAYOUTS)} (got {self.format!r})")
        if self.format is not None:      # an explicit format it cannot honour fails before any work
            resolve_layout(self.format, self.act_order, None)

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
                         targets=self.targets, ignore=self.ignore, batch_size=batch_size, seed=seed, fused=fused,
                         same_width=FUSED_BY_RUNTIME.get(self.target, ()))

    def make_pass(self, plan, store, partial):
        for r in plan.rows:
            r.group_size = r.group_size or self.group_size
        qinst = {m: get_quantizer(m, **({"act_order": self.act_order}
                                        if "act_order" in QUANTIZERS.get(m).Config.model_fields else {}))
                 for m in {r.method for r in plan.rows}}
        self.layout = resolve_layout(self.format, self.act_order, store.adapter, plan, self.group_size, self.sym)
        if self.layout is GPTQ:
            _warn_incompatible(plan)
        self.packing = Packing(plan, store.adapter, qinst, self.sym, write=partial is not None, layout=self.layout)
        self.packing.qc = layout_config(self.layout, plan, store.adapter, self.high, self.group_size, self.sym,
                                        self.act_order)
        if partial is not None:
            self.packing.attach(store, partial)
        selected = {r.name for r in plan.rows}
        hessian = any(q.needs_gram for q in qinst.values())
        return Pass(self.packing.action, select=lambda n: n in selected, gram=True,
                    gram_limit=None if hessian else RECON_TOKENS, first_moment=False, second_moment=False)

    def options(self) -> dict:
        return {"bits": self.bits, "high": self.high, "low": self.low, "order": self.order,
                "order_seed": self.order_seed, "quantizer": self.quantizer, "group_size": self.group_size,
                "sym": self.sym, "act_order": self.act_order, "targets": self.targets, "ignore": self.ignore,
                "target": self.target, "format": self.format}

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
             overwrite_source: bool = False, batch_size: int | None = None, stream: bool | None = None, tokenizer=None,
             evaluate: bool = False, eval_windows: int = 200, command: str | None = None,
             before: list[dict] | None = None, target: str | None = None,
             format: str | None = None) -> QuantizeResult:
    """Quantize `model`. `before`: options of prune stages fused into the same block-by-block pass
    (each on its own activation stream, so the weights equal those of the stages run one by one).
    `format`: compressed-tensors (the default where it can hold the result) or gptq."""
    stage = QuantizeStage(bits, high, low, order, quantizer, group_size, sym, act_order, order_seed, targets, ignore,
                          target, format)
    if out is not None and _is_diffusers(model):
        raise ConfigError("quantize cannot write diffusers checkpoints yet (its packed formats are transformers "
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
    """Evaluate, write (packed checkpoint + dequantized copy, verified) and report one quantization run."""
    from ..io import build_manifest

    store, src, output, plan, res, samples = run.store, run.src, run.output, run.plan, run.res, run.samples
    metrics, timings, evaluate, eval_windows = run.metrics, run.timings, run.evaluate, run.eval_windows
    result_model = store.model if store.fully_in_memory else None
    if evaluate and result_model is not None:
        metrics["perplexity"] = perplexity_of(src, result_model, eval_windows)
    layout = getattr(stage, "layout", COMPRESSED_TENSORS)
    bits_rep = bits_report(plan, store.model, None, layout, stage.sym)
    bits_rep["format"] = layout.name
    if stage.target == "gguf":
        bits_rep["gguf_bytes_quantized"] = gguf_bytes(plan)
    plan.meta.update({"nominal_bits": bits_rep["nominal_bits"]})
    timings["total_s"] = time.perf_counter() - run.t_start
    manifest = build_manifest("quantize", run.options, run.seed, timings, metrics,
                              {"linears": len(plan), "parameters": plan.total_params, **bits_rep}, run.command)
    out_path = None

    def measure(directory: Path) -> None:   # on the written output, before its manifest is written
        bits_rep.update(bits_report(plan, store.model, directory, layout, stage.sym))
        manifest["plan"].update(bits_rep)
        if evaluate and result_model is None:
            evaluate_saved(src, directory, metrics, manifest, eval_windows)

    if output is not None:
        out_path = output.finish(store, src, plan, manifest, res, samples[:2], title=title,
                                 config_updates={"quantization_config": stage.packing.qc},
                                 verify=lambda: _verify_quantized(store, res, output.partial, samples[:2], layout,
                                                                  stage.packing.qc),
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
def _verify_quantized(store, res, partial: Path, sample_ids: torch.Tensor, layout: Layout, qc: dict) -> str:
    """Packed checkpoint and dequantized copy must both reproduce what the engine computed."""
    from safetensors.torch import load_file

    deq = partial / "dequantized"
    # 1. every packed tensor unpacks to exactly the dequantized copy (block by block, low memory)
    for f in sorted(partial.glob("model-*.safetensors")):
        packed, plain = load_file(str(f)), load_file(str(deq / f.name))
        for k in [k for k in packed if k.endswith("." + layout.key)]:
            base = k[: -len(layout.key) - 1]
            w = plain[base + ".weight"]
            W = layout.dequantize(layout.parts(packed, base), base, None, qc)
            if not (torch.equal(W, w) or torch.equal(W.t(), w)):
                raise LayerwiseError(f"packed weights of {base} do not unpack to the dequantized copy")
    from ..io.verify import check_reload, check_streamed_reload

    if store.fully_in_memory:
        inputs = store.adapter.model_inputs(sample_ids)
        check_reload(store.model, partial, inputs, what="packed checkpoint")
        check_reload(store.model, deq, inputs, what="dequantized checkpoint")
        return "packed (layerwise.load) and dequantized (stock from_pretrained) logits identical to the in-memory model"
    if res.probe_hidden is None:
        return "packed tensors unpack exactly to the dequantized copy (reload not checked: resumed without a probe)"
    check_streamed_reload(deq, res.probe_ids, res.probe_hidden)
    return "packed tensors unpack exactly to the dequantized copy; its streamed reload reproduces the engine"
