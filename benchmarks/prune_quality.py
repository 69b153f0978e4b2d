"""Perplexity of magnitude / Wanda / SparseGPT at 10–70% unstructured and 2:4 / 4:8.

    python benchmarks/prune_quality.py [--model zoo:llama-12l] [--nsamples 128] [--seqlen 256]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, ROOT, md_table, update_section  # noqa: E402

from layerwise.data import eval_windows  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.prune import prune  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

METHODS = ("magnitude", "wanda", "sparsegpt")
SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PATTERNS = ("4:8", "2:4")


def plot(results: dict, dense: float, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, m in enumerate(METHODS):
        ax.plot(SPARSITIES, [results[m][str(s)] for s in SPARSITIES], marker="o", label=m, color=f"C{i}")
        for j, p in enumerate(PATTERNS):
            ax.scatter([0.5], [results[m][p]], marker="s^"[j], color=f"C{i}", s=40)
    ax.axhline(dense, color="k", ls=":", label=f"dense {dense:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the block linears")
    ax.set_ylabel("validation perplexity (stdlib)")
    ax.set_title(f"{model}: one-shot pruning (squares 4:8, triangles 2:4)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    base = load_model(a.model)
    windows = eval_windows("stdlib", base.tokenizer, 256, "validation")
    dense = perplexity(base.model, windows, 16).perplexity
    print(f"dense {dense:.3f} over {windows.shape[0]} windows", flush=True)
    results: dict = {m: {} for m in METHODS}
    times: dict = {m: {} for m in METHODS}
    for m in METHODS:
        for setting in [str(s) for s in SPARSITIES] + list(PATTERNS):
            lm = load_model(a.model)
            kw = {"nm": setting} if ":" in setting else {"sparsity": float(setting)}
            t0 = time.perf_counter()
            r = prune(lm, method=m, nsamples=a.nsamples, seqlen=a.seqlen, seed=a.seed, **kw)
            times[m][setting] = time.perf_counter() - t0
            results[m][setting] = perplexity(r.model, windows, 16).perplexity
            print(f"{m:10s} {setting:>4s}: ppl {results[m][setting]:.3f}", flush=True)
    settings = [str(s) for s in SPARSITIES] + list(PATTERNS)
    rows = []
    for s in settings:
        label = f"{float(s):.0%}" if ":" not in s else s
        rows.append([label] + [f"{results[m][s]:.2f} ({100 * (results[m][s] / dense - 1):+.1f}%)" for m in METHODS])
    order = []
    for s in settings:
        if ":" in s or float(s) >= 0.5:
            r = results
            ok = r["sparsegpt"][s] <= r["wanda"][s] < r["magnitude"][s]
            order.append(f"{s if ':' in s else f'{float(s):.0%}'}: {'yes' if ok else 'NO'}")
    FIG.mkdir(parents=True, exist_ok=True)
    name = a.model.replace("zoo:", "").replace("/", "_")
    fig = FIG / f"prune_quality_{name}.png"
    plot(results, dense, fig, a.model)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"prune_quality_{name}.json").write_text(
        json.dumps({"dense": dense, "ppl": results, "seconds": times, "args": vars(a)}, indent=1))
    body = (f"Model `{a.model}`, dense validation perplexity **{dense:.3f}** ({windows.shape[0]} windows × 256, "
            f"docs/evaluation.md). Calibration: {a.nsamples} × {a.seqlen} tokens of stdlib/train, seed {a.seed}; "
            "every linear of every block pruned to the same sparsity (uniform allocation), pruned propagation.\n\n"
            + md_table(["sparsity", *METHODS], rows)
            + f"\n\n![perplexity vs sparsity](docs/figures/{fig.name})\n\n"
            + "Expected order SparseGPT ≤ Wanda < magnitude, as measured: " + "; ".join(order) + ".")
    print(body)
    if not a.no_write:
        update_section(f"prune-quality-{name}", body, f"One-shot pruning quality: {a.model}")


if __name__ == "__main__":
    main()
