"""Token pruning on the filler-token model (zoo:filler-lm), where the informative tokens are known.

At each mean token sparsity and seed: one schedule searched by the GA with FTP's static router, then
every selector on that schedule (static, random, causal-safe merging, FTP's trained router, the same
router fed hidden states, Mixture-of-Depths routers), FTP on a uniform schedule, FTP in full (search, train, re-tune),
and FastV at equal mean sparsity. Answer accuracy, KL to the dense model, recall of informative
tokens among the computed ones, analytic FLOPs ratio (router overhead included).

    python benchmarks/tokens_filler.py [--seeds 5] [--steps 200] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import FIG, md_table, update_section  # noqa: E402

VARIANTS = [  # (label, method, schedule source)
    ("random (GA schedule)", "random", "ga"),
    ("static (GA schedule)", "static", "ga"),
    ("tome: causal-safe merging (GA schedule)", "tome", "ga"),
    ("ftp-hidden: hidden-state router (GA schedule)", "ftp-hidden", "ga"),
    ("mod: per-block hidden-state routers (GA schedule)", "mod", "ga"),
    ("ftp: 4-feature router (uniform schedule)", "ftp", "uniform"),
    ("ftp: 4-feature router (GA schedule)", "ftp", "ga"),
    ("ftp full: GA, train, re-tune", "ftp", "ga+retune"),
    ("fastv (site 1)", "fastv", "site"),
]


def run(sparsities, seeds, steps, generations, population):
    from layerwise import load
    from layerwise.pipeline.tokens import tokens
    from layerwise.plan import Plan, TokenRow

    lm = load("zoo:filler-lm")
    rows = []
    for s in sparsities:
        for seed in seeds:
            ga = tokens(lm, method="static", sparsity=s, schedule="ga", seed=seed, population=population,
                        generations=generations)
            plan = Plan(tokens=[TokenRow(i, 1 - d, "static") for i, d in enumerate(ga.drop)])
            for label, method, sched in VARIANTS:
                t0 = time.perf_counter()
                kw = dict(method=method, sparsity=s, seed=seed, steps=steps, population=population,
                          generations=generations)
                if sched == "ga":
                    r = ga if method == "static" else tokens(lm, plan=plan, **kw)
                elif sched == "uniform":
                    r = tokens(lm, schedule="uniform", **kw)
                elif sched == "site":
                    r = tokens(lm, site=1, **kw)
                else:
                    r = tokens(lm, schedule="ga", retune=True, **kw)
                rows.append({"sparsity": s, "seed": seed, "variant": label, "schedule": r.drop,
                             "seconds": time.perf_counter() - t0, **r.metrics})
                print(f"s={s} seed={seed} {label}: acc {r.metrics['accuracy']:.3f} recall "
                      f"{r.metrics.get('informative_recall', float('nan')):.3f} kl {r.metrics['kl']:.4f}", flush=True)
    return rows


def summarise(rows, sparsities) -> str:
    def ms(vals):
        return f"{statistics.mean(vals):.3f} ± {statistics.pstdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"

    table = []
    for s in sparsities:
        for label, _, _ in VARIANTS:
            rs = [r for r in rows if r["sparsity"] == s and r["variant"] == label]
            table.append([f"{s:.0%}", label, ms([r["accuracy"] for r in rs]), ms([r["kl"] for r in rs]),
                          ms([r.get("informative_recall", float("nan")) for r in rs]),
                          ms([r["flops_ratio"] for r in rs])])
    dense = rows[0]["accuracy_dense"]
    head = (f"Dense answer accuracy {dense:.3f} (validation, 256 sequences × 4 queries). Mean ± std over "
            f"{len({r['seed'] for r in rows})} seeds (seed = data, search and training seed).\n\n")
    return head + md_table(["token sparsity", "selector / schedule", "accuracy", "KL to dense",
                            "informative recall", "FLOPs ratio"], table)


def plot(rows, sparsities, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, _, _ in VARIANTS:
        acc = [statistics.mean(r["accuracy"] for r in rows if r["sparsity"] == s and r["variant"] == label)
               for s in sparsities]
        rec = [statistics.mean(r.get("informative_recall", 0) for r in rows if r["sparsity"] == s and
                               r["variant"] == label) for s in sparsities]
        ax[0].plot(sparsities, acc, marker="o", label=label)
        ax[1].plot(sparsities, rec, marker="o", label=label)
    ax[0].set_xlabel("mean token sparsity")
    ax[0].set_ylabel("answer accuracy")
    ax[1].set_xlabel("mean token sparsity")
    ax[1].set_ylabel("informative-token recall")
    ax[0].legend(fontsize=6)
    fig.suptitle("zoo:filler-lm: token selectors", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", default="0.25,0.4,0.6")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    sparsities = [float(x) for x in a.sparsities.split(",")]
    rows = run(sparsities, list(range(a.seeds)), a.steps, a.generations, a.population)
    body = summarise(rows, sparsities)
    print(body)
    if not a.no_write:
        out = Path(__file__).resolve().parent / "results" / "tokens_filler.json"
        out.write_text(json.dumps(rows, indent=1))
        FIG.mkdir(parents=True, exist_ok=True)
        plot(rows, sparsities, FIG / "tokens_filler.png")
        update_section("tokens_filler", body + "\n\n![token selectors](docs/figures/tokens_filler.png)\n",
                       "Token pruning on the filler-token model (FTP, MoD, FastV, static, random)")


if __name__ == "__main__":
    main()
