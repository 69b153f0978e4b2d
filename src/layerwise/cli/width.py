from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from ..prune.width import WIDTH_CRITERIA
from .app import app
from ..distill.objectives import HEALERS
from .common import parse_options, registry_option


@app.command("width")
def width_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id (Llama-like)."),
    params: float = typer.Option(0.6, "--keep-params", "--params", help="Share of block parameters to KEEP, e.g. 0.6 "
                                 "(--sparsity and --remove elsewhere name what goes)."),
    adaptive: bool = typer.Option(False, "--adaptive", help="Adapt-Pruner per-layer shares: layers that change "
                                                            "their input most are pruned least."),
    criterion: str = registry_option("taylor", "--criterion", registry=WIDTH_CRITERIA, prefix="Group importance: "),
    incremental: bool = typer.Option(False, "--incremental", help="Prune in steps, healing after each."),
    step: float = typer.Option(0.05, help="Share of the original block parameters removed per stage."),
    tokens: int = typer.Option(0, help="Training tokens of the healing (0 = no healing)."),
    epochs: int = typer.Option(0, "--epochs", help="Image classifiers: healing epochs over the canvases the model "
                                                  "was trained on, after each stage (0 = no healing)."),
    heal: str = registry_option("kd", "--heal", registry=HEALERS, prefix="Healing objective when --tokens > 0: "),
    heal_option: Optional[list[str]] = typer.Option(None, "--heal-option", help="KEY=VALUE option of the healing "
                                                    "objective (repeatable), e.g. temperature=2."),
    lr: float = typer.Option(2e-4, help="Peak learning rate of the global schedule."),
    global_batch: int = typer.Option(16, help="Sequences per training step."),
    seed: int = typer.Option(0, help="Seed of calibration and training data."),
    calib: str = typer.Option("stdlib", "--calib", help="Calibration / training corpus."),
    nsamples: int = typer.Option(32, help="Calibration sequences per pruning step."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Replay (a hand-edited) plan.json of a width run: "
                                                           "its unit rows decide what goes, stage by stage."),
    work_dir: Optional[str] = typer.Option(None, help="Training checkpoints (default OUT.work)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    overwrite_source: bool = typer.Option(False, "--overwrite-source",
                                          help="Allow --out to be the model directory itself: the new model is "
                                               "verified first and the old one kept as a backup until it is."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
    evaluate: bool = typer.Option(False, "--eval", help="Validation perplexity before and after."),
    multiple_of: int = typer.Option(1, "--multiple-of", help="Keep a multiple of N MLP channels per layer (e.g. 64 "
                                    "or 128: matrix kernels run whole tiles); the budget is met as closely as "
                                    "multiples of N allow."),
):
    """Remove attention heads (whole KV groups) and MLP channels; the saved matrices are smaller.

    Example: layerwise width zoo:llama-12l --params 0.7 --adaptive --incremental --step 0.05 --tokens 2000000 --out runs/w70
    """
    from ..pipeline.width import width

    res = width(model, params=params, adaptive=adaptive, criterion=criterion, incremental=incremental, step=step,
                tokens=tokens, heal=heal, heal_options=parse_options(heal_option, "--heal-option"), lr=lr, global_batch=global_batch, seed=seed, calib=calib, nsamples=nsamples,
                out=out, plan=plan, overwrite=overwrite, overwrite_source=overwrite_source, work_dir=work_dir, tokenizer=tokenizer, evaluate=evaluate,
                multiple_of=multiple_of, epochs=epochs)
    from rich.table import Table

    from ..prune.width import widths

    t = Table(title=f"widths after pruning: {model}", title_justify="left")
    for c in ("block", "heads", "kv heads", "MLP channels"):
        t.add_column(c, justify="right")
    for w in widths(res.model):
        t.add_row(str(w["block"]), str(w["num_attention_heads"]), str(w["num_key_value_heads"]),
                  str(w["intermediate_size"]))
    console.print(t)
    console.print(f"block parameters {res.params_before:,} → {res.params_after:,} "
                  f"({res.params_after / res.params_before:.1%} kept) in {len(res.stages)} stage(s)")
    if res.metrics:
        console.print("perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in res.metrics.items()))
    if res.out:
        console.print(f"wrote {res.out}")
