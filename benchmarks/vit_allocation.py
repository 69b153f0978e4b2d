"""Layer-wise sparsity allocation on a vision transformer: uniform vs OWL vs ECoFLaP on `zoo:vit-digits`.

Wanda and SparseGPT at 50/60/70% of the block weights, each allocation from the same calibration draw
(32 training canvases; the draw is the seed), test accuracy over 5 draws (mean ± sd). ECoFLaP's
zeroth-order scores use the cross-entropy against the dense model's own predictions. One tower only:
the across-towers run (CLIP, LLaVA) needs adapters that describe every tower.

    python benchmarks/vit_allocation.py [--seeds 5] [--nsamples 32]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, command_line, md_table, update_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "vit_allocation.json"
ALLOCS = ("uniform", "owl", "ecoflap")
METHODS = ("wanda", "sparsegpt")
SPARSITIES = (0.5, 0.6, 0.7)


def measure(args) -> dict:
    import layerwise
    from layerwise.data.images import canvases_for
    from layerwise.eval.images import classifier_score
    from layerwise.pipeline.prune import prune

    base = layerwise.load("zoo:vit-digits")
    test = canvases_for("test", 16, base.card["data"])
    res = {"dense": classifier_score(base.model, test).accuracy, "runs": []}
    for seed in range(args.seeds):
        for method in METHODS:
            for s in SPARSITIES:
                for alloc in ALLOCS:
                    lm = layerwise.load("zoo:vit-digits")
                    r = prune(lm, method=method, sparsity=s, allocation=alloc, calib="digits",
                              nsamples=args.nsamples, seed=seed)
                    acc = classifier_score(r.model, test).accuracy
                    blocks: dict[int, list[float]] = {}
                    for row in r.plan.rows:
                        blocks.setdefault(row.block, []).append(row.sparsity)
                    res["runs"].append({"seed": seed, "method": method, "sparsity": s, "allocation": alloc,
                                        "accuracy": acc,
                                        "block_sparsity": [statistics.mean(blocks[b]) for b in sorted(blocks)]})
                    print(f"seed {seed} {method:9s} {s:.0%} {alloc:8s} accuracy {acc:.4f}", flush=True)
    return res


def render(res: dict) -> str:
    rows = []
    for method in METHODS:
        for s in SPARSITIES:
            cells = [method, f"{s:.0%}"]
            for alloc in ALLOCS:
                a = [r["accuracy"] for r in res["runs"] if (r["method"], r["sparsity"], r["allocation"]) == (method, s, alloc)]
                cells.append(f"{statistics.mean(a):.4f} ± {statistics.pstdev(a):.4f}")
            rows.append(cells)
    eco = [r for r in res["runs"] if r["allocation"] == "ecoflap" and r["method"] == "wanda" and r["sparsity"] == 0.6]
    per_block = [statistics.mean(r["block_sparsity"][b] for r in eco) for b in range(len(eco[0]["block_sparsity"]))]
    seeds = len({r["seed"] for r in res["runs"]})
    return "\n".join([
        f"Dense test accuracy {res['dense']:.4f} (1988 test canvases). Mean ± sd over {seeds} calibration draws.", "",
        md_table(["pruner", "sparsity", *ALLOCS], rows), "",
        "ECoFLaP's per-block sparsity at Wanda 60% (mean over draws): "
        + ", ".join(f"block {b} {v:.0%}" for b, v in enumerate(per_block)) + "."])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.render_only:
        res = json.loads(RESULTS.read_text())
    else:
        from layerwise.utils.hf import quiet

        quiet()
        res = measure(args)
        res["commands"] = [command_line()]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1))
    body = render(res)
    print(body)
    if not args.no_write:
        update_section("vit_allocation", body, "Sparsity allocation on a ViT: uniform vs OWL vs ECoFLaP",
                       commands=res.get("commands") or [command_line()])


if __name__ == "__main__":
    main()
