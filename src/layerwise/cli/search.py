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
                                          "a search space (e.g. zoo:resnet-digits)."),
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
    data: Optional[str] = typer.Option(None, "--data", help="Training data (default: what the model's card names)."),
    seed: int = typer.Option(0, help="Seed of the search, the initialisation and the training."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory."),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Search per-layer widths and per-stage depths under a FLOPs target (TAS), then distil the searched network.

    Example: layerwise search zoo:resnet-digits --flops 0.5 --space width,depth --distill --out runs/tas50
    """
    from ..pipeline.search import search

    res = search(model, flops=flops, method=method, space=space, distill=distill, kd=kd, epochs=epochs,
                 kd_epochs=kd_epochs, inherit=inherit, align=align, seed=seed, data=data,
                 options=parse_options(option, "--option"), out=out, overwrite=overwrite)
    from rich.table import Table

    g = res.genotype
    t = Table(title=f"searched shape ({g.method}): {g.ratio:.1%} of dense FLOPs", title_justify="left")
    for c in ("block", "stage", "action", "conv1 width", "conv2 width"):
        t.add_column(c, justify="right")
    widths = {(u.block, u.where): u.total - len(u.removed) for u in res.plan.units}
    totals = {(u.block, u.where): u.total for u in res.plan.units}
    for b in res.plan.blocks:
        cells = [f"{widths[(b.block, w)]}/{totals[(b.block, w)]}" if b.action == "keep" else "-"
                 for w in ("conv1", "conv2")]
        t.add_row(str(b.block), str(b.scores.get("stage", "")), b.action, *cells)
    console.print(t)
    console.print(f"FLOPs {g.flops / 1e6:.3f} M of {g.full_flops / 1e6:.3f} M; stem width {g.choices.get('stem')}")
    for k, v in res.metrics.items():
        console.print(f"{k}: test accuracy {v['accuracy']:.4f}, NLL {v['nll']:.4f}")
    if res.out:
        console.print(f"wrote {res.out}")
