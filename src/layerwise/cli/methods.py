from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..console import console
from .app import app
from .common import print_json


def method_rows(kind: str | None = None) -> list[dict]:
    """Every registered method (after importing the packages that register them)."""
    from .. import allocate, prune, quant  # noqa: F401  (register their methods)
    from ..prune import depth, width  # noqa: F401
    from ..distill import objectives  # noqa: F401
    from .. import tokens  # noqa: F401
    from .. import rl  # noqa: F401
    from ..registry import ALL

    rows = [r for reg in ALL.values() for r in reg.rows()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def methods_markdown() -> str:
    """The table of methods in docs/methods.md, generated from the registries."""
    from ..registry import ALL

    rows = method_rows()
    out = ["# Methods", "", "Generated from the registries by `layerwise methods --markdown` "
           "(tests/test_layers.py checks that this file is current).", ""]
    for kind in sorted(ALL):
        out += [f"## {kind} (`{ALL[kind].option}`)", "", "| name | what it does | needs | options |", "|---|---|---|---|"]
        for r in (r for r in rows if r["kind"] == kind):
            opts = ", ".join(f"`{k}={v!r}`" for k, v in r["options"].items()) or "-"
            desc = r["description"].replace("|", "\\|")
            out.append(f"| `{r['name']}` | {desc} | {', '.join(r['needs']) or '-'} | {opts} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


@app.command("methods")
def methods_cmd(
    kind: Optional[str] = typer.Argument(None, help="Only this kind (pruner, quantizer, allocator, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the Markdown of docs/methods.md."),
):
    """List the registered methods: name, what it does, what it needs, its options.

    Example: layerwise methods pruner
    """
    from ..errors import ConfigError
    from ..registry import ALL

    rows = method_rows(kind)
    if kind is not None and kind not in ALL:
        raise ConfigError(f"unknown kind '{kind}'; choose one of {', '.join(ALL)}")
    if markdown:
        typer.echo(methods_markdown(), nl=False)
        return
    if as_json:
        print_json(rows)
        return
    t = Table(title="registered methods", title_justify="left")
    for c in ("kind", "name", "description", "needs", "options"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["kind"], r["name"], r["description"], ", ".join(r["needs"]),
                  ", ".join(f"{k}={v}" for k, v in r["options"].items()))
    console.print(t)
