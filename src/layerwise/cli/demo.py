from __future__ import annotations

import typer

from .app import app


@app.command("demo")
def demo_cmd(model: str = typer.Option("zoo:llama-12l", help="Model to demonstrate on."),
             out: str = typer.Option("runs/demo", "--out", help="Where the compressed models and reports go."),
             max_windows: int = typer.Option(200, help="Validation windows to score (speed of the demo)."),
             nsamples: int = typer.Option(64, help="Calibration sequences for pruning.")):
    """The reference model through every stage: prune, quantize, depth, width; compare side by side.

    Example: layerwise demo
    """
    from ..demo import run_demo

    run_demo(model=model, out=out, max_windows=max_windows, nsamples=nsamples)
