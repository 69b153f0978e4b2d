"""The driver: runs a recipe's stages in order on one model.

Block-by-block stages that can share one sweep are fused: a run of them (prune, quantize, ...) in
which every stage after the first plans without analysing the model before it (uniform sparsity,
ranking-free bits) runs as one pass with one activation stream per stage (`engine.Pass`), and gives
the same weights as the stages run one after the other. Every
other stage runs on the previous stage's model in memory; only the last stage writes `out`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .errors import ConfigError
from .recipe import Recipe, Stage, load_recipe


@dataclass
class CompressResult:
    model: nn.Module | None
    out: Path | None
    steps: list[dict] = field(default_factory=list)   # one entry per executed step (a stage or a fused pair)
    timings: dict = field(default_factory=dict)


def blockwise_stage(s: Stage):
    """The block-by-block stage object of a recipe stage (None for stages that are not)."""
    if s.kind == "prune":
        from .pipeline.prune import PruneStage

        return PruneStage(**s.options.api_options())
    if s.kind == "quantize":
        from .pipeline.quantize import QuantizeStage

        return QuantizeStage(**s.options.model_dump())
    return None


def fusable(a: Stage, b: Stage) -> bool:
    """b can join a's sweep: both are block-by-block stages and b's plan needs no analysis of the
    model a produces (its budgets do not depend on data)."""
    sa, sb = blockwise_stage(a), blockwise_stage(b)
    return sa is not None and sb is not None and sb.plans_without_data()


def schedule(recipe: Recipe, fuse: bool = True) -> list[list[Stage]]:
    """The stages grouped into steps: runs of fusable block-by-block stages share one sweep."""
    steps: list[list[Stage]] = []
    for st in recipe.stages:
        if fuse and steps and fusable(steps[-1][-1], st):
            steps[-1].append(st)
        else:
            steps.append([st])
    return steps


def _run_step(step: list[Stage], model, cal, out, common: dict):
    calib = dict(calib=cal.corpus, seed=cal.seed)
    stages = [blockwise_stage(s) for s in step]
    if stages[0] is not None:
        from .pipeline.blockwise import run_stage

        return run_stage(stages[-1], model, **calib, nsamples=cal.nsamples, seqlen=cal.seqlen,
                         batch_size=cal.batch_size, out=out, before=stages[:-1], **common)
    s = step[0]
    common = {k: v for k, v in common.items() if k != "stream"}
    if s.kind == "depth":
        from .pipeline.depth import depth

        return depth(model, **s.options.model_dump(), **calib, nsamples=min(cal.nsamples, 64), out=out, **common)
    if s.kind == "tokens":
        from .pipeline.tokens import tokens

        return tokens(model, **s.options.model_dump(), seed=cal.seed, calib=cal.corpus, out=out,
                      overwrite=common.get("overwrite", False))
    if s.kind == "search":
        from .pipeline.search import search

        return search(model, **s.options.model_dump(), seed=cal.seed,
                      data=cal.corpus if cal.corpus != "stdlib" else None, out=out,
                      overwrite=common.get("overwrite", False))
    from .pipeline.width import width

    return width(model, **s.options.model_dump(), **calib, nsamples=min(cal.nsamples, 32), out=out, **common)


def compress(model=None, recipe=None, *, out: str | Path | None = None, overwrite: bool = False,
             overwrite_source: bool = False, tokenizer=None, fuse: bool = True) -> CompressResult:
    """Run `recipe` (a Recipe, a dict or a YAML path) on `model` (zoo:NAME, a directory, a hub id or
    a LoadedModel; default: the recipe's `model`)."""
    from .io.load import load_model
    from .models.loader import LoadedModel
    from .pipeline.output import guard_output

    t0 = time.perf_counter()
    r = load_recipe(recipe)
    model = model if model is not None else r.model
    if model is None:
        raise ConfigError("no model: pass MODEL or set 'model' in the recipe")
    guard_output(out, model, tokenizer, r.calibration.corpus, overwrite=overwrite,
                 overwrite_source=overwrite_source)   # fail on a bad --out before any work
    steps = schedule(r, fuse)
    if len(steps) > 1 and not isinstance(model, LoadedModel):
        model = load_model(model, tokenizer=tokenizer if isinstance(tokenizer, str) else None)
    res = CompressResult(model=None, out=None)
    for k, step in enumerate(steps):
        last = k == len(steps) - 1
        common = dict(overwrite=overwrite, overwrite_source=overwrite_source) if last else {}
        if not last or isinstance(model, LoadedModel):
            common["stream"] = False
        t1 = time.perf_counter()
        out_k = _run_step(step, model, r.calibration, out if last else None, common)
        res.steps.append({"stages": [s.kind for s in step], "fused": len(step) > 1,
                          "options": [s.options.model_dump() for s in step], "seconds": time.perf_counter() - t1,
                          "result": out_k})
        if getattr(out_k, "model", None) is not None:
            tok = model.tokenizer if isinstance(model, LoadedModel) else None
            src = model.source if isinstance(model, LoadedModel) else str(model)
            model = LoadedModel(out_k.model, tok, f"{src}+{'+'.join(s.kind for s in step)}",
                                path=getattr(model, "path", None))
        res.out = getattr(out_k, "out", None)
    res.model = model.model if isinstance(model, LoadedModel) else None
    res.timings = {"total_s": time.perf_counter() - t0}
    return res
