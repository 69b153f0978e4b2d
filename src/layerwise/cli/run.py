from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from .app import app


@app.command("run")
def run_cmd(
    recipe: str = typer.Argument(..., help="Recipe YAML: calibration and an ordered list of stages."),
    model: Optional[str] = typer.Argument(None, help="zoo:NAME, a directory or a hub id (default: the recipe's)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory of the last stage."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    overwrite_source: bool = typer.Option(False, "--overwrite-source",
                                          help="Allow --out to be the model directory itself (verified first)."),
    no_fuse: bool = typer.Option(False, "--no-fuse", help="Run every stage in its own block-by-block pass."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
):
    """Run a recipe: stages in order (prune, quantize, depth, width), fusing those that share a pass.

    Example: layerwise run recipes/sparsegpt50-gptq4.yaml zoo:llama-12l --out runs/sg50-q4
    """
    from ..driver import compress

    res = compress(model, recipe, out=out, overwrite=overwrite, overwrite_source=overwrite_source,
                   tokenizer=tokenizer, fuse=not no_fuse)
    for s in res.steps:
        console.print(f"{' + '.join(s['stages'])}{' (fused: one block-by-block pass)' if s['fused'] else ''}: "
                      f"{s['seconds']:.1f} s")
    console.print(f"total {res.timings['total_s']:.1f} s")
    if res.out:
        console.print(f"wrote {res.out}")
