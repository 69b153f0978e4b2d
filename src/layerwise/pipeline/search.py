"""`layerwise search`: choose per-layer widths and per-stack depths under a FLOPs target, build the
physically smaller network, and train it by distillation from the dense one.

search (TAS, or a baseline shape) → genotype → Plan rows (block keep/remove, conv channels removed)
→ a fresh network of that shape (TAS's default: trained from scratch) or the supernet's weights
(`inherit=True`) → knowledge distillation → saved, reloaded and checked, with a report and a plot.
"""
from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..console import info
from ..errors import ConfigError
from ..plan import BlockRow, Plan, UnitRow
from ..search import SEARCHERS, Genotype, supernet_for
from ..utils.hf import quiet
from .output import guard_output
from .source import resolve


@dataclass
class SearchResult:
    genotype: Genotype
    model: nn.Module
    plan: Plan
    metrics: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    out: Path | None = None
    timings: dict = field(default_factory=dict)
    tokenizer: object = None          # decoders: saved with the model


DECODER_TAS = {"batch_size": 8, "weight_lr": 0.01, "epochs": 6}


def parse_space(space) -> tuple[str, ...]:
    items = space.split(",") if isinstance(space, str) else list(space)
    items = tuple(s.strip() for s in items if s.strip())
    if not items:
        raise ConfigError("--space is empty; pass width, depth or width,depth")
    return items


def check_target(flops: float) -> float:
    if not isinstance(flops, (int, float)) or not 0 < flops <= 1 or flops != flops:
        raise ConfigError(f"--flops must be in (0, 1] (the share of the dense network's FLOPs to keep); got {flops}")
    return float(flops)


def image_splits(model, data: str | None):
    """Train / test image sets of an image classifier: the canvases its zoo card names (or the defaults)."""
    from ..data.images import canvases_for

    if data not in (None, "digits"):
        raise ConfigError(f"unknown image data '{data}'; this version knows 'digits' (scikit-learn digit canvases)")
    card = getattr(model, "_layerwise_card", None) or {}
    return tuple(canvases_for(s, model.config.image_size, card.get("data")) for s in ("train", "test"))


def genotype_plan(supernet, genotype: Genotype) -> Plan:
    """Block rows (kept or removed by depth) and conv-channel unit rows (the channels beyond each searched
    width go) of a genotype; the genotype itself in the plan's meta."""
    g = genotype.choices
    blocks, units = [], []
    for d in supernet.depth_dims:
        for rank, i in enumerate(d.blocks, 1):
            blocks.append(BlockRow(i, "keep" if rank <= g[d.name] else "remove", method=genotype.method,
                                   scores={"stage": d.name, "rank": rank}))
    for w in supernet.width_dims:
        if w.block is None:
            continue
        where = w.name.rsplit(".", 1)[-1]
        units.append(UnitRow(w.block, w.unit, supernet.removed_units(g, w), total=w.full, method=genotype.method,
                             where=where))
    meta = {"kind": "search", "method": genotype.method, "genotype": g, "flops": genotype.flops,
            "full_flops": genotype.full_flops, "flops_ratio": genotype.ratio, **genotype.notes}
    return Plan([], meta, blocks, units)


def student_of(supernet, genotype: Genotype, inherit: bool, seed: int) -> nn.Module:
    """The network of the genotype: with the supernet's weights, or freshly initialised from `seed`."""
    if inherit:
        for w in supernet.width_dims:
            if genotype.choices[w.name] not in w.candidates:
                raise ConfigError(f"--inherit needs every width among the supernet's candidates; "
                                  f"{w.name}={genotype.choices[w.name]} is not (a uniform shape?)")
        return supernet.export(genotype.choices)
    from ..models.resnet import CifarResNetForImageClassification

    torch.manual_seed(seed)
    return CifarResNetForImageClassification(supernet.genotype_config(genotype.choices)).eval()


def search(model, flops: float = 0.5, method: str = "tas", space="width,depth", distill: bool = True,
           kd: bool = True, epochs: int | None = None, kd_epochs: int = 40, inherit: bool = False, align: str = "cwi",
           seed: int = 0, data: str | None = None, options: dict | None = None, out=None, overwrite: bool = False,
           evaluate: bool = True, tokens: int = 0, lr: float = 2e-4, global_batch: int = 8, criterion: str = "taylor",
           search_windows: int = 256, search_seqlen: int = 128, eval_windows_n: int = 64) -> SearchResult:
    """Search a shape for `model` at `flops` of its FLOPs, then train it.

    Image classifiers: with `distill`, `kd_epochs` of training (KD from the dense network when `kd`,
    cross-entropy only otherwise), from a fresh initialisation unless `inherit`. Decoders: the searched
    widths and depth are cut from the dense weights (units ranked by `criterion`) and healed by KD on
    `tokens` training tokens (the width command's healing); the search itself reads `search_windows`
    windows of `search_seqlen` tokens."""
    quiet()
    flops = check_target(flops)
    spaces = parse_space(space)
    SEARCHERS.get(method)
    if align not in ("cwi", "zero"):
        raise ConfigError(f"--align must be cwi or zero (got {align!r})")
    if tokens < 0:
        raise ConfigError(f"--tokens must be >= 0 (got {tokens})")
    if distill and kd_epochs < 1:
        raise ConfigError(f"--kd-epochs must be >= 1 (got {kd_epochs}); pass --no-distill to skip training")
    art = guard_output(out, model, overwrite=overwrite)
    src = resolve(model)
    dense = src.loaded.model.eval()
    adapter_space = _space_family(dense)
    opts = dict(options or {})
    if method == "tas":
        if epochs is not None:
            opts["epochs"] = epochs
        if adapter_space == "decoder":   # a language model's batch is 8 windows; its weights take small SGD steps
            opts = {**DECODER_TAS, **opts}
    searcher = SEARCHERS.create(method, flops=flops, seed=seed, **opts)
    with (art.run() if art is not None else nullcontext()):
        if adapter_space == "decoder":
            result = _search_decoder(src, dense, searcher, spaces, seed, tokens, lr, global_batch, criterion,
                                     search_windows, search_seqlen, evaluate, eval_windows_n, data)
        else:
            if src.loaded.card:
                object.__setattr__(dense, "_layerwise_card", src.loaded.card)
            result = _search_images(dense, searcher, spaces, align, distill, kd, kd_epochs, inherit, seed, data,
                                    evaluate)
        result.plan.meta.update({"target": flops, "tolerance": searcher.config.tolerance, "space": list(spaces)})
        if art is not None:
            result.out = _write(art, result, src, dense)
    return result


def _space_family(model) -> str:
    from ..models.adapters import get_adapter

    adapter = get_adapter(model)
    if not hasattr(adapter, "search_space"):
        raise ConfigError(f"the {adapter.name} adapter exposes no search space (no searchable widths or depths)")
    return adapter.search_space().family


def _search_images(dense, searcher, spaces, align, distill, kd, kd_epochs, inherit, seed, data, evaluate):
    from ..distill.classifier import TrainConfig, train_classifier
    from ..eval.images import classifier_score as score

    supernet = supernet_for(dense, spaces, align)
    train, test = image_splits(dense, data)
    timings = {}
    t0 = time.perf_counter()
    info(f"{supernet.space.describe()}; {searcher.name} at {searcher.config.flops:.0%} of "
         f"{supernet.full_flops() / 1e6:.2f} MFLOPs")
    genotype = searcher.search(supernet, train)
    timings["search_s"] = time.perf_counter() - t0
    plan = genotype_plan(supernet, genotype)
    student = student_of(supernet, genotype, inherit, seed)
    curve = []
    if distill:
        t0 = time.perf_counter()
        curve = train_classifier(student, train, TrainConfig(epochs=kd_epochs, seed=seed),
                                 teacher=dense if kd else None, description="distil" if kd else "train").curve
        timings["train_s"] = time.perf_counter() - t0
    metrics = {"dense": score(dense, test).to_dict(), "searched": score(student, test).to_dict()} if evaluate else {}
    plan.meta.update({"distill": distill, "kd": kd, "kd_epochs": kd_epochs if distill else 0, "inherit": inherit})
    return SearchResult(genotype, student, plan, metrics, curve, None, timings)


def _search_decoder(src, dense, searcher, spaces, seed, tokens, lr, global_batch, criterion, search_windows,
                    search_seqlen, evaluate, eval_windows_n, data):
    from ..data.tokens import TokenWindows, calibration_samples, eval_windows
    from ..errors import DataError
    from .width import rank_units

    if src.tokenizer is None:
        raise DataError(f"model {src.spec} has no tokenizer; a decoder search needs one")
    corpus = data or "stdlib"
    timings = {}
    t0 = time.perf_counter()
    scores, _ = rank_units(dense, calibration_samples(corpus, src.tokenizer, 32, 256, seed), criterion)
    supernet = supernet_for(dense, spaces, scores=scores, seqlen=256)
    windows = TokenWindows(calibration_samples(corpus, src.tokenizer, search_windows, search_seqlen, seed + 1))
    info(f"{supernet.space.describe()}; {searcher.name} at {searcher.config.flops:.0%} of the blocks' "
         f"{supernet.full_flops() / 1e6:.2f} MFLOPs per token")
    genotype = searcher.search(supernet, windows)
    timings["search_s"] = time.perf_counter() - t0
    plan = genotype_plan(supernet, genotype)
    student = supernet.export(genotype.choices, weights=dense)
    curve = []
    steps = tokens // (global_batch * 256) if tokens else 0
    if steps:
        from ..distill.driver import TrainConfig
        from ..distill.objectives import HEALERS
        from .width import _heal_stage
        import tempfile

        t0 = time.perf_counter()
        teacher = dense
        for p in teacher.parameters():
            p.requires_grad_(False)
        cfg = TrainConfig(steps=steps, global_batch=global_batch, seqlen=256, lr=lr, seed=seed, corpus=corpus,
                          warmup=max(1, steps // 20), checkpoint_every=max(1, min(50, steps)))
        with tempfile.TemporaryDirectory(prefix="layerwise-search-") as work:
            curve = _heal_stage(HEALERS.create("kd"), student, teacher, cfg, src.tokenizer, Path(work), 1, 1)
        timings["heal_s"] = time.perf_counter() - t0
    metrics = {}
    if evaluate:
        from ..eval import perplexity

        w = eval_windows(corpus, src.tokenizer, 256, "validation", eval_windows_n)
        metrics = {"perplexity_dense": perplexity(dense, w, 16).perplexity,
                   "perplexity": perplexity(student.eval(), w, 16).perplexity}
    plan.meta.update({"distill": bool(steps), "kd": bool(steps), "tokens": steps * global_batch * 256,
                      "criterion": criterion, "inherit": True})
    return SearchResult(genotype, student.eval(), plan, metrics, curve, None, timings, src.tokenizer)


def _write(art, result: SearchResult, src, dense) -> Path:
    from ..io import write_json
    from ..io.verify import check_reload
    from .search_report import plot_search, search_markdown

    tmp = art.begin()
    model = result.model
    model.config.architectures = [type(model).__name__]
    if result.tokenizer is not None:
        from ..io.structured import save_model

        save_model(model, result.tokenizer, tmp)
    else:
        model.save_pretrained(tmp)
    result.plan.save(tmp / "plan.json")
    write_json(tmp / "search.json", {**result.genotype.to_dict(), "train_curve": result.curve})
    manifest = {"command": "layerwise search", "source": src.spec, "metrics": result.metrics,
                "timings": result.timings, "plan": result.plan.meta,
                "checks": {"reload": check_reload(model, tmp)}}
    write_json(tmp / "manifest.json", manifest)
    plot_search(result, copy.deepcopy(dense.config), tmp / "search.png")
    (tmp / "report.md").write_text(search_markdown(result, src.spec))
    art.commit()
    info(f"wrote {art.out}")
    return art.out
