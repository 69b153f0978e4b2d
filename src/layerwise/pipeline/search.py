"""`layerwise search`: choose per-layer widths and per-stack depths under a FLOPs target, build the
physically smaller network, and train it by distillation from the dense one.

search (TAS, or a baseline shape) → genotype → Plan rows (block keep/remove, conv channels removed)
→ a fresh network of that shape (TAS's default: trained from scratch) or the supernet's weights
(`inherit=True`) → knowledge distillation → saved, reloaded and checked, with a report and a plot.
"""
from __future__ import annotations

import copy
import time
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
    """Train / test image sets of an image classifier: the data its zoo card names, or `digits`."""
    from ..data.images import digit_canvases

    d = {"size": model.config.image_size, "copies": 2, "noise": 0.2, "seed": 0}
    if data not in (None, "digits"):
        raise ConfigError(f"unknown image data '{data}'; this version knows 'digits' (scikit-learn digit canvases)")
    card = getattr(model, "_layerwise_card", None) or {}
    d.update({k: v for k, v in (card.get("data") or {}).items() if k in d})
    return tuple(digit_canvases(s, **d) for s in ("train", "test"))


def genotype_plan(supernet, genotype: Genotype, target: float, tolerance: float) -> Plan:
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
        units.append(UnitRow(w.block, w.unit, list(range(g[w.name], w.full)), total=w.full, method=genotype.method,
                             where=where))
    meta = {"kind": "search", "method": genotype.method, "genotype": g, "target": target, "tolerance": tolerance, "flops": genotype.flops,
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
           evaluate: bool = True) -> SearchResult:
    """Search a shape for `model` at `flops` of its FLOPs; with `distill`, train it (KD from the dense
    network when `kd`, cross-entropy only otherwise) for `kd_epochs`."""
    from ..distill.classifier import TrainConfig, evaluate as score, train_classifier

    quiet()
    flops = check_target(flops)
    spaces = parse_space(space)
    if method not in SEARCHERS:
        SEARCHERS.get(method)
    if align not in ("cwi", "zero"):
        raise ConfigError(f"--align must be cwi or zero (got {align!r})")
    art = guard_output(out, model, overwrite=overwrite)
    src = resolve(model)
    dense = src.loaded.model.eval()
    if src.loaded.card:
        object.__setattr__(dense, "_layerwise_card", src.loaded.card)
    supernet = supernet_for(dense, spaces, align)
    opts = dict(options or {})
    if epochs is not None and method == "tas":
        opts["epochs"] = epochs
    searcher = SEARCHERS.create(method, flops=flops, seed=seed, **opts)
    train, test = image_splits(dense, data)
    timings = {}
    with (art.run() if art is not None else _nothing()):
        t0 = time.perf_counter()
        info(f"{supernet.space.describe()}; {method} at {flops:.0%} of {supernet.full_flops() / 1e6:.2f} MFLOPs")
        genotype = searcher.search(supernet, train)
        timings["search_s"] = time.perf_counter() - t0
        plan = genotype_plan(supernet, genotype, flops, searcher.config.tolerance)
        student = student_of(supernet, genotype, inherit, seed)
        curve = []
        if distill:
            t0 = time.perf_counter()
            cfg = TrainConfig(epochs=kd_epochs, seed=seed)
            curve = train_classifier(student, train, cfg, teacher=dense if kd else None,
                                     description="distil" if kd else "train").curve
            timings["train_s"] = time.perf_counter() - t0
        metrics = {}
        if evaluate:
            metrics = {"dense": score(dense, test).to_dict(), "searched": score(student, test).to_dict()}
        plan.meta.update({"distill": distill, "kd": kd, "kd_epochs": kd_epochs if distill else 0,
                          "inherit": inherit, "space": list(spaces)})
        result = SearchResult(genotype, student, plan, metrics, curve, None, timings)
        if art is not None:
            result.out = _write(art, result, src, dense)
    return result


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write(art, result: SearchResult, src, dense) -> Path:
    from ..io import write_json
    from ..io.verify import check_reload
    from .search_report import plot_search, search_markdown

    tmp = art.begin()
    model = result.model
    model.config.architectures = [type(model).__name__]
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
