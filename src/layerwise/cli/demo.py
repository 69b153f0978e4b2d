from __future__ import annotations

import typer

from .app import app


@app.command("demo")
def demo_cmd(model: str = typer.Option("zoo:llama-12l", help="Model to demonstrate on."),
             max_windows: int = typer.Option(200, help="Validation windows to score (speed of the demo).")):
    """Load the shipped reference model, print its card and evaluate it.

    Example: layerwise demo
    """
    from ..demo import run_demo

    run_demo(model=model, max_windows=max_windows)
