"""`layerwise tokens`: token-wise pruning of a decoder by one registered selector (image encoders:
`tokens_encoder.py`).

The per-block schedule (share of tokens each block skips) is uniform or searched (a genetic
algorithm with FTP's static router); a trainable selector's router is then trained with the model
frozen (on `accelerate`, in this process or `processes` launched ones) and, after a search, the
schedule is re-tuned with the trained router. Search and training checkpoint into the work directory,
so a rerun of an interrupted command resumes. The schedule is the Plan's token rows; the result
reloads with `layerwise.load` and generates; prefill and decode speed are measured against the dense
model side by side.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..console import info
from ..errors import ConfigError, DataError
from ..plan import Plan, TokenRow
from ..tokens import TOKEN_SELECTORS, TokenRouting
from ..tokens.flops import dense_flops, forward_flops
from ..tokens.search import ga_schedule, kl_to_dense, uniform_schedule
from ..tokens.train import RouterTrainConfig, train_router
from ..utils.hf import quiet
from .output import guard_output
from .source import resolve

SCHEDULES = ("uniform", "ga")


@dataclass
class TokensResult:
    model: nn.Module
    drop: list[float]
    selector: object
    metrics: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    search: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    out: Path | None = None


@dataclass
class TaskData:
    """Training batches, a calibration batch and an evaluation set for one model."""

    kind: str                                        # "filler" or "text"
    batch_at: Callable[[int], torch.Tensor]
    calib: torch.Tensor
    eval_ids: torch.Tensor
    filler_eval: object = None
    positions: torch.Tensor | None = None           # the outputs that count (a task model's answers)


def task_data(src, seqlen: int, batch: int, seed: int, eval_sequences: int, calib: str = "stdlib") -> TaskData:
    card = getattr(src.loaded, "card", None) or {}
    if card.get("task", {}).get("name") == "filler-kv":
        from ..data import filler

        opts = {k: card["task"][k] for k in ("length", "pairs", "queries")}
        ev = filler.filler_batch(0, eval_sequences, seed, split="validation", **opts)
        return TaskData("filler", lambda s: filler.filler_batch(s, batch, seed + 1, **opts).ids,
                        filler.filler_batch(0, 32, seed, split="test", **opts).ids, ev.ids, ev, ev.answer_pos)
    if src.tokenizer is None:
        raise DataError(f"model {src.spec} has no tokenizer; pass --tokenizer")
    from ..data.tokens import calibration_samples, eval_windows

    pool = calibration_samples(calib, src.tokenizer, 512, seqlen, seed + 1)
    return TaskData("text", lambda s: pool[(torch.arange(batch) + s * batch) % pool.shape[0]],
                    calibration_samples(calib, src.tokenizer, 16, seqlen, seed),
                    eval_windows(calib, src.tokenizer, seqlen, "validation", eval_sequences))


def schedule_for(method: str, sparsity: float, L: int, site: int, s_max: float) -> list[float]:
    """The uniform schedule (or, for a removing selector, its one site) at mean token sparsity `sparsity`."""
    if TOKEN_SELECTORS.get(method).removes:
        if not 1 <= site < L:
            raise ConfigError(f"--site must be a block from 1 to {L - 1} (got {site})")
        r = sparsity * L / (L - site)
        if r >= 1:
            raise ConfigError(f"mean token sparsity {sparsity:g} needs {r:.0%} of the tokens removed at block {site}; "
                              "choose an earlier --site or a lower --sparsity")
        return [0.0] * site + [r] + [0.0] * (L - site - 1)
    return uniform_schedule(L, sparsity, s_max)


def tokens(model, *, method: str = "ftp", sparsity: float = 0.3, schedule: str = "ga", site: int = 2,
           steps: int = 300, batch: int = 8, seqlen: int = 128, population: int = 8, generations: int = 10,
           retune: bool = True, s_max: float = 0.9, seed: int = 0, options: dict | None = None, calib="stdlib",
           eval_sequences: int = 256, out=None, overwrite: bool = False, work_dir=None, tokenizer=None,
           plan=None, processes: int = 1, r: int | None = None, keep_ratio: float | None = None,
           samples_per_prompt: int = 4, speed_repeats: int = 5) -> TokensResult:
    """Token-prune `model` with `method` at mean token sparsity `sparsity`; see the module docstring."""
    quiet()
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ConfigError(f"--sparsity is the mean share of tokens the blocks skip, in [0, 1) (got {sparsity!r})")
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)} (got {schedule!r})")
    selector = TOKEN_SELECTORS.create(method, options or {})
    if steps < 1 or batch < 1 or population < 2 or generations < 1:
        raise ConfigError("--steps, --batch and --generations must be >= 1, --population >= 2")
    if not isinstance(processes, int) or processes < 1 or batch % processes:
        raise ConfigError(f"--processes must be >= 1 and divide --batch {batch} (got {processes!r})")
    if isinstance(plan, (str, Path)):
        plan = Plan.load(plan)
    art = guard_output(out, model, tokenizer, calib, work_dir, overwrite, plan=plan)
    with art.run() if art is not None else nullcontext():
        src = resolve(model, tokenizer, load=True)
        from .tokens_diffusion import diffusion_tokens, is_diffusion

        if is_diffusion(src.loaded.model):
            if r is not None or keep_ratio is not None:
                raise ConfigError("diffusion models take --sparsity (the share of top-resolution self-attention "
                                  "tokens pruned), not --r or --keep-ratio")
            return diffusion_tokens(src, selector, ratio=sparsity, seed=seed, art=art,
                                    samples_per_prompt=samples_per_prompt, speed_repeats=speed_repeats)
        if _is_encoder(src.loaded.model):
            from .tokens_encoder import encoder_tokens

            if keep_ratio is not None:
                raise ConfigError("--keep-ratio (vision tokens kept) applies to vision-language models; image "
                                  "encoders take --r or --sparsity")

            return encoder_tokens(src, selector, sparsity=sparsity, r=r, plan=plan, seed=seed, art=art)
        if r is not None:
            raise ConfigError("--r (tokens merged per block) applies to image encoders; decoders take --sparsity")
        if _is_vlm(src.loaded.model):
            from .tokens_vlm import vlm_tokens

            return vlm_tokens(src, selector, keep_ratio=1 - sparsity if keep_ratio is None else keep_ratio,
                              site=site, plan=plan, seed=seed, art=art)
        if keep_ratio is not None:
            raise ConfigError("--keep-ratio (vision tokens kept) applies to vision-language models")
        return _tokens(src, selector, sparsity, schedule, site, steps, batch, seqlen, population, generations,
                       retune, s_max, seed, calib, eval_sequences, art, work_dir, plan, processes)


def _is_encoder(model) -> bool:
    from ..models.adapters import get_adapter

    return hasattr(get_adapter(model), "block_parts")


def _is_vlm(model) -> bool:
    from ..models.adapters import get_adapter

    return hasattr(get_adapter(model), "vision_tokens")


def _tokens(src, selector, sparsity, schedule, site, steps, batch, seqlen, population, generations, retune,
            s_max, seed, calib, eval_sequences, art, work_dir, plan, processes) -> TokensResult:
    t0 = time.perf_counter()
    lm = src.loaded.model.eval()
    routing_check = TokenRouting(lm, selector, [0.0] * _num_blocks(lm))   # adapter support, before any work
    L = len(routing_check.drop)
    data = task_data(src, seqlen, batch, seed, eval_sequences, calib)
    with torch.no_grad():
        dense_logp = F.log_softmax(lm(input_ids=data.calib, use_cache=False).logits.float(), dim=-1)
    res = TokensResult(model=lm, drop=[], selector=selector)
    work = Path(work_dir) if work_dir else (Path(str(art.out) + ".work") if art is not None else None)
    if plan is not None:
        drop = _plan_drop(plan, L)
    elif schedule == "uniform" or selector.removes:
        drop = schedule_for(selector.name, sparsity, L, site, s_max)
    else:
        static = TOKEN_SELECTORS.create("static")
        drop, res.search = ga_schedule(lambda d: -kl_to_dense(lm, static, d, data.calib, dense_logp, data.positions),
                                       L, sparsity,
                                       s_max=s_max, population=population, generations=generations, seed=seed,
                                       description="schedule search (static router)",
                                       state_file=work / "search_static.json" if work else None)
    res.timings["schedule_s"] = time.perf_counter() - t0
    if selector.trainable:
        from .tokens_run import build_router

        build_router(selector, lm, seed)
        t1 = time.perf_counter()
        cfg = RouterTrainConfig(steps=steps)
        router_work = work
        if processes > 1:
            router_work = _launch_router(src, lm, selector, drop, cfg, work,
                                         dict(seqlen=seqlen, batch=batch, seed=seed, calib=calib), processes)
        res.curve = train_router(lm, selector, drop, data.batch_at, cfg,
                                 work_dir=router_work, description=f"train {selector.name} router",
                                 positions=data.positions)
        if router_work is not None and work is None:       # a temporary directory for the launched processes
            import shutil

            shutil.rmtree(router_work, ignore_errors=True)
        res.timings["router_s"] = time.perf_counter() - t1
        if schedule == "ga" and retune and plan is None:
            drop, more = ga_schedule(lambda d: -kl_to_dense(lm, selector, d, data.calib, dense_logp, data.positions),
                                     L, sparsity,
                                     s_max=s_max, population=population, generations=max(1, generations // 2),
                                     seed=seed + 1, init=drop, description="schedule re-tuning (trained router)",
                                     state_file=work / "search_retune.json" if work else None)
            res.search += [{**h, "retune": True} for h in more]
    res.drop = [float(x) for x in drop]
    res.metrics = evaluate_tokens(lm, selector, res.drop, data)
    res.metrics["prefill_speedup"] = prefill_speedup(lm, selector, res.drop, data.calib)
    res.metrics["decode_speedup"] = decode_speedup(lm, selector, res.drop, data.calib[:1])
    res.timings["total_s"] = time.perf_counter() - t0
    if art is not None:
        res.out = _write(art, res, src, data)
    return res


def _launch_router(src, lm, selector, drop, cfg, work, data: dict, processes: int) -> Path:
    """Train the router in `processes` launched processes; returns the work directory holding its state."""
    import tempfile

    from .tokens_run import launch

    if work is None:
        work = Path(tempfile.mkdtemp(prefix="layerwise-router-"))
    model_path = src.path
    if model_path is None:      # an in-memory model: the processes load a saved copy
        model_path = work / "source"
        if not (model_path / "config.json").exists():
            lm.save_pretrained(model_path)
            if src.tokenizer is not None:
                src.tokenizer.save_pretrained(model_path)
    job = {"model": str(model_path), "selector": selector.config_dict(), "drop": [float(d) for d in drop],
           "train": cfg.to_dict(), "data": data, "work_dir": str(work)}
    launch(job, work, processes)
    return work


def _num_blocks(model) -> int:
    from ..models.adapters import get_adapter

    return get_adapter(model).num_blocks


def _plan_drop(plan: Plan, L: int) -> list[float]:
    rows = {t.site: t for t in plan.tokens}
    if sorted(rows) != list(range(L)):
        raise ConfigError(f"the plan has token rows for sites {sorted(rows)[:8]}, the model has {L} blocks "
                          "(one row per block): a plan for another model?")
    return [float(1 - rows[i].keep_ratio) for i in range(L)]


@torch.no_grad()
def evaluate_tokens(model, selector, drop: list[float], data: TaskData) -> dict:
    """Quality against the dense model, informative-token recall (filler), and FLOPs."""
    ids = data.eval_ids
    B, N = ids.shape
    dense_logits = torch.cat([model(input_ids=ids[s:s + 32], use_cache=False).logits for s in range(0, B, 32)])
    with TokenRouting(model, selector, drop, record=True) as r:
        parts, kept = [], {}
        for s in range(0, B, 32):
            parts.append(model(input_ids=ids[s:s + 32], use_cache=False).logits)
            for i, k in r.state.kept.items():
                kept.setdefault(i, []).append(k)
    logits = torch.cat(parts)
    kept = {i: torch.cat(v) for i, v in kept.items()}
    dl, rl = F.log_softmax(dense_logits.float(), -1), F.log_softmax(logits.float(), -1)
    at = data.positions if data.positions is not None else slice(None)
    m = {"kl": float((dl.exp() * (dl - rl)).sum(-1)[:, at].mean()),
         "top1_agreement": float((dense_logits.argmax(-1) == logits.argmax(-1))[:, at].float().mean()),
         "mean_token_sparsity": nominal_sparsity(selector, drop),
         "achieved_token_sparsity": sum(1 - float(kept[i].float().mean()) if i in kept else 0.0
                                        for i in range(len(drop))) / len(drop)}
    counts = [[int(v) for v in kept[i].sum(1)] if i in kept else [N] * B for i in range(len(drop))]
    rp = selector.router_params_per_token()
    sites = [i for i, d in enumerate(drop) if d > 0]
    m["flops_ratio"] = forward_flops(model, counts, N, att_feature=selector.needs_attention, router_params=rp,
                                     pruned_sites=sites) / dense_flops(model, B, N)
    if data.kind == "filler":
        from ..data import filler

        ev = data.filler_eval
        ans = lambda lg: filler.answer_logits(lg, ev).argmax(-1) + filler.VALUE0  # noqa: E731
        m["accuracy_dense"] = float((ans(dense_logits) == ev.answer).float().mean())
        m["accuracy"] = float((ans(logits) == ev.answer).float().mean())
        pruned = [kept[i] for i in sites if i in kept]
        if pruned:
            inf = ev.informative
            m["informative_recall"] = float(sum((k & inf).sum() for k in pruned) / (inf.sum() * len(pruned)))
            m["filler_kept"] = float(sum((k & ~inf).sum() for k in pruned) / ((~inf).sum() * len(pruned)))
    else:
        tgt = ids[:, 1:]
        nll = lambda lp: float(-lp[:, :-1].gather(-1, tgt[..., None]).mean())  # noqa: E731
        m["perplexity_dense"], m["perplexity"] = float(torch.exp(torch.tensor(nll(dl)))), \
            float(torch.exp(torch.tensor(nll(rl))))
    return m


@torch.no_grad()
def _dense_over_routed(model, selector, drop: list[float], call, repeats: int) -> float:
    """Dense / routed time of `call()`, medians of alternating runs after a warm-up round."""
    from ..eval.speed import interleaved_times

    t = interleaved_times(call, {"dense": None, "routed": TokenRouting(model, selector, drop)}, repeats)
    return t["dense"] / t["routed"]


def prefill_speedup(model, selector, drop: list[float], ids: torch.Tensor, repeats: int = 3) -> float:
    """Dense / routed prefill time on `ids` (a ratio measured side by side; the benchmark
    `tokens_speed.py` measures it at realistic widths)."""
    return _dense_over_routed(model, selector, drop, lambda: model(input_ids=ids, use_cache=False), repeats)


def decode_speedup(model, selector, drop: list[float], prompt: torch.Tensor, new: int = 16,
                   repeats: int = 3) -> float:
    """Dense / routed time of greedy generation of `new` tokens after `prompt` with the KV cache (the
    selector's KV policy decides what decoding computes)."""
    gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        gen["pad_token_id"] = 0
    return _dense_over_routed(model, selector, drop, lambda: model.generate(prompt, **gen), repeats)


def nominal_sparsity(selector, drop: list[float]) -> float:
    """Mean over blocks of the share of tokens a block skips (a removal counts in every later block)."""
    if not selector.removes:
        return sum(drop) / len(drop)
    alive, total = 1.0, 0.0
    for d in drop:
        alive *= 1 - d
        total += 1 - alive
    return total / len(drop)


def token_plan(res: TokensResult) -> Plan:
    cfg = res.selector.config_dict()
    rows = [TokenRow(i, 1 - d, res.selector.name, cfg) for i, d in enumerate(res.drop)]
    return Plan(tokens=rows, meta={"kind": "tokens", "selector": cfg,
                                   "mean_token_sparsity": nominal_sparsity(res.selector, res.drop),
                                   "metrics": res.metrics, "search": res.search[-1:] if res.search else []})


def _write(art, res: TokensResult, src, data) -> Path:
    from ..io import build_manifest, write_json
    from ..tokens.format import save_routed

    tmp = art.begin()
    reload = save_routed(tmp, res.model, src.tokenizer, TokenRouting(res.model, res.selector, res.drop),
                         {"input_ids": data.calib[:2]}, "token-routed model")
    token_plan(res).save(tmp / "plan.json")
    if res.curve:
        write_json(tmp / "router_curve.json", res.curve)
    manifest = build_manifest("tokens", {"model": src.spec, "selector": res.selector.config_dict(),
                                         "schedule": res.drop}, None, res.timings, res.metrics,
                              {"sites": len(res.drop), "mean_token_sparsity": nominal_sparsity(res.selector, res.drop)})
    manifest["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", manifest)
    _report(tmp, res, src)
    return art.commit()


def _report(tmp: Path, res: TokensResult, src) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].bar(range(len(res.drop)), res.drop, color="C0")
    ax[0].set_xlabel("block")
    ax[0].set_ylabel("share of tokens skipped")
    ax[0].set_title("schedule", fontsize=9)
    if res.curve:
        ax[1].plot([c["step"] for c in res.curve], [c["kl"] for c in res.curve])
        ax[1].set_yscale("log")
        ax[1].set_xlabel("router step")
        ax[1].set_ylabel("KL to the dense model")
    fig.suptitle(f"{src.spec}: {res.selector.name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(tmp / "report_tokens.png", dpi=110)
    plt.close(fig)
    lines = [f"# Token pruning: {src.spec}", "", f"Selector `{res.selector.name}`, mean token sparsity "
             f"{nominal_sparsity(res.selector, res.drop):.3f}; schedule {[round(d, 3) for d in res.drop]}.", "",
             "![schedule and router training](report_tokens.png)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in res.metrics.items()]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    info(f"token routing: {', '.join(f'{k} {v:.4f}' for k, v in res.metrics.items())}")
