"""Layer-wise sparsity allocation: uniform vs OWL vs AlphaPruning vs FARMS vs ECoFLaP.

Perplexity at 50/60/70% with Wanda and SparseGPT, mean ± sd over calibration draws (seeds). The
scores each allocator needs are computed once per draw on the dense model, then every
(allocation, sparsity, pruner) is pruned from a fresh copy by replaying the allocated plan.

    python benchmarks/allocation_quality.py [--model zoo:llama-12l] [--seeds 5] [--windows 300]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, ROOT, md_table, update_section  # noqa: E402

from layerwise.allocate import allocate  # noqa: E402
from layerwise.data import calibration_samples, eval_windows  # noqa: E402
from layerwise.engine import InMemoryStore  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.models.adapters import get_adapter  # noqa: E402
from layerwise.pipeline.prune import prune, uniform_plan  # noqa: E402
from layerwise.scores.analyze import analyze_store  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

ALLOCS = ("uniform", "owl", "alpha", "farms", "ecoflap")
METHODS = ("wanda", "sparsegpt")
SPARSITIES = (0.5, 0.6, 0.7)


def plot(res: dict, dense: float, path: Path, model: str, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    width = 0.15
    for ax, method in zip(axes, METHODS):
        for j, alloc in enumerate(ALLOCS):
            means = [statistics.mean(res[method][str(s)][alloc]) for s in SPARSITIES]
            sds = [statistics.pstdev(res[method][str(s)][alloc]) for s in SPARSITIES]
            xs = [i + (j - 2) * width for i in range(len(SPARSITIES))]
            ax.bar(xs, means, width, yerr=sds, label=alloc, color=f"C{j}", capsize=2)
        ax.set_xticks(range(len(SPARSITIES)))
        ax.set_xticklabels([f"{s:.0%}" for s in SPARSITIES])
        ax.set_yscale("log")
        ax.axhline(dense, color="k", ls=":", lw=0.8)
        ax.set_title(f"{model} — {method} (mean ± sd, {seeds} draws)", fontsize=9)
        ax.set_ylabel("validation perplexity")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    base = load_model(a.model)
    windows = eval_windows("stdlib", base.tokenizer, 256, "validation", a.windows)
    dense = perplexity(base.model, windows, 16).perplexity
    print(f"dense {dense:.3f}", flush=True)
    res = {m: {str(s): {al: [] for al in ALLOCS} for s in SPARSITIES} for m in METHODS}
    spreads: dict = {}
    t0 = time.perf_counter()
    for seed in range(a.seeds):
        samples = calibration_samples("stdlib", base.tokenizer, a.nsamples, a.seqlen, seed)
        scored = load_model(a.model)
        an = analyze_store(InMemoryStore(scored.model), samples, ["owl", "alpha", "farms", "zeroth_order"],
                           seed=seed, keep_eigs=False, model_name=a.model)
        linears = get_adapter(scored.model).all_linears()
        del scored
        for s in SPARSITIES:
            for alloc in ALLOCS:
                plan = uniform_plan(linears, "wanda", s, None)
                if alloc != "uniform":
                    allocate(alloc, plan, an.block_scores, s)
                block_sp = sorted({r.block: r.sparsity for r in plan.rows}.items())
                spreads.setdefault((alloc, s), [min(v for _, v in block_sp), max(v for _, v in block_sp)])
                for method in METHODS:
                    p = copy.deepcopy(plan)
                    for r in p.rows:
                        r.method = method
                    out = prune(load_model(a.model), plan=p, nsamples=a.nsamples, seqlen=a.seqlen, seed=seed)
                    ppl = perplexity(out.model, windows, 16).perplexity
                    res[method][str(s)][alloc].append(ppl)
                    print(f"seed {seed} {s:.0%} {alloc:8s} {method:9s} ppl {ppl:.3f}  "
                          f"({time.perf_counter() - t0:.0f}s)", flush=True)
    name = a.model.replace("zoo:", "")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"allocation_{name}.json").write_text(
        json.dumps({"dense": dense, "ppl": res, "args": vars(a)}, indent=1))
    FIG.mkdir(parents=True, exist_ok=True)
    fig = FIG / f"allocation_{name}.png"
    plot(res, dense, fig, a.model, a.seeds)
    rows, verdicts = [], []
    for method in METHODS:
        for s in SPARSITIES:
            u = res[method][str(s)]["uniform"]
            mu_u, sd_u = statistics.mean(u), statistics.pstdev(u)
            row = [method, f"{s:.0%}"]
            for alloc in ALLOCS:
                v = res[method][str(s)][alloc]
                mu, sd = statistics.mean(v), statistics.pstdev(v)
                row.append(f"{mu:.2f} ± {sd:.2f}")
                if alloc != "uniform":
                    wins = sum(x < y for x, y in zip(v, u))
                    rel = 100 * (mu / mu_u - 1)
                    tag = ("better" if mu + sd < mu_u - sd_u else "worse" if mu - sd > mu_u + sd_u
                           else "within noise")
                    verdicts.append((method, s, alloc, rel, wins, tag))
            rows.append(row)
    body = (f"Model `{a.model}`, dense perplexity {dense:.3f} on the first {a.windows} validation windows × 256. "
            f"Calibration: {a.nsamples} × {a.seqlen} tokens of stdlib/train, draws (seeds) 0–{a.seeds - 1}; the "
            "scores are computed per draw on the dense model; AlphaPruning/FARMS ε = 0.2, OWL λ = 0.08, M = 5, "
            "ECoFLaP p_max = target + 0.1 with 32 zeroth-order samples.\n\n"
            + md_table(["pruner", "sparsity", *ALLOCS], rows)
            + f"\n\n![allocation comparison](docs/figures/{fig.name})\n\n"
            + "Against uniform, per allocator (relative change of the mean; draws where it beat uniform on the "
              "same calibration draw; 'better'/'worse' only when the ±1 sd ranges do not overlap):\n\n"
            + md_table(["pruner", "sparsity", "allocation", "Δ mean ppl vs uniform", "wins / draws", "verdict"],
                       [[m, f"{s:.0%}", al, f"{rel:+.1f}%", f"{w}/{a.seeds}", tag]
                        for m, s, al, rel, w, tag in verdicts]))
    print(body)
    if not a.no_write:
        update_section(f"allocation-{name}", body, f"Sparsity allocation: {a.model}")


if __name__ == "__main__":
    main()
