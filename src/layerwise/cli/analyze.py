from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from ..console import console
from .app import app
from ..scores.base import SCORES
from .common import print_json, registry_option


@app.command("analyze")
def analyze_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id."),
    scores: str = registry_option("lim,zd,bi,alpha,farms", "--scores", registry=SCORES,
                                  prefix="Comma-separated: ", suffix=", or all."),
    calib: str = typer.Option("stdlib", "--calib", help="Calibration corpus."),
    nsamples: int = typer.Option(32, help="Calibration sequences."),
    seqlen: int = typer.Option(256, help="Tokens per calibration sequence."),
    seed: int = typer.Option(0, help="Seed of the calibration sample and the zeroth-order directions."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write analysis.json, plots and a report here."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    farms_rows: Optional[int] = typer.Option(None, help="FARMS window rows m (default: smallest matrix dim)."),
    farms_windows: int = typer.Option(8, help="FARMS windows per dimension K."),
    xmin: str = typer.Option("peak", help="Power-law tail start: peak | mid | search."),
    reference_exact: bool = typer.Option(False, "--reference-exact",
                                         help="ESD α as the AlphaPruning/FARMS repositories compute it (their "
                                              "tail-start comparison, no zero-eigenvalue filter)."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Score every block and linear: LIM, Block Influence, ZD, ESD alpha (plain and FARMS), OWL, zeroth-order.

    Example: layerwise analyze zoo:llama-12l --scores lim,zd,bi,alpha,farms,zeroth_order --out runs/analysis
    """
    from ..pipeline.analyze import analyze

    an = analyze(model, scores=scores, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, out=out,
                 overwrite=overwrite, farms_rows=farms_rows, farms_windows=farms_windows, xmin=xmin,
                 tokenizer=tokenizer, reference_exact=reference_exact)
    if as_json:
        print_json(an.to_dict())
        return
    rows = an.block_table()
    t = Table(title=f"layer analysis: {model}", title_justify="left")
    for c in rows[0]:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()])
    from ..scores.base import SCORES

    t.caption = "; ".join(f"{n}: {'higher' if SCORES[n].higher_is_important else 'lower'} = more important"
                          for n in an.block_scores)
    console.print(t)
    console.print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in an.timings.items()))
    if out:
        console.print(f"wrote {out} (analysis.json, report.md, report.html, plots)")
