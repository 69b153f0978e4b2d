from __future__ import annotations

import typer

from .app import app


@app.command("distill")
def distill_cmd(job: str = typer.Argument(..., help="A job JSON (written by depth/width --distill).")):
    """Run a healing job (interval students, fine-tuning or logit KD); accelerate-launchable.

    Example: layerwise distill runs/depth3.work/job.json
    """
    from ..distill.run import run_job

    run_job(job)
