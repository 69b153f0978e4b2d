from __future__ import annotations

from typing import List, Optional

import typer

from ..console import console
from ..allocate import ALLOCATORS
from ..prune import PRUNERS
from .app import app
from .common import registry_option


@app.command("prune")
def prune_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id."),
    method: str = registry_option("wanda", "--method", "-m", registry=PRUNERS),
    sparsity: float = typer.Option(0.5, "--sparsity", "-s", help="Fraction of weights to remove, in [0, 1)."),
    nm: Optional[str] = typer.Option(None, "--nm", help="Semi-structured N:M (keep N of every M), e.g. 2:4."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (written atomically)."),
    calib: str = typer.Option("stdlib", "--calib", help="Calibration corpus: stdlib, text:PATH, hf:NAME."),
    nsamples: int = typer.Option(128, help="Calibration sequences."),
    seqlen: int = typer.Option(256, help="Tokens per calibration sequence."),
    seed: int = typer.Option(0, help="Seed of the calibration sample."),
    targets: Optional[List[str]] = typer.Option(None, "--targets", help="Only these linears (substring or re:REGEX); repeatable."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="Skip these linears (substring or re:REGEX); repeatable."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Replay a (hand-edited) plan.json instead of --sparsity."),
    allocation: str = registry_option("uniform", "--allocation", registry=ALLOCATORS, prefix="Per-layer sparsity: "),
    max_sparsity: float = typer.Option(0.99, help="Upper bound of any layer's sparsity under an allocation."),
    owl_lambda: float = typer.Option(0.08, help="OWL: sparsities spread over target ± lambda."),
    epsilon: float = typer.Option(0.2, help="AlphaPruning/FARMS: sparsity scale spread [1-eps, 1+eps]."),
    p_max: Optional[float] = typer.Option(None, help="ECoFLaP: maximum block sparsity (default target + 0.1)."),
    xmin: str = typer.Option("peak", help="AlphaPruning/FARMS: power-law tail start: peak | mid | search."),
    reference_exact: bool = typer.Option(False, "--reference-exact",
                                         help="AlphaPruning/FARMS: the reference repositories' exact ESD fit."),
    farms_rows: Optional[int] = typer.Option(None, help="FARMS window rows m (default: smallest matrix dim)."),
    farms_windows: int = typer.Option(8, help="FARMS windows per dimension K."),
    propagate: str = typer.Option("pruned", help="Feed the next block the pruned (default) or dense outputs."),
    batch_size: int | None = typer.Option(
        None, help="Calibration sequences per block forward [default: 8, fewer above 2048 tokens per batch]."),
    in_memory: bool = typer.Option(False, "--in-memory", help="Load the whole model instead of streaming blocks."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run at its last finished block."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out directory."),
    overwrite_source: bool = typer.Option(False, "--overwrite-source",
                                          help="Allow --out to be the model directory itself: the new model is "
                                               "verified first and the old one kept as a backup until it is."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer directory or zoo:NAME if the model has none."),
    evaluate: bool = typer.Option(False, "--eval", help="Measure validation perplexity before and after."),
):
    """Prune the linears of every block to a sparsity, block by block, and save a reloadable checkpoint.

    Example: layerwise prune zoo:llama-12l --method sparsegpt --sparsity 0.5 --out runs/sgpt50
    """
    from ..pipeline.prune import prune

    res = prune(model, method=method, sparsity=sparsity, nm=nm, calib=calib, nsamples=nsamples, seqlen=seqlen,
                seed=seed, targets=targets, ignore=ignore, plan=plan, allocation=allocation, out=out,
                overwrite=overwrite, overwrite_source=overwrite_source, resume=resume, propagate=propagate, batch_size=batch_size,
                stream=False if in_memory else None, tokenizer=tokenizer, evaluate=evaluate,
                max_sparsity=max_sparsity,
                allocation_params=_alloc_params(allocation, {"owl_lambda": owl_lambda, "epsilon": epsilon, "p_max": p_max,
                                                             "xmin": xmin, "reference_exact": reference_exact,
                                                             "farms_rows": farms_rows, "farms_windows": farms_windows}))
    console.print(res.plan.table(f"plan: {method}", max_rows=40))
    t = res.timings
    console.print(f"time: {t['total_s']:.1f} s (capture {t['capture_s']:.1f}, forward {t['forward_s']:.1f}, "
                  f"statistics {t['stats_s']:.1f}, solve {t['solve_s']:.1f}, io {t['io_s']:.1f})")
    if res.metrics:
        console.print("perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in res.metrics.items()))
    if res.out:
        console.print(f"wrote {res.out} (plan.json, manifest.json, report.md)")


def _alloc_params(allocation: str, options: dict) -> dict:
    from ..allocate import ALLOCATORS, allocator_options

    if allocation not in ALLOCATORS:
        return {}   # prune() reports the unknown name with the choices
    return allocator_options(allocation, options)
