from __future__ import annotations

from typing import List, Optional

import typer

from ..console import console
from ..quant import QUANTIZERS
from ..scores.base import SCORES
from .app import app
from .common import registry_option


@app.command("quantize")
def quantize_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id."),
    bits: float = typer.Option(4.0, "--bits", "-b", help="Target parameter-weighted average bits (fractional)."),
    high: int = typer.Option(4, help="Bits of the most important blocks."),
    low: int = typer.Option(2, help="Bits of the least important blocks."),
    order: str = registry_option("lim", "--order", registry=SCORES, prefix="Importance order: ",
                                 suffix=" | random | reverse, or block indices most important first (3,0,1,...)."),
    quantizer: str = registry_option("rtn", "--quantizer", "-q", registry=QUANTIZERS),
    group_size: int = typer.Option(128, help="Columns per scale group (-1 = per output channel)."),
    asym: bool = typer.Option(False, "--asym", help="Asymmetric grid with zero points (default symmetric)."),
    act_order: bool = typer.Option(False, "--act-order", help="GPTQ: visit columns by decreasing Hessian diagonal."),
    target: Optional[str] = typer.Option(None, "--target", help="Runtime the result is for: gguf (4/5/8 bits, "
                                         "groups of 32·k) | compressed-tensors (4/8 bits); refuses other grids."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (packed checkpoint + "
                                      "dequantized/)."),
    format: Optional[str] = typer.Option(None, "--format", help="Packed format of --out: compressed-tensors (the "
                                         "default where it can hold the result; transformers and vLLM load it) | "
                                         "gptq (v1, per-module bits; the default for act-order, Conv1D models and "
                                         "groups that do not divide a width)."),
    calib: str = typer.Option("stdlib", "--calib", help="Calibration corpus."),
    nsamples: int = typer.Option(128, help="Calibration sequences."),
    seqlen: int = typer.Option(256, help="Tokens per calibration sequence."),
    seed: int = typer.Option(0, help="Seed of the calibration sample."),
    order_seed: int = typer.Option(0, help="Seed of --order random."),
    targets: Optional[List[str]] = typer.Option(None, "--targets", help="Only these linears (substring or re:REGEX)."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Skip these linears."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Replay a (hand-edited) plan.json with per-linear bits."),
    batch_size: int | None = typer.Option(
        None, help="Calibration sequences per block forward [default: 8, fewer above 2048 tokens per batch]."),
    in_memory: bool = typer.Option(False, "--in-memory", help="Load the whole model instead of streaming blocks."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    overwrite_source: bool = typer.Option(False, "--overwrite-source",
                                          help="Allow --out to be the model directory itself: the new model is "
                                               "verified first and the old one kept as a backup until it is."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
    evaluate: bool = typer.Option(False, "--eval", help="Validation perplexity before and after."),
):
    """Quantize weights to a fractional average bit width, more bits for the more important blocks.

    Example: layerwise quantize zoo:llama-12l --bits 3.25 --high 4 --low 2 --order lim --quantizer gptq --out runs/q325
    """
    from ..pipeline.quantize import quantize

    res = quantize(model, bits=bits, high=high, low=low, order=order, quantizer=quantizer, group_size=group_size,
                   sym=not asym, act_order=act_order, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed,
                   order_seed=order_seed, targets=targets, ignore=ignore, plan=plan, out=out, overwrite=overwrite, overwrite_source=overwrite_source,
                   resume=resume, batch_size=batch_size, stream=False if in_memory else None, tokenizer=tokenizer,
                   evaluate=evaluate, target=target, format=format)
    console.print(res.plan.table(f"plan: {quantizer}, {order} order", max_rows=40))
    b = res.bits
    line = (f"bits: nominal {b['nominal_bits']:.4f}, effective {b['effective_bits_quantized']:.4f} on quantized "
            f"linears (scales, zeros, g_idx counted), {b['effective_bits_model']:.4f} over all parameters "
            "(unquantized embeddings, head and norms at their stored precision)")
    console.print(line)
    if "bytes_on_disk" in b:
        console.print(f"bytes on disk: {b['bytes_on_disk']:,} packed; {b.get('bytes_on_disk_dequantized', 0):,} "
                      "dequantized copy")
    if "gguf_bytes_quantized" in b:
        console.print(f"in a GGUF file these linears take {b['gguf_bytes_quantized']:,} bytes (Q4_0/Q5_0/Q8_0 blocks: "
                      f"{b['nominal_bits'] + 0.5:.4f} bits per weight)")
    t = res.timings
    console.print(f"time: {t['total_s']:.1f} s (ranking {t['ranking_s']:.1f}, forward {t['forward_s']:.1f}, "
                  f"statistics {t['stats_s']:.1f}, solve {t['solve_s']:.1f})")
    if res.metrics:
        console.print("perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in res.metrics.items()))
    if res.out:
        fmt = {"gptq": "GPTQ v1 with per-module bits", "compressed-tensors": "compressed-tensors pack-quantized, "
               "one config group per width"}[b["format"]]
        console.print(f"wrote {res.out} ({fmt}; dequantized/ loads with stock from_pretrained)")
