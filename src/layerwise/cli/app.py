"""The `layerwise` command: one typer app; each command group lives in its own module."""
from __future__ import annotations

import typer

from .._version import __version__

app = typer.Typer(
    name="layerwise",
    help="Compress trained networks layer by layer: analyze, allocate, prune/quantize, heal, evaluate, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"layerwise {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """layerwise: one plan, every granularity, end to end."""
