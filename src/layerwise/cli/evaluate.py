from __future__ import annotations

from typing import Optional

import typer

from .app import app
from .common import print_json, print_kv


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="zoo:NAME, a save_pretrained directory, or a hub id."),
    data: str = typer.Option("stdlib", "--data", help="Corpus: stdlib, text:PATH or hf:NAME[:CONFIG[:SPLIT]]."),
    split: str = typer.Option("validation", help="train | validation | test | all."),
    seqlen: int = typer.Option(256, help="Window length in tokens (perplexity scores seqlen-1 per window)."),
    max_windows: Optional[int] = typer.Option(None, help="Score only the first N windows."),
    batch_size: int = typer.Option(8, help="Windows per forward pass."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference model for top-1 agreement/KL "
                                            "(LMs) or embedding cosine (encoders)."),
    tokenizer: Optional[str] = typer.Option(None, help="Tokenizer directory or zoo:NAME if the model has none."),
    no_speed: bool = typer.Option(False, "--no-speed", help="Skip the speed measurement."),
    no_bf16: bool = typer.Option(False, "--no-bf16", help="Skip the bfloat16 baseline speed (an fp32 model is "
                                 "also timed as a bf16 copy: what users deploy on CPUs with bf16 support)."),
    lm_eval: Optional[str] = typer.Option(None, "--lm-eval", help="lm-evaluation-harness tasks built offline from "
                                          "--data/--split: nextline (multiple choice), rolling (log-likelihood)."),
    lm_eval_items: int = typer.Option(200, "--lm-eval-items", help="Items (documents) per lm-eval task."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table."),
):
    """Perplexity, agreement with a reference, embedding fidelity and speed of a model.

    Example: layerwise eval zoo:llama-12l --data stdlib
    """
    from ..eval import evaluate
    from ..io.load import load_model

    from ..errors import ConfigError

    if seqlen < 2:
        raise ConfigError(f"--seqlen must be at least 2 (got {seqlen})")
    from ..data import load_corpus

    if data != "digits":         # the digit canvases of image models; a text model then refuses it by name
        load_corpus(data)  # a bad corpus fails before the model is loaded
    tasks = None
    if lm_eval is not None:
        from ..eval.lm_eval_tasks import parse_tasks

        tasks = parse_tasks(lm_eval)
        if lm_eval_items < 1:
            raise ConfigError(f"--lm-eval-items must be >= 1 (got {lm_eval_items})")
    lm = load_model(model, tokenizer=tokenizer)
    ref = load_model(reference, tokenizer=tokenizer) if reference else None
    rep = evaluate(lm, data=data, split=split, seqlen=seqlen, max_windows=max_windows, batch_size=batch_size,
                   reference=ref, speed=not no_speed, bf16=not no_bf16,
                   lm_eval=tasks, lm_eval_items=lm_eval_items)
    if as_json:
        print_json(rep.to_dict())
    else:
        print_kv(f"eval {model}", rep.rows())
