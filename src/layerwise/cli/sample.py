from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from .app import app


@app.command("sample")
def sample_cmd(
    model: str = typer.Argument(..., help="A class-conditional flow generator: zoo:NAME or a directory."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Class(es) to draw, e.g. 3 or 0,1,2 or all."),
    n: int = typer.Option(16, "--n", help="Samples per class."),
    steps: int = typer.Option(20, help="Sampling steps."),
    eta: float = typer.Option(0.3, help="SDE noise level (0: the deterministic Euler ODE)."),
    shift: float = typer.Option(1.0, help="Schedule shift."),
    seed: int = typer.Option(0, help="Seed of the initial and step noises."),
    out: str = typer.Option(..., "--out", "-o", help="PNG grid to write (one row per class); also OUT.pt with the samples."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    judge: Optional[str] = typer.Option(None, help="A judge classifier: print its accuracy on the samples."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Blocks of the member of a depth family "
                                                             "(layerwise depth --family) to sample from."),
):
    """Draw samples from a flow generator and write them as an image grid.

    Example: layerwise sample zoo:dit-digits --prompt 0,1,2 --n 8 --out grid.png
    """
    from ..pipeline.sample import sample

    res = sample(model, prompt, n=n, steps=steps, eta=eta, shift=shift, seed=seed, out=out, overwrite=overwrite,
                 judge=judge, depth=depth)
    if "prompt_accuracy" in res:
        console.print(f"judge accuracy on the prompts: {res['prompt_accuracy']:.4f} ({res['samples']} samples)")
    console.print(f"wrote {res['out']} and {res['tensor']}")
