"""`layerwise depth`: find redundant blocks, remove them, optionally heal, export a stock checkpoint.

Selectors: `ppcl` (contiguous intervals from span probes and the CKA trend, each replaced by one
block), `bi` (ShortGPT: the k blocks of lowest Block Influence), `random` (seeded), `last`.
Healing (same budget for every selector) is any objective of `distill.objectives.HEALERS`: `distill`
trains one student per interval, teacher-forced (contiguous layer distillation) or sequentially, each a
copy of one block or a ridge-fitted linear stand-in; `finetune` trains the whole pruned model on LM
loss; `kd` distils the pruned model from the dense model's logits. Models that bring their own
training data (a DiT: noised digits) heal with `distill` on it. `family` saves the pluggable checkpoint
of `prune.family`: every nested subset of the intervals loads with `layerwise.load(out, depth=N)`.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..console import info
from ..data.tokens import eval_windows
from ..distill.driver import TrainConfig
from ..distill.objectives import HEALERS
from ..engine import InMemoryStore, run_sequential
from ..errors import ConfigError, DataError, LayerwiseError
from ..utils.checks import count, positive
from ..plan import BlockRow, Plan
from ..prune.depth import DEPTH_SELECTORS, assemble, keep_index, parse_remove, runs_to_intervals
from ..prune.family import nested_order
from ..scores.probes import DepthMap, depth_map
from ..scores.similarity import mean_token_cosine
from ..models.files import check_model_dir
from ..models.standin import LinearStandIn
from ..utils.hf import quiet
from .output import guard_output
from .source import calibration_inputs, resolve



@dataclass
class DepthResult:
    model: nn.Module
    removed: list[int]
    intervals: list[dict]
    dmap: DepthMap
    out: Path | None = None
    curve: list[dict] = field(default_factory=list)
    variants: dict = field(default_factory=dict)     # removed count -> (model, active intervals) (family)
    teacher: nn.Module | None = None
    students: dict | None = None                     # interval key -> trained student (distill)
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)


@torch.no_grad()
def collect_states(model: nn.Module, samples: torch.Tensor, probe_tokens: int = 4096, seed: int = 0,
                   batch_size: int = 8) -> tuple[list[torch.Tensor], list[float]]:
    """Subsampled residual-stream states h_0..h_L (same tokens for all) and Block Influence."""
    states: dict[int, torch.Tensor] = {}
    bi: dict[int, float] = {}
    pick: list[torch.Tensor] = []

    def flat(xs):
        return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])[pick[0]].float()

    def observe(i, inputs, outputs):
        if i == 0:
            # the probe tokens, from block 0's input (token ids or patches: a sample's tokens are its length)
            n, L = sum(x.shape[0] for x in inputs), inputs[0].shape[1]
            g = torch.Generator().manual_seed(seed)
            positions = torch.arange(n * L).view(n, L)[:, 1:].reshape(-1)  # skip position 0 (sink / CLS)
            pick.append(positions[torch.randperm(positions.numel(), generator=g)[:probe_tokens]].sort().values)
            states[0] = flat(inputs)
        states[i + 1] = flat(outputs)
        bi[i] = 1.0 - mean_token_cosine(inputs, outputs)

    run_sequential(InMemoryStore(model), samples, lambda w: [], gram=False, propagate="dense",
                   batch_size=batch_size, description="depth map", observe=observe, select=lambda n: False)
    return [states[i] for i in range(len(states))], [bi[i] for i in range(len(bi))]


def train_healing(healer, teacher_spec, teacher_model: nn.Module, pruned: nn.Module | None, intervals: list[dict],
         cfg: TrainConfig, tokenizer, work: Path, processes: int = 1) -> nn.Module:
    """Train by the healing objective `healer` (in this process, or in `processes` launched ones) and
    return the trained module (see distill.objectives: `healer.healed(module, ...)` is the model)."""
    from ..distill.driver import train

    work.mkdir(parents=True, exist_ok=True)
    if processes == 1:
        module = healer.module(teacher_model, pruned, intervals)
        module.curve = train(module, cfg, tokenizer, work, description=f"heal ({healer.name})")
        return module.eval()
    if not isinstance(teacher_spec, str):
        raise ConfigError("--processes > 1 needs the model as a path or zoo:NAME")
    student_dir = None
    if healer.needs_student:
        from ..io.structured import save_model

        save_model(pruned, tokenizer, work / "pruned")
        student_dir = str(work / "pruned")
    job = {"cpu": True, "work_dir": str(work), "train": cfg.to_dict(), "description": f"heal ({healer.name})",
           "kind": healer.name, "options": healer.config.model_dump(), "intervals": intervals,
           **healer.job(teacher_spec, student_dir)}
    (work / "job.json").write_text(json.dumps(job, indent=1))
    from ..distill.run import launch_command
    from ..io.load import load_model

    cmd = launch_command(work / "job.json", processes)
    info("running: " + " ".join(cmd[2:]))
    r = subprocess.run(cmd, env={**os.environ, "LAYERWISE_NO_PROGRESS": "1"})
    if r.returncode != 0:
        raise LayerwiseError(f"the {processes}-process training run failed (exit code {r.returncode})")
    module = healer.trained(work, teacher_model, intervals, load_model)
    module.curve = json.loads((work / "curve.json").read_text())["curve"]
    return module.eval()


def _freeze(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


def depth(model, *, remove="25%", select: str = "ppcl", seed: int = 0, heal: str = "none", heal_options: dict | None = None,
          steps: int = 200, lr: float = 2e-4, global_batch: int = 16, train_seqlen: int = 256,
          processes: int = 1, family: bool = False, calib: str = "stdlib", nsamples: int = 64,
          seqlen: int = 256, probe_tokens: int = 4096, max_len: int = 3, protect: int = 2,
          out: str | Path | None = None, overwrite: bool = False,
          work_dir: str | Path | None = None, tokenizer=None, evaluate: bool = False,
          eval_windows_n: int = 200, overwrite_source: bool = False, plan=None) -> DepthResult:
    """Remove `remove` blocks chosen by `select` (or those a depth `plan` marks), optionally heal, and
    save to `out`."""
    art = guard_output(out, model, tokenizer, calib, work_dir, overwrite, overwrite_source, plan=plan)
    with art.run() if art is not None else nullcontext():
        return _depth(model, remove=remove, select=select, seed=seed, heal=heal, heal_options=heal_options, steps=steps, lr=lr,
                      global_batch=global_batch, train_seqlen=train_seqlen, processes=processes, family=family,
                      calib=calib, nsamples=nsamples, seqlen=seqlen, probe_tokens=probe_tokens, max_len=max_len,
                      protect=protect, art=art, work_dir=work_dir, tokenizer=tokenizer,
                      evaluate=evaluate, eval_windows_n=eval_windows_n, plan=plan)


def _depth(model, *, remove, select, seed, heal, heal_options, steps, lr, global_batch, train_seqlen, processes, family,
           calib, nsamples, seqlen, probe_tokens, max_len, protect, art, work_dir, tokenizer,
           evaluate, eval_windows_n, plan) -> DepthResult:
    out = art.out if art is not None else None
    quiet()
    t_start = time.perf_counter()
    selector = DEPTH_SELECTORS.create(select)
    healer = HEALERS.create(heal, heal_options or {})
    if healer.trains and steps < (0 if healer.name == "distill" else 1):
        raise ConfigError(f"--steps must be at least {0 if healer.name == 'distill' else 1} (got {steps})")
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1 (got {processes})")
    count("--global-batch", global_batch)
    count("--nsamples", nsamples)
    count("--max-len", max_len)
    count("--protect", protect, 0)
    positive("--lr", lr)
    source = str(plan) if isinstance(plan, (str, Path)) else "plan"
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    if plan is not None and family:
        raise ConfigError("--family chooses its own intervals; it cannot replay a --plan")
    if family and not selector.intervals:
        raise ConfigError(f"--family (one training, several ratios) needs an interval selector "
                          f"({', '.join(n for n in DEPTH_SELECTORS if DEPTH_SELECTORS.get(n).intervals)})")
    src = resolve(model, tokenizer, load=True)
    teacher = _freeze(src.loaded.model)
    from ..models.adapters import get_adapter

    adapter = get_adapter(teacher)
    pixels = any(f.kind in ("pixels", "latents") for f in adapter.inputs)   # no tokenizer, no perplexity
    if pixels and evaluate:
        raise ConfigError(f"{src.spec} takes images: --eval is perplexity, for language models; "
                          "evaluate the result with `layerwise eval`")
    if pixels and healer.trains and adapter.training_batch(0, 1, seed) is None:
        raise ConfigError(f"{src.spec} takes images and brings no training data of its own: "
                          f"--heal {healer.name} cannot train it")
    if pixels and healer.trains and healer.name != "distill":
        raise ConfigError(f"--heal {healer.name} trains on next-token loss; {src.spec} takes images: use --heal distill")
    if src.tokenizer is None and not pixels:
        raise DataError(f"model {src.spec} has no tokenizer; pass --tokenizer")
    L = adapter.num_blocks
    if plan is not None:
        plan.validate_blocks(L, source)
    k = parse_remove(remove, L) if plan is None else len(plan.removed_blocks())
    samples = calibration_inputs(calib, src.tokenizer, nsamples, seqlen, seed, src.spec, adapter)
    t0 = time.perf_counter()
    states, bi = collect_states(teacher, samples, probe_tokens, seed)
    dmap = depth_map(states, bi, max_len=max_len, protect_head=protect, protect_tail=protect)
    timings = {"analysis_s": time.perf_counter() - t0}
    removed, intervals = selector.choose(k, dmap, seed) if plan is None else replay(plan, L)
    res = DepthResult(model=None, removed=removed, intervals=intervals, dmap=dmap)
    t0 = time.perf_counter()
    healer.prepare(teacher, intervals, samples)
    pruned, students, res.curve = _heal(healer, src, teacher, intervals, out, work_dir, processes,
                                        TrainConfig(steps=steps, global_batch=global_batch, seqlen=train_seqlen,
                                                    lr=lr, seed=seed, corpus=calib,
                                                    checkpoint_every=max(1, min(50, steps))))
    timings["heal_s"] = time.perf_counter() - t0
    res.model = _freeze(pruned)
    res.teacher, res.students = teacher, students
    if family:
        order = nested_order(intervals)
        for j in range(1, len(order) + 1):
            active = sorted(order[:j], key=lambda iv: iv["start"])
            m = _freeze(assemble(copy.deepcopy(teacher), active, students))
            res.variants[sum(iv["end"] - iv["start"] for iv in active)] = (m, active)
    if evaluate:
        from ..eval import perplexity

        w = eval_windows("stdlib", src.tokenizer, 256, "validation", eval_windows_n)
        res.metrics["perplexity_dense"] = perplexity(teacher, w, 16).perplexity
        res.metrics["perplexity"] = perplexity(res.model, w, 16).perplexity
        for r, (m, _) in res.variants.items():
            res.metrics[f"perplexity_remove_{r}"] = perplexity(m, w, 16).perplexity
    timings["total_s"] = time.perf_counter() - t_start
    res.timings = timings
    if out is not None:
        res.out = _write(art, res, src, select, healer, k, seed, timings)
    return res


def _heal(healer, src, teacher, intervals, out, work_dir, processes, cfg):
    """(pruned model, students of interval distillation or None, loss curve) after healing."""
    if not healer.trains:
        return assemble(copy.deepcopy(teacher), intervals), None, []
    scratch = None
    if work_dir or out:
        work = Path(work_dir) if work_dir else Path(str(out) + ".work")
    else:   # nothing to resume into: a private directory, removed afterwards
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="layerwise-depth-")
        work = Path(scratch.name)
    pruned = assemble(copy.deepcopy(teacher), intervals) if healer.needs_student else None
    try:
        module = train_healing(healer, src.spec, teacher, pruned, intervals, cfg, src.tokenizer, work, processes)
    finally:
        if scratch is not None:
            scratch.cleanup()
    students = healer.students(module) if hasattr(healer, "students") else None
    return healer.healed(module, teacher, intervals), students, module.curve


def replay(plan: Plan, num_blocks: int) -> tuple[list[int], list[dict]]:
    """Removed blocks and intervals of a depth plan; removed blocks outside any interval are absorbed
    by a kept neighbour, as the per-block selectors do."""
    removed = plan.removed_blocks()
    intervals = plan.intervals()
    covered = {i for iv in intervals for i in range(iv["start"], iv["end"] + 1)}
    intervals += runs_to_intervals([i for i in removed if i not in covered], num_blocks)
    return removed, sorted(intervals, key=lambda iv: iv["start"])


def depth_plan(res: DepthResult, select: str, healer, L: int) -> Plan:
    dm = res.dmap
    where = {i: iv for iv in res.intervals for i in range(iv["start"], iv["end"] + 1)}
    blocks = [BlockRow(i, "remove" if i in res.removed else "keep",
                       [where[i]["start"], where[i]["end"], keep_index(where[i])] if i in where else None, select,
                       {"bi": dm.bi[i], "probe": dm.probe[i], "cka": dm.cka[i],
                        "dcka": dm.dcka[i] if i < len(dm.dcka) else None}) for i in range(L)]
    return Plan(blocks=blocks, meta={"kind": "depth", "selector": select, "heal": healer.config_dict(), "num_blocks": L,
                                     "removed": res.removed, "intervals": res.intervals,
                                     "candidate_intervals": dm.intervals[:30]})


def plot_depth(res: DepthResult, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dm = res.dmap
    xs = list(range(dm.num_blocks))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.plot(xs, dm.bi, marker="o", label="Block Influence 1−cos")
    ax.plot(xs, [1 - f for f in dm.probe], marker="s", label="1 − probe fidelity")
    ax.plot(xs, [1 - c for c in dm.cka], marker="^", label="1 − CKA(h_i, h_i+1)")
    ax.plot(xs[:-1], [abs(d) for d in dm.dcka], ls=":", label="|Δ CKA| (trend)")
    for i in res.removed:
        ax.axvspan(i - 0.45, i + 0.45, color="C3", alpha=0.15)
    for iv in res.intervals:
        ax.annotate("", xy=(iv["end"] + 0.3, 0), xytext=(iv["start"] - 0.3, 0),
                    arrowprops=dict(arrowstyle="<->", color="C3"))
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("block (shaded: removed)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write(art, res: DepthResult, src, select, healer, k, seed, timings) -> Path:
    from ..io import build_manifest, write_json

    L = res.dmap.num_blocks
    tmp = art.begin()
    linear = any(isinstance(st, LinearStandIn) for st in (res.students or {}).values())
    # linear stand-ins are no stock block: the root holds the plain bypass and plugins/ the stand-ins
    root = _freeze(assemble(copy.deepcopy(res.teacher), res.intervals)) if linear else res.model
    root.save_pretrained(tmp)
    if src.tokenizer is not None:
        src.tokenizer.save_pretrained(tmp)
    depth_plan(res, select, healer, L).save(tmp / "plan.json")
    if res.curve:
        write_json(tmp / "training_curve.json", res.curve)
    if res.variants or linear:
        from ..prune import family as fam

        students = res.students or {}
        measured = {str(L - r): {k[:-len(f"_remove_{r}")]: v for k, v in res.metrics.items() if k.endswith(f"_remove_{r}")}
                    for r in res.variants}
        fam.write(tmp, res.teacher, res.intervals, students, [fam.key(iv) for iv in res.intervals], measured)
    from ..io.verify import check_reload

    reload = check_reload(res.model, tmp, what="saved depth-pruned model")
    manifest = build_manifest("depth", {"model": src.spec, "remove": k, "select": select, "heal": healer.config_dict(),
                                        "seed": seed}, seed, timings, res.metrics,
                              {"removed": res.removed, "intervals": len(res.intervals),
                               "blocks_after": L - len(res.removed)})
    manifest["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", manifest)
    plot_depth(res, tmp / "report_depth.png", f"{src.spec}: {select}, remove {k} of {L}")
    lines = [f"# Depth pruning: {src.spec}", "", f"Selector `{select}`, healing `{healer.name}`, removed blocks "
             f"{res.removed} ({L} → {L - len(res.removed)}).", "", "![depth map](report_depth.png)", "",
             "| interval | keeps block | removes | predicted cost (1 − CKA of span probe) |", "|---|---|---|---|"]
    for iv in res.intervals:
        lines.append(f"| [{iv['start']}, {iv['end']}] | {keep_index(iv)} | {iv['end'] - iv['start']} | "
                     f"{iv.get('cost', float('nan')):.4f} |")
    if res.metrics:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {a} | {b:.4f} |" for a, b in res.metrics.items()]
    from ..models.adapters import get_adapter

    if src.tokenizer is None and any(f.kind == "latents" for f in get_adapter(res.model).inputs):
        from .sample import write_sample_grid

        write_sample_grid(res.model, tmp / "samples.png", f"{src.spec}: {L - len(res.removed)} blocks")
        lines += ["", "Samples (one row per class):", "", "![samples](samples.png)"]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    return art.commit(check=check_model_dir)
