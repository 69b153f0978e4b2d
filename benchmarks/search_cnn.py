"""Architecture search on the zoo CNN: TAS vs uniform vs random shapes vs Torch-Pruning at equal FLOPs.

    python benchmarks/search_cnn.py [--targets 0.5,0.3] [--seeds 0,1,2] [--search-epochs 30] [--train-epochs 40]

Every shape lands in the same FLOPs band [target − 0.05, target] (analytic FLOPs = torch's flop counter)
and is trained identically (SGD, cosine, the same epochs), with KD from the dense network (α 0.9, T 4)
and with cross-entropy only. TAS, uniform and random shapes start from a fresh initialisation (TAS's
protocol); Torch-Pruning keeps its magnitude-pruned weights (its protocol) and is trained with the
same schedule. Ablations at the first target: width-only, depth-only, zero-padding instead of CWI.
Results accumulate in benchmarks/results/search_cnn.json (a rerun skips finished cells).
Torch-Pruning is the peer: pip install -e ".[peers]".
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_output_options, command_line, md_table, update_section  # noqa: E402

from layerwise import zoo  # noqa: E402
from layerwise.data.images import digit_canvases  # noqa: E402
from layerwise.distill.classifier import TrainConfig, train_classifier  # noqa: E402
from layerwise.eval.images import classifier_score as evaluate  # noqa: E402
from layerwise.models.resnet import CifarResNetForImageClassification, resnet_flops  # noqa: E402
from layerwise.search import SEARCHERS, supernet_for  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_cnn.json"
SHAPES = ("tas", "uniform", "random", "torch-pruning")
# Protocol cross-checks (KD only): TAS's shape with the supernet's weights fine-tuned ("TAS w/ Init"), and
# Torch-Pruning's shape trained from a fresh initialisation: they separate the shape from the weights.
CROSS = ("tas+init", "torch-pruning shape, fresh")
_SEARCHED: dict = {}
ABLATIONS = {"tas width-only": {"space": ("width",)}, "tas depth-only": {"space": ("depth",)},
             "tas zero-pad": {"align": "zero"}}


def counted_flops(model, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 1, size, size))
    return fc.get_total_flops()


def torch_pruning_shape(dense, target: float, tolerance: float = 0.05):
    """Torch-Pruning's magnitude pruner (L1 group importance, one ratio for every layer, classifier kept),
    with the ratio bisected until the FLOPs land in the band."""
    import torch_pruning as tp

    size = dense.config.image_size
    full = resnet_flops(dense.config)
    ex = torch.randn(1, 1, size, size)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(pixel_values=x).logits

    lo, hi = 0.0, 0.95
    for _ in range(30):
        r = (lo + hi) / 2
        w = Logits(copy.deepcopy(dense))
        tp.pruner.BasePruner(w, ex, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=r,
                             ignored_layers=[w.m.classifier]).step()
        f = counted_flops(w.m, size) / full
        if target - tolerance <= f <= target:
            return w.m, f, r
        lo, hi = (r, hi) if f > target else (lo, r)
    raise RuntimeError(f"Torch-Pruning found no ratio in the band at {target}")


def shape_of(kind: str, dense, target: float, seed: int, search_epochs: int, opts: dict | None = None):
    """(model to train, FLOPs ratio, notes)."""
    opts = opts or {}
    if kind.startswith("torch-pruning"):
        m, f, r = torch_pruning_shape(dense, target)
        if kind == "torch-pruning":
            return m, f, {"pruning_ratio": r, "init": "inherited (magnitude-pruned)"}
        torch.manual_seed(seed)
        m.apply(m._init_weights)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.reset_running_stats()
        return m, f, {"pruning_ratio": r, "init": "fresh"}
    method = "tas" if kind.startswith("tas") else kind
    key = (method, target, seed, json.dumps(opts, sort_keys=True))
    t0 = time.perf_counter()
    if key not in _SEARCHED:
        sn = supernet_for(dense, opts.get("space", ("width", "depth")), opts.get("align", "cwi"))
        kw = {"epochs": search_epochs} if method == "tas" else {}
        g = SEARCHERS.create(method, flops=target, seed=seed, **kw).search(sn, digit_canvases("train"))
        _SEARCHED[key] = (sn, g, time.perf_counter() - t0)
    sn, g, search_s = _SEARCHED[key]
    notes = {"search_s": search_s, "genotype": g.choices, "init": "fresh",
             **{k: v for k, v in g.notes.items() if k in ("selected", "final_argmax_ratio")}}
    if kind == "tas+init":
        return sn.export(g.choices), g.ratio, {**notes, "init": "inherited (supernet)"}
    torch.manual_seed(seed)
    m = CifarResNetForImageClassification(sn.genotype_config(g.choices))
    assert counted_flops(m.eval(), dense.config.image_size) == g.flops
    return m, g.ratio, notes


def run_cell(dense, kind, target, seed, a, opts=None, trainings=("kd", "ce")) -> dict:
    train, test = digit_canvases("train"), digit_canvases("test")
    model, ratio, notes = shape_of(kind, dense, target, seed, a.search_epochs, opts)
    out = {"flops_ratio": ratio, **notes}
    for how in trainings:
        m = copy.deepcopy(model)
        lr = a.lr if notes["init"] == "fresh" else a.finetune_lr
        cfg = TrainConfig(epochs=a.train_epochs, seed=seed, lr=lr)
        t0 = time.perf_counter()
        train_classifier(m, train, cfg, teacher=dense if how == "kd" else None, description=f"{kind} {how}")
        s = evaluate(m, test)
        out[how] = {"nll": s.nll, "accuracy": s.accuracy, "train_s": time.perf_counter() - t0}
        print(f"{kind:>16} {target:.2f} seed {seed} {how}: FLOPs {ratio:.3f} NLL {s.nll:.4f} acc {s.accuracy:.4f}",
              flush=True)
    return out


def images_per_second(models: dict, size: int, batch: int, repeats: int) -> dict:
    """Interleaved timing (each repeat runs every model once, in a rotating order); medians."""
    x = torch.randn(batch, 1, size, size)
    times = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()(x)
        for r in range(repeats):
            keys = list(models)
            keys = keys[r % len(keys):] + keys[:r % len(keys)]
            for k in keys:
                t0 = time.perf_counter()
                models[k](x)
                times[k].append(time.perf_counter() - t0)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="0.5,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--search-epochs", type=int, default=20)
    ap.add_argument("--train-epochs", type=int, default=25)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--speed-batch", type=int, default=256)
    ap.add_argument("--speed-repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--no-speed", action="store_true", help="quality cells only (time speed later, machine idle)")
    ap.add_argument("--speed-only", action="store_true", help="time the networks of finished cells only")
    add_output_options(ap, "search_cnn.json")
    a = ap.parse_args()
    results = Path(a.results)
    if a.render_only:
        render(json.loads(results.read_text()), write=not a.no_write)
        return
    torch.set_num_threads(a.threads)
    res = json.loads(results.read_text()) if results.exists() else {"cells": {}}
    res.setdefault("commands", [])
    if command_line() not in res["commands"]:
        res["commands"].append(command_line())
    dense = zoo.load("resnet-digits").model
    d = evaluate(dense, digit_canvases("test"))
    res["dense"] = {"nll": d.nll, "accuracy": d.accuracy, "flops": resnet_flops(dense.config)}
    targets = [float(t) for t in a.targets.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    jobs = [(k, t, s, None, ("kd", "ce")) for t in targets for s in seeds for k in SHAPES]
    jobs += [(k, t, s, None, ("kd",)) for t in targets for s in seeds for k in CROSS]
    jobs += [(k, targets[0], s, o, ("kd",)) for s in seeds for k, o in ABLATIONS.items()]
    for kind, t, s, opts, trainings in ([] if a.speed_only else jobs):
        key = f"{kind}|{t}|{s}"
        if key in res["cells"]:
            continue
        res["cells"][key] = run_cell(dense, kind, t, s, a, opts, trainings)
        results.parent.mkdir(exist_ok=True)
        results.write_text(json.dumps(res, indent=1))
    if a.no_speed:
        render(res, write=not a.no_write)
        return
    speed_models = {"dense": dense}
    for t in targets:
        for kind in ("tas", "uniform", "torch-pruning"):
            speed_models[f"{kind} {t:.0%}"] = shape_of(kind, dense, t, 0, a.search_epochs)[0] if kind == "torch-pruning" \
                else CifarResNetForImageClassification(_config_of(res, dense, kind, t))
    ips = images_per_second(speed_models, dense.config.image_size, a.speed_batch, a.speed_repeats)
    res["speed"] = {"batch": a.speed_batch, "repeats": a.speed_repeats,
                    "images_per_s": ips, "speedup": {k: v / ips["dense"] for k, v in ips.items()}}
    results.write_text(json.dumps(res, indent=1))
    render(res, write=not a.no_write)


def _config_of(res, dense, kind, target):
    sn = supernet_for(dense)
    if kind == "tas":
        return sn.genotype_config(res["cells"][f"tas|{target}|0"]["genotype"])
    return sn.genotype_config(SEARCHERS.create(kind, flops=target, seed=0).search(sn).choices)


def _ms(vals) -> str:
    if not vals:
        return "-"
    m = statistics.mean(vals)
    return f"{m:.4f} ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else f"{m:.4f}"


def _pct(vals) -> str:
    m = statistics.mean(vals)
    return f"{100 * m:.2f} ± {100 * statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{100 * m:.2f}"


def render(res: dict, write: bool = True) -> None:
    cells = res["cells"]
    targets = sorted({float(k.split("|")[1]) for k in cells}, reverse=True)
    rows = []
    for t in targets:
        for kind in SHAPES + CROSS:
            group = [v for k, v in cells.items() if k.startswith(f"{kind}|{t}|")]
            if not group:
                continue
            for how in ("kd", "ce"):
                g = [c for c in group if how in c]
                if g:
                    rows.append([f"{t:.0%}", kind, "KD" if how == "kd" else "CE only",
                                 _ms([c["flops_ratio"] for c in g]), _ms([c[how]["nll"] for c in g]),
                                 _pct([c[how]["accuracy"] for c in g]), len(g)])
    d = res["dense"]
    body = [f"Dense `zoo:resnet-digits`: {d['flops'] / 1e6:.2f} MFLOPs, test NLL {d['nll']:.4f}, accuracy "
            f"{100 * d['accuracy']:.2f}% (994 test canvases). Mean ± std over seeds; NLL lower is better.", "",
            md_table(["FLOPs target", "shape", "training", "FLOPs ratio", "test NLL", "accuracy %", "seeds"], rows),
            "", "Fresh: trained from a new initialisation (TAS's protocol); inherited: fine-tuned from pruned weights "
            "(Torch-Pruning's protocol; lr 0.01 instead of 0.1). `tas+init` and `torch-pruning shape, fresh` swap the "
            "protocols, so shape and weights can be told apart."]
    body += ["", "Paired differences in test NLL (shape − TAS, same seed; negative = the shape beats TAS):", ""]
    prow = []
    for t in targets:
        for kind in SHAPES[1:] + CROSS:
            for how in ("kd", "ce"):
                diffs = [cells[f"{kind}|{t}|{s}"][how]["nll"] - cells[f"tas|{t}|{s}"][how]["nll"]
                         for s in _seeds(cells, t) if f"{kind}|{t}|{s}" in cells and how in cells[f"{kind}|{t}|{s}"]]
                if diffs:
                    prow.append([f"{t:.0%}", f"{kind} − tas", how.upper(), _ms(diffs),
                                 f"{sum(x > 0 for x in diffs)}/{len(diffs)}"])
    body.append(md_table(["target", "pair", "training", "ΔNLL", "seeds where TAS is better"], prow))
    kd_gain = []
    for k, v in cells.items():
        if "kd" in v and "ce" in v:
            kd_gain.append(v["ce"]["nll"] - v["kd"]["nll"])
    if kd_gain:
        body += ["", f"KD vs cross-entropy only, same shape and seed: NLL lower with KD in "
                 f"{sum(x > 0 for x in kd_gain)}/{len(kd_gain)} runs (mean gain {statistics.mean(kd_gain):.4f})."]
    ab = []
    t0 = targets[0] if targets else 0.5
    for name in ("tas", *ABLATIONS):
        g = [v for k, v in cells.items() if k.startswith(f"{name}|{t0}|")]
        if g:
            ab.append([name, _ms([c["flops_ratio"] for c in g]), _ms([c["kd"]["nll"] for c in g]),
                       _pct([c["kd"]["accuracy"] for c in g]),
                       ", ".join(sorted({str(c.get("selected")) for c in g})), len(g)])
    body += ["", f"Ablations at {t0:.0%} FLOPs (KD training):", "",
             md_table(["search", "FLOPs ratio", "test NLL", "accuracy %", "result taken from", "seeds"], ab)]
    if "speed" in res:
        sp = res["speed"]
        body += ["", f"Speed of the exported networks (batch {sp['batch']}, median of {sp['repeats']} interleaved "
                 "runs, same process):", "",
                 md_table(["network", "images/s", "× dense"],
                          [[k, round(v), f"{sp['speedup'][k]:.2f}"] for k, v in sp["images_per_s"].items()])]
    if write:
        plot(res, targets)
        body += ["", "![test NLL of each shape at each FLOPs target](docs/figures/search_cnn.png)"]
    text = "\n".join(body)
    print(text)
    if write:
        update_section("search_cnn", text, "Architecture search (TAS) on the zoo CNN",
                       commands=res.get("commands") or [command_line()])


def plot(res: dict, targets: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common import FIG

    cells = res["cells"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, how in zip(axes, ("kd", "ce")):
        for j, kind in enumerate(SHAPES + CROSS):
            xs, ms, ss = [], [], []
            for t in targets:
                v = [c[how]["nll"] for k, c in cells.items() if k.startswith(f"{kind}|{t}|") and how in c]
                if v:
                    xs.append(t + 0.006 * (j - 2.5))
                    ms.append(statistics.mean(v))
                    ss.append(statistics.stdev(v) if len(v) > 1 else 0)
            if xs:
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=kind, linestyle="none")
        ax.axhline(res["dense"]["nll"], color="0.5", linestyle="--", label="dense")
        ax.set_xlabel("FLOPs target (share of dense)")
        ax.set_title("KD from the dense network" if how == "kd" else "cross-entropy only", fontsize=9)
    axes[0].set_ylabel("test NLL (mean ± std over seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    FIG.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG / "search_cnn.png", dpi=110)
    plt.close(fig)


def _seeds(cells, t):
    return sorted({int(k.split("|")[2]) for k in cells if k.split("|")[1] == str(t)})


if __name__ == "__main__":
    main()
