from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from ..prune.depth import DEPTH_SELECTORS
from .app import app
from ..distill.objectives import HEALERS
from .common import parse_options, registry_option


@app.command("depth")
def depth_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id."),
    remove: str = typer.Option("25%", "--remove", help="Blocks to remove: a count (3) or a share (25%)."),
    select: str = registry_option("ppcl", "--select", registry=DEPTH_SELECTORS),
    heal: str = registry_option("none", "--heal", registry=HEALERS, prefix="Healing after removal: "),
    heal_option: Optional[list[str]] = typer.Option(None, "--heal-option", help="KEY=VALUE option of the healing "
                                                    "objective (repeatable; `layerwise methods` lists them)."),
    distill: bool = typer.Option(False, "--distill", hidden=True, help="Same as --heal distill."),
    finetune: bool = typer.Option(False, "--finetune", hidden=True, help="Same as --heal finetune."),
    steps: int = typer.Option(200, help="Training steps of the healing."),
    lr: float = typer.Option(2e-4, help="Peak learning rate (cosine schedule)."),
    global_batch: int = typer.Option(16, help="Sequences per step across all processes."),
    processes: int = typer.Option(1, help="Train with `accelerate launch --num_processes N --cpu`."),
    family: bool = typer.Option(False, "--family", help="Save a pluggable family: every nested subset of the "
                                                      "intervals loads with layerwise.load(OUT, depth=N)."),
    seed: int = typer.Option(0, help="Seed of calibration, random selection and training data."),
    calib: str = typer.Option("stdlib", "--calib", help="Calibration / training corpus."),
    nsamples: int = typer.Option(64, help="Calibration sequences for the depth map."),
    max_len: int = typer.Option(3, help="Longest interval (blocks removed by one student)."),
    protect: int = typer.Option(2, help="Blocks at the head and tail never put in a PPCL interval."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (stock save_pretrained)."),
    plan: Optional[str] = typer.Option(None, "--plan", help="Replay (a hand-edited) plan.json of a depth run: "
                                                           "its block rows decide what goes."),
    work_dir: Optional[str] = typer.Option(None, help="Training checkpoints (default OUT.work); rerun resumes."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    overwrite_source: bool = typer.Option(False, "--overwrite-source",
                                          help="Allow --out to be the model directory itself: the new model is "
                                               "verified first and the old one kept as a backup until it is."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer if the model has none."),
    evaluate: bool = typer.Option(False, "--eval", help="Validation perplexity of dense, pruned and variants."),
):
    """Remove whole blocks (contiguous intervals for ppcl), optionally heal, save a loadable model.

    Example: layerwise depth zoo:llama-12l --remove 3 --select ppcl --heal distill --steps 200 --out runs/depth3
    """
    from ..errors import ConfigError
    from ..pipeline.depth import depth

    if distill + finetune + (heal != "none") > 1:
        raise ConfigError("choose one healing: --heal NAME (--distill and --finetune are its old spellings)")
    heal = "distill" if distill else "finetune" if finetune else heal
    res = depth(model, remove=remove, select=select, seed=seed, heal=heal,
                heal_options=parse_options(heal_option, "--heal-option"), steps=steps, lr=lr, global_batch=global_batch,
                processes=processes, family=family, calib=calib, nsamples=nsamples, max_len=max_len,
                protect=protect, out=out, overwrite=overwrite, overwrite_source=overwrite_source, work_dir=work_dir, tokenizer=tokenizer,
                evaluate=evaluate, plan=plan)
    from rich.table import Table

    dm = res.dmap
    t = Table(title=f"depth map: {model}", title_justify="left")
    for c in ("block", "BI", "probe fidelity", "CKA(h_i,h_i+1)", "ΔCKA", "action"):
        t.add_column(c, justify="right")
    for i in range(dm.num_blocks):
        t.add_row(str(i), f"{dm.bi[i]:.4f}", f"{dm.probe[i]:.4f}", f"{dm.cka[i]:.4f}",
                  f"{dm.dcka[i]:+.4f}" if i < len(dm.dcka) else "", "remove" if i in res.removed else "keep")
    console.print(t)
    console.print("intervals: " + ", ".join(f"[{iv['start']},{iv['end']}]" for iv in res.intervals))
    if res.metrics:
        console.print("perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in res.metrics.items()))
    if res.out:
        console.print(f"wrote {res.out} (stock save_pretrained, plan.json, report.md)")
