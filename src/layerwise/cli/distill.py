from __future__ import annotations

import typer

from .app import app


@app.command("distill")
def distill_cmd(job: str = typer.Argument(..., help="A job JSON (written by depth/width --distill).")):
    """Run a healing job (interval students, fine-tuning or logit KD); accelerate-launchable.

    Example: accelerate launch --num_processes 2 --cpu -m layerwise.distill.run runs/depth3.work/job.json
    """
    from ..distill.run import run_job

    run_job(job)
