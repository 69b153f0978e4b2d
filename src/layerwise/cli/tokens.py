from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from ..tokens import TOKEN_SELECTORS
from .app import app
from .common import parse_options, registry_option


@app.command("tokens")
def tokens_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id (Llama-like)."),
    method: str = registry_option("ftp", "--method", "-m", registry=TOKEN_SELECTORS, prefix="Token selector: "),
    sparsity: float = typer.Option(0.3, "--sparsity", help="Mean share of tokens the blocks SKIP, in [0, 1) "
                                   "(diffusion models: share of top-resolution self-attention tokens pruned)."),
    r: Optional[int] = typer.Option(None, "--r", help="Image encoders (ViT): tokens merged (tome) or dropped "
                                    "(random) after each block's attention; default: from --sparsity."),
    keep_ratio: Optional[float] = typer.Option(None, "--keep-ratio", help="Vision-language models: share of the "
                                               "vision tokens kept at --site, in (0, 1]; default 1 - --sparsity."),
    schedule: str = typer.Option("ga", "--schedule", help="Per-block shares: ga (searched) | uniform."),
    site: int = typer.Option(2, "--site", help="Block where a removing selector (fastv) acts."),
    steps: int = typer.Option(300, "--steps", help="Router training steps (trainable selectors)."),
    batch: int = typer.Option(8, "--batch", help="Sequences per router step."),
    seqlen: int = typer.Option(128, "--seqlen", help="Sequence length of text calibration and evaluation."),
    population: int = typer.Option(8, "--population", help="Schedule search: genomes per generation."),
    generations: int = typer.Option(10, "--generations", help="Schedule search: generations."),
    processes: int = typer.Option(1, "--processes", help="Train the router with `accelerate launch` in N CPU "
                                  "processes (N divides --batch)."),
    no_retune: bool = typer.Option(False, "--no-retune", help="Do not re-tune the schedule with the trained router."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="KEY=VALUE option of the selector "
                                               "(repeatable; `layerwise methods \"token selector\"`)."),
    seed: int = typer.Option(0, help="Seed of data, search and training."),
    calib: str = typer.Option("stdlib", "--calib", help="Text corpus (models without a task)."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Replay the token rows (schedule) of a plan.json."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (loads with layerwise.load)."),
    work_dir: Optional[str] = typer.Option(None, help="Router checkpoints (default OUT.work); rerun resumes."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
):
    """Token-wise pruning: each block computes only the tokens its selector keeps; the others skip it
    (decoders) or leave the sequence after the block's attention (image encoders: ToMe merging, random drop).

    Examples: layerwise tokens zoo:filler-lm --method ftp --sparsity 0.4 --schedule ga --out runs/ftp40;
    layerwise tokens zoo:vit-digits --method tome --r 6 --out runs/vit-tome6;
    layerwise tokens zoo:llava-quadrants --method fastv --site 1 --keep-ratio 0.25 --out runs/fastv25;
    layerwise tokens zoo:unet-digit-pairs --method simprune --sparsity 0.5 --out runs/simprune50
    """
    from ..pipeline.tokens import tokens

    res = tokens(model, method=method, sparsity=sparsity, schedule=schedule, site=site, steps=steps, batch=batch,
                 seqlen=seqlen, population=population, generations=generations, retune=not no_retune,
                 options=parse_options(option, "--option"), seed=seed, calib=calib, plan=plan, out=out,
                 overwrite=overwrite, work_dir=work_dir, tokenizer=tokenizer,
                 processes=processes, r=r, keep_ratio=keep_ratio)
    from rich.table import Table

    t = Table(title=f"{method} on {model}: schedule", title_justify="left")
    spatial = getattr(res, "routing", None)
    if hasattr(spatial, "ratio"):
        console.print(f"{method}: {spatial.ratio:.0%} of the top-resolution tokens pruned around attn1 "
                      f"({len(spatial.sites)} attention blocks; {spatial.computed_share():.0%} of their tokens computed)")
        console.print(", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
        if res.out:
            console.print(f"wrote {res.out} (model + token_routing.json, plan.json, report.md)")
        return
    counts = getattr(res, "r", None)
    for c in ("block", "tokens skipped") if counts is None else ("block", "tokens leaving"):
        t.add_column(c, justify="right")
    for i, d in enumerate(res.drop if counts is None else counts):
        t.add_row(str(i), f"{d:.1%}" if counts is None else str(d))
    console.print(t)
    console.print(", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
    if res.out:
        console.print(f"wrote {res.out} (model + token_routing.json, plan.json, report.md)")
