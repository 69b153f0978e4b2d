from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from ..search import SEARCHERS
from .app import app
from .common import parse_options, registry_option


@app.command("search")
def search_cmd(
    model: str = typer.Argument(..., help="zoo:NAME or a save_pretrained directory of a model whose adapter exposes "
                                          "a search space (zoo:resnet-digits, Llama-like decoders)."),
    flops: float = typer.Option(0.5, "--flops", help="Share of the dense network's FLOPs to keep, in (0, 1]."),
    method: str = registry_option("tas", "--method", registry=SEARCHERS, prefix="Shape search: "),
    space: str = typer.Option("width,depth", "--space", help="What is searched: width, depth or width,depth."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Search epochs (TAS; default 30)."),
    distill: bool = typer.Option(True, "--distill/--no-distill", help="Train the searched network afterwards."),
    kd: bool = typer.Option(True, "--kd/--no-kd", help="Train by distillation from the dense network (else "
                                                       "cross-entropy only)."),
    kd_epochs: int = typer.Option(40, "--kd-epochs", help="Epochs of that training."),
    inherit: bool = typer.Option(False, "--inherit", help="Start from the supernet's weights instead of a fresh "
                                                          "initialisation (TAS trains from scratch by default)."),
    align: str = typer.Option("cwi", "--align", help="How mixed feature maps of different widths are aligned in "
                                                     "the search: cwi (channel-wise interpolation) or zero."),
    option: Optional[list[str]] = typer.Option(None, "--option", help="KEY=VALUE option of the search method "
                                                                      "(repeatable), e.g. arch_lr=0.02."),
    data: Optional[str] = typer.Option(None, "--data", help="Training data (default: what the model's card names; "
                                                            "stdlib for language models)."),
    tokens: int = typer.Option(0, "--tokens", help="Language models: training tokens of the KD healing after the "
                                                  "search (the width command's healing)."),
    lr: float = typer.Option(2e-4, "--lr", help="Language models: peak learning rate of the healing."),
    global_batch: int = typer.Option(8, "--global-batch", help="Language models: sequences per healing step."),
    criterion: str = typer.Option("taylor", "--criterion", help="Language models: how units are ranked (a width "
                                                                "criterion); candidate width c keeps the top c."),
    seed: int = typer.Option(0, help="Seed of the search, the initialisation and the training."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory."),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Search per-layer widths and per-stage depths under a FLOPs target (TAS), then distil the searched network.

    Example: layerwise search zoo:resnet-digits --flops 0.5 --space width,depth --distill --out runs/tas50

    Example: layerwise search zoo:llama-12l --flops 0.5 --space width --epochs 4 --tokens 163840 --out runs/tas-llm
    """
    from ..pipeline.search import search

    res = search(model, flops=flops, method=method, space=space, distill=distill, kd=kd, epochs=epochs,
                 kd_epochs=kd_epochs, inherit=inherit, align=align, seed=seed, data=data,
                 options=parse_options(option, "--option"), out=out, overwrite=overwrite, tokens=tokens, lr=lr,
                 global_batch=global_batch, criterion=criterion)
    from rich.table import Table

    g = res.genotype
    t = Table(title=f"searched shape ({g.method}): {g.ratio:.1%} of dense FLOPs", title_justify="left")
    wheres = list(dict.fromkeys(u.where for u in res.plan.units))
    for c in ("block", "stage", "action", *(f"{w} width" for w in wheres)):
        t.add_column(c, justify="right")
    widths = {(u.block, u.where): u.total - len(u.removed) for u in res.plan.units}
    totals = {(u.block, u.where): u.total for u in res.plan.units}
    for b in res.plan.blocks:
        cells = [f"{widths[(b.block, w)]}/{totals[(b.block, w)]}" if b.action == "keep" else "-" for w in wheres]
        t.add_row(str(b.block), str(b.scores.get("stage", "")), b.action, *cells)
    console.print(t)
    console.print(f"FLOPs {g.flops / 1e6:.3f} M of {g.full_flops / 1e6:.3f} M"
                  + (f"; stem width {g.choices['stem']}" if "stem" in g.choices else ""))
    for k, v in res.metrics.items():
        console.print(f"{k}: test accuracy {v['accuracy']:.4f}, NLL {v['nll']:.4f}" if isinstance(v, dict)
                      else f"{k}: {v:.4f}")
    if res.out:
        console.print(f"wrote {res.out}")
