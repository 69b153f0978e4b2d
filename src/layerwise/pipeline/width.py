"""`layerwise width`: structured pruning of heads (by KV group) and MLP channels, uniform or adaptive,
one-shot or incremental (prune ~5%, heal by distillation from the dense teacher, repeat)."""
from __future__ import annotations

import copy
from contextlib import nullcontext
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..plan import Plan, UnitRow
from ..console import info
from ..data.tokens import eval_windows
from ..distill.driver import TrainConfig
from ..distill.objectives import HEALERS
from ..engine import InMemoryStore, run_sequential
from ..errors import ConfigError, DataError
from ..utils.checks import count, positive
from ..prune.width import (WIDTH_CRITERIA, LayerCut, apply_mask, layouts, plan_cuts, removed_params, shrink,
                           unit_scores, widths)
from ..scores.similarity import mean_token_cosine
from ..models.adapters import get_adapter
from ..models.files import check_model_dir
from ..utils.hf import quiet
from .output import guard_output
from .source import calibration_inputs, resolve

@dataclass
class WidthResult:
    model: nn.Module
    stages: list[dict] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    out: Path | None = None
    metrics: dict = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def block_params(model: nn.Module) -> int:
    return sum(lay.params for lay in layouts(model))


@torch.no_grad()
def _activation_stats(model, samples, batch_size):
    """Per block: input statistics of each linear (by its path in the block), and −cos(h_in, h_out)
    (the block's importance)."""
    stats: dict[int, dict] = {}
    imp: dict[int, float] = {}

    def action(work):
        stats[work.index] = {r.local: work.stats[r.name] for r in work.linears}
        return []

    def observe(i, inputs, outputs):
        imp[i] = -mean_token_cosine(inputs, outputs)

    run_sequential(InMemoryStore(model), samples, action, gram=False, propagate="dense", batch_size=batch_size,
                   description="width statistics", observe=observe)
    return stats, [imp[i] for i in range(len(imp))]


def _taylor_grads(model, samples, batch_size) -> dict:
    from ..models.loader import is_causal_lm

    if not is_causal_lm(model):
        raise ConfigError(f"the taylor criterion needs a language-model loss, which {type(model).__name__} has "
                          "not; use --criterion magnitude, wanda or flap")
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    for i in range(0, samples.shape[0], batch_size):
        ids = samples[i:i + batch_size]
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    grads = {n[: -len(".weight")]: p.grad.detach().clone() for n, p in model.named_parameters()
             if n.endswith(".weight") and p.grad is not None}
    model.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        p.requires_grad_(was[n])
    return grads


def rank_units(model, samples, criterion: str, importance: bool = False, batch_size: int = 8):
    """(unit scores per block, block importance or None): the statistics `criterion` needs, from `samples`
    (the importance −cos(h_in, h_out) too when asked)."""
    needs = WIDTH_CRITERIA.get(criterion).needs
    need_stats = "calibration" in needs or importance
    stats, imp = _activation_stats(model, samples, batch_size) if need_stats else (None, None)
    grads = _taylor_grads(model, samples, batch_size) if "gradients" in needs else None
    return unit_scores(model, criterion, stats, grads), imp


def prune_once(model, samples, remove: int, criterion: str, adaptive: bool, batch_size: int = 8,
               amplitude: float = 1.0, multiple_of: int = 1) -> list[LayerCut]:
    scores, imp = rank_units(model, samples, criterion, adaptive, batch_size)
    return plan_cuts(model, scores, remove, adaptive, imp, amplitude=amplitude, multiple_of=multiple_of)


def stage_tokens(total_steps: int, stages: int) -> list[int]:
    """Adapt-Pruner's linearly growing shards: stage i gets 2i/(N(N+1)) of the steps; exact total."""
    from ..linalg import largest_remainder

    return largest_remainder(total_steps, [2 * (i + 1) / (stages * (stages + 1)) for i in range(stages)])


def width(model, *, params: float = 0.6, adaptive: bool = False, criterion: str = "taylor",
          incremental: bool = False, step: float = 0.05, tokens: int = 0, lr: float = 2e-4,
          global_batch: int = 16, train_seqlen: int = 256, heal: str = "kd",
          heal_options: dict | None = None, calib: str = "stdlib",
          nsamples: int = 32, seqlen: int = 256, seed: int = 0, out: str | Path | None = None,
          overwrite: bool = False, work_dir: str | Path | None = None, tokenizer=None, evaluate: bool = False,
          eval_windows_n: int = 200, amplitude: float = 1.0, mask_only: bool = False,
          overwrite_source: bool = False, plan=None, multiple_of: int = 1, epochs: int = 0) -> WidthResult:
    """Keep `params` of the block parameters (0 < params < 1), or replay the cuts of a width `plan`.
    `multiple_of`: every layer keeps a multiple of this many MLP channels. Healing: `tokens` of text for a
    language model; `epochs` over the training canvases for an image classifier (`heal` kd: distillation
    from the dense model plus the labels; finetune: labels only)."""
    art = guard_output(out, model, tokenizer, calib, work_dir, overwrite, overwrite_source, plan=plan)
    with art.run() if art is not None else nullcontext():
        return _width(model, params=params, adaptive=adaptive, criterion=criterion, incremental=incremental,
                      step=step, tokens=tokens, lr=lr, global_batch=global_batch, train_seqlen=train_seqlen,
                      heal=heal, heal_options=heal_options, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, art=art,
                      work_dir=work_dir, tokenizer=tokenizer, evaluate=evaluate, eval_windows_n=eval_windows_n,
                      amplitude=amplitude, mask_only=mask_only, plan=plan, multiple_of=multiple_of, epochs=epochs)


def _heal_images(heal: str, student, teacher, src, epochs: int, lr: float, seed: int, k: int, n_stages: int,
                 global_batch: int) -> list[dict]:
    """Heal a width-pruned image classifier by `epochs` over the canvases it was trained on: KD from the
    dense model (TAS's objective, 0.9·T²·KL + 0.1·CE) or plain cross-entropy (`finetune`)."""
    from ..data.images import canvases_for
    from ..distill.classifier import TrainConfig as ImageTrainConfig, train_classifier

    card = (src.loaded.card or {}) if src.loaded is not None else {}
    adapter = get_adapter(teacher)
    _, size, _ = adapter.image_shape()
    train_set = canvases_for("train", size, card.get("data"))
    for p in student.parameters():
        p.requires_grad_(True)
    cfg = ImageTrainConfig(epochs=epochs, batch_size=global_batch, lr=lr, weight_decay=0.05, seed=seed + k,
                           optimizer="adamw", warmup_epochs=min(1.0, epochs / 5),
                           kd_alpha=0.9 if heal == "kd" else 0.0)
    res = train_classifier(student, train_set, cfg, teacher=teacher if heal == "kd" else None,
                           description=f"stage {k}/{n_stages} {heal}")
    for p in student.parameters():
        p.requires_grad_(False)
    return [{**r, "stage": k} for r in res.curve]


def _heal_stage(healer, student, teacher, cfg: TrainConfig, tokenizer, work: Path, k: int,
                n_stages: int) -> list[dict]:
    """Heal the student of stage k in place by the healing objective; its loss curve."""
    from ..distill.driver import train

    module = healer.module(teacher, student, [])
    curve = train(module, cfg, tokenizer, work / f"stage-{k}", description=f"stage {k}/{n_stages} {healer.name}")
    healer.healed(module, teacher, [])
    for p in student.parameters():
        p.requires_grad_(False)
    return [{**r, "stage": k, "global_step": r["step"] + cfg.offset} for r in curve]


def _replayed_cuts(plan: Plan, stage: int) -> list[LayerCut]:
    return [LayerCut(b, sorted(u.get("kv_group", [])), sorted(u.get("mlp_channel", [])))
            for b, u in sorted(plan.cuts(stage).items())]


def width_plan(res: "WidthResult", criterion: str, options: dict) -> Plan:
    units = []
    for st in res.stages:
        for c, w in zip(st["cuts"], st["widths_before"]):
            units.append(UnitRow(c["block"], "kv_group", c["remove_groups"], w["num_key_value_heads"], st["stage"],
                                 criterion))
            units.append(UnitRow(c["block"], "mlp_channel", c["remove_channels"], w["intermediate_size"],
                                 st["stage"], criterion))
    stages = [{k: v for k, v in st.items() if k != "widths_before"} for st in res.stages]
    return Plan(units=units, meta={"kind": "width", **options, "params_before": res.params_before,
                                   "params_after": res.params_after,
                                   "kept_share": res.params_after / res.params_before,
                                   "widths": widths(res.model), "stages": stages})


def _check_options(params, criterion, incremental, step, tokens, global_batch, nsamples, seqlen, lr, heal,
                   heal_options):
    """Everything checkable before the model is loaded; returns the healing objective."""
    if not 0 < params < 1:
        raise ConfigError(f"--params must be the share of block parameters to keep, in (0, 1) (got {params:g})")
    WIDTH_CRITERIA.get(criterion)
    if incremental and not 0 < step < 1:
        raise ConfigError(f"--step must be in (0, 1) (got {step:g})")
    if tokens < 0:
        raise ConfigError(f"--tokens must be >= 0 (got {tokens})")
    count("--global-batch", global_batch)
    count("--nsamples", nsamples)
    count("--seqlen", seqlen, 2)
    positive("--lr", lr)
    healer = HEALERS.create(heal, heal_options or {})
    if healer.trains and not healer.needs_student:
        raise ConfigError(f"healing '{heal}' trains stand-ins for removed blocks; width pruning heals with one of "
                          f"{', '.join(n for n, c in HEALERS.items() if c.trains and c.needs_student)}")
    return healer


def _check_input_kind(src, adapter, tokens, evaluate, epochs, heal, mask_only) -> None:
    """Healing and evaluation options that fit the model: text (tokens, --eval) or images (--epochs)."""
    pixels = any(f.kind == "pixels" for f in adapter.inputs)
    if pixels and (tokens or evaluate):
        raise ConfigError(f"{src.spec} takes images: heal it with --epochs N (not --tokens), and evaluate the result "
                          "with `layerwise eval` (--eval is for language models)")
    if epochs < 0 or (epochs and not pixels):
        raise ConfigError(f"--epochs heals image classifiers (a number ≥ 0); {src.spec} is healed with --tokens"
                          if epochs > 0 else f"--epochs must be ≥ 0 (got {epochs})")
    if epochs and heal not in ("kd", "finetune"):
        raise ConfigError(f"image classifiers heal with --heal kd or finetune (got {heal})")
    if epochs and mask_only:
        raise ConfigError("--epochs trains the pruned model; it needs the physically narrowed model, not --mask-only")
    if src.tokenizer is None and not pixels:
        raise DataError(f"model {src.spec} has no tokenizer; pass --tokenizer")


def _width(model, *, params, adaptive, criterion, incremental, step, tokens, lr, global_batch, train_seqlen,
           heal, heal_options, calib, nsamples, seqlen, seed, art, work_dir, tokenizer, evaluate, eval_windows_n,
           amplitude, mask_only, plan, multiple_of, epochs) -> WidthResult:
    out = art.out if art is not None else None
    quiet()
    t_start = time.perf_counter()
    healer = _check_options(params, criterion, incremental, step, tokens, global_batch, nsamples, seqlen, lr, heal,
                            heal_options)
    if multiple_of < 1:
        raise ConfigError(f"--multiple-of must be >= 1 (got {multiple_of})")
    src = resolve(model, tokenizer, load=True)
    teacher = src.loaded.model.eval()
    adapter = get_adapter(teacher)
    _check_input_kind(src, adapter, tokens, evaluate, epochs, heal, mask_only)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if isinstance(plan, (str, Path)):
        source, plan = str(plan), Plan.load(plan)
        plan.validate_units(widths(teacher), source)
    elif plan is not None:
        plan.validate_units(widths(teacher))
    student = copy.deepcopy(teacher)
    P0 = block_params(student)
    target = int(round(params * P0))
    n_stages = plan.stages if plan is not None else max(1, math.ceil((1 - params) / step - 1e-9)) if incremental else 1
    steps_total = tokens // (global_batch * train_seqlen) if tokens else 0
    per_stage = stage_tokens(steps_total, n_stages) if steps_total else [0] * n_stages
    res = WidthResult(model=student, params_before=P0)
    offset = 0
    work = Path(work_dir) if work_dir else (Path(str(out) + ".work") if out else None)
    for k in range(1, n_stages + 1):
        goal = int(round(P0 - (P0 - target) * k / n_stages))
        cur = block_params(student)
        t0 = time.perf_counter()
        before = widths(student)
        if plan is None:
            samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed + k - 1, src.spec, adapter)
            cuts = prune_once(student, samples, cur - goal, criterion, adaptive, amplitude=amplitude,
                              multiple_of=multiple_of)
        else:
            cuts = _replayed_cuts(plan, k)
        if mask_only:
            apply_mask(student, cuts)
        else:
            shrink(student, cuts)
        stage = {"stage": k, "params_before": cur, "params_goal": goal,
                 "params_after": cur - removed_params(student, cuts) if mask_only else block_params(student),
                 "cuts": [c.to_dict() for c in cuts], "prune_s": time.perf_counter() - t0, "steps": per_stage[k - 1],
                 "widths_before": [before[c.block] for c in cuts]}
        if per_stage[k - 1] > 0:
            cfg = TrainConfig(steps=per_stage[k - 1], global_batch=global_batch, seqlen=train_seqlen, lr=lr,
                              seed=seed, corpus=calib, offset=offset, total_steps=steps_total,
                              warmup=max(1, steps_total // 20), checkpoint_every=max(1, min(50, per_stage[k - 1])))
            work = work or Path(f"runs/.width-work-{id(student)}")
            res.curve += _heal_stage(healer, student, teacher, cfg, src.tokenizer, work, k, n_stages)
            offset += per_stage[k - 1]
        if epochs:
            stage["epochs"] = epochs
            res.curve += _heal_images(heal, student, teacher, src, epochs, lr, seed, k, n_stages, global_batch)
        res.stages.append(stage)
        info(f"stage {k}/{n_stages}: block parameters {cur:,} → {block_params(student):,} (goal {goal:,})")
    res.params_after = block_params(student)
    res.model = student.eval()
    if evaluate:
        from ..eval import perplexity

        w = eval_windows("stdlib", src.tokenizer, 256, "validation", eval_windows_n)
        res.metrics["perplexity_dense"] = perplexity(teacher, w, 16).perplexity
        res.metrics["perplexity"] = perplexity(res.model, w, 16).perplexity
    res.timings["total_s"] = time.perf_counter() - t_start
    if out is not None:
        res.out = _write(art, res, src, dict(params=params, adaptive=adaptive, criterion=criterion,
                                                          incremental=incremental, step=step, tokens=tokens,
                                                          heal=healer.config_dict() if steps_total else
                                                          (f"{heal} ({epochs} epochs per stage)" if epochs else "none"),
                                                          seed=seed, stages=n_stages, multiple_of=multiple_of))
    return res


def plot_widths(model: nn.Module, base: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = widths(model)
    xs = [x["block"] for x in w]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].bar(xs, [b["intermediate_size"] for b in base], color="0.85", label="dense")
    ax[0].bar(xs, [x["intermediate_size"] for x in w], color="C0", label="kept")
    ax[0].set_title("MLP channels per block", fontsize=9)
    ax[1].bar(xs, [b["num_attention_heads"] for b in base], color="0.85", label="dense")
    ax[1].bar(xs, [x["num_attention_heads"] for x in w], color="C1", label="kept")
    ax[1].set_title("attention heads per block", fontsize=9)
    for a in ax:
        a.set_xlabel("block")
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(art, res: WidthResult, src, options: dict) -> Path:
    from ..io import build_manifest, write_json
    from ..io.structured import save_model
    from ..io.verify import check_reload

    base = widths(src.loaded.model)
    tmp = art.begin()
    how = save_model(res.model, src.tokenizer, tmp)
    reload = check_reload(res.model, tmp, what="saved width-pruned model")
    width_plan(res, options["criterion"], options).save(tmp / "plan.json")
    if res.curve:
        write_json(tmp / "training_curve.json", res.curve)
    total_before = sum(p.numel() for p in src.loaded.model.parameters())
    total_after = sum(p.numel() for p in res.model.parameters())
    man = build_manifest("width", {"model": src.spec, **options}, options["seed"], res.timings, res.metrics,
                         {"block_params_before": res.params_before, "block_params_after": res.params_after,
                          "total_params_before": total_before, "total_params_after": total_after})
    man["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", man)
    plot_widths(res.model, base, tmp / "report_widths.png",
                f"{src.spec}: {res.params_after / res.params_before:.0%} of block parameters kept")
    lines = [f"# Width pruning: {src.spec}", "", f"Block parameters {res.params_before:,} → {res.params_after:,} "
             f"({res.params_after / res.params_before:.1%}); all parameters {total_before:,} → {total_after:,}. "
             f"Loads with {how}.", "", "![widths](report_widths.png)", "",
             "| block | heads | kv heads | MLP channels |", "|---|---|---|---|"]
    lines += [f"| {w['block']} | {w['num_attention_heads']} | {w['num_key_value_heads']} | {w['intermediate_size']} |"
              for w in widths(res.model)]
    if res.metrics:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in res.metrics.items()]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    return art.commit(check=check_model_dir)
