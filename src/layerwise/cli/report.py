from __future__ import annotations

import typer

from ..console import console
from .app import app


@app.command("report")
def report_cmd(
    directory: str = typer.Argument(..., help="An output directory of any layerwise command."),
):
    """Write DIR/report.html: one self-contained page (plots inlined) from the directory's report.md,
    manifest.json and plan.json. New outputs get it automatically; this rebuilds it for older ones.

    Example: layerwise report runs/q325
    """
    from pathlib import Path

    from ..errors import ConfigError
    from ..io.html import write_html

    d = Path(directory).expanduser()
    if not d.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    if not any((d / f).exists() for f in ("report.md", "manifest.json", "plan.json")):
        raise ConfigError(f"{directory} has no report.md, manifest.json or plan.json: not a layerwise output")
    console.print(f"wrote {write_html(d)}")
