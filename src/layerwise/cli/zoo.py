from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..console import console
from .app import app
from .common import print_json

zoo_app = typer.Typer(help="Reference models: list, inspect and (re)train them.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json")):
    """List the models shipped with layerwise (and those PyPI extras provide).

    Example: layerwise zoo list
    """
    from .. import zoo

    rows = []
    for name in zoo.names():
        try:
            card = zoo.info(name)
            params = card.get("parameters")
            ppl = (card.get("eval") or {}).get("perplexity")
            rows.append({"name": name, "architecture": card.get("architecture"), "parameters": params,
                         "val_ppl": ppl, "description": card.get("description", ""), "available": True})
        except Exception as e:  # an extra that is not installed
            rows.append({"name": name, "architecture": None, "parameters": None, "val_ppl": None,
                         "description": str(e), "available": False})
    if as_json:
        print_json(rows)
        return
    t = Table(title="layerwise zoo", title_justify="left")
    for col in ("name", "architecture", "parameters", "val ppl (stdlib)", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(f"zoo:{r['name']}", r["architecture"] or "-",
                  f"{r['parameters']:,}" if r["parameters"] else "-",
                  f"{r['val_ppl']:.3f}" if r["val_ppl"] else "-", r["description"])
    console.print(t)


@zoo_app.command("info")
def zoo_info(name: str = typer.Argument(..., help="Model name, e.g. llama-12l."),
             as_json: bool = typer.Option(False, "--json")):
    """Print a model's card (corpus, tokenizer, config, seed, steps, time, perplexity).

    Example: layerwise zoo info llama-12l
    """
    from .. import zoo
    from ..zoo.card import card_markdown

    name = name[4:] if name.startswith("zoo:") else name
    card = zoo.info(name)
    if as_json:
        print_json({k: v for k, v in card.items()})
    elif "training" in card:
        from rich.markdown import Markdown

        console.print(Markdown(card_markdown(card).replace("![training curve](curve.png)",
                                                           f"training curve: {zoo.path(name) / 'curve.png'}")))
    else:
        print_json(card)


@zoo_app.command("train")
def zoo_train(name: str = typer.Argument(..., help="Model name, e.g. llama-tiny."),
              out: str = typer.Option(..., "--out", help="Output directory (save_pretrained + card)."),
              work_dir: Optional[str] = typer.Option(None, help="Checkpoints; rerun to resume (default OUT.work)."),
              steps: Optional[int] = typer.Option(None, help="Override the number of steps (not the shipped recipe)."),
              threads: Optional[int] = typer.Option(None, help="Torch threads (default: all cores)."),
              overwrite: bool = typer.Option(False, "--overwrite")):
    """Train a reference model deterministically on its corpus; resumes after an interruption.

    Example: layerwise zoo train llama-tiny --out runs/llama-tiny
    """
    from ..zoo.train import train

    name = name[4:] if name.startswith("zoo:") else name
    train(name, out, work_dir=work_dir, steps=steps, threads=threads, overwrite=overwrite)
