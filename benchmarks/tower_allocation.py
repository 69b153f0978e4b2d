"""Sparsity allocation across towers: uniform vs OWL vs ECoFLaP on the zoo's CLIP-style dual encoder
(`zoo:clip-digits`, zero-shot accuracy) and LLaVA-style model (`zoo:llava-quadrants`, answer accuracy).

Every block of both towers is pruned (CLIP: image and text towers; LLaVA: CLIP vision encoder and
Llama decoder) with Wanda and SparseGPT at 50/60/70% of the block weights. Each calibration draw (the
seed: 32 training samples, image-caption pairs or questions with answers) gives the OWL and
zeroth-order block scores once (`layerwise analyze`), from which each allocation's plan is built
(`allocate`) and replayed by `prune` on the same draw, which is what `prune --allocation` does in one
call. Mean ± sd over 5 draws, and the share of the budget each allocation gave each tower.

    python benchmarks/tower_allocation.py [--seeds 5] [--nsamples 32] [--models clip-digits,llava-quadrants]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, command_line, md_table, update_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tower_allocation.json"
ALLOCS = ("uniform", "owl", "ecoflap")
METHODS = ("wanda", "sparsegpt")
SPARSITIES = (0.5, 0.6, 0.7)
MODELS = ("clip-digits", "llava-quadrants")
METRIC = {"clip-digits": "zero-shot accuracy (held-out prompt templates, 1988 test canvases)",
          "llava-quadrants": "answer accuracy (512 test questions)"}


def scorer(name: str):
    """The model's task metric on its test split."""
    if name == "clip-digits":
        from layerwise.data import captions as cap
        from layerwise.data.images import canvases_for
        from layerwise.eval.images import zero_shot_score

        import layerwise

        card = layerwise.load("zoo:clip-digits").card
        test = canvases_for("test", 16, card["data"])
        prompts = cap.class_prompts(cap.ZERO_SHOT_TEMPLATES)
        return lambda model: zero_shot_score(model, test, prompts).accuracy
    from layerwise.zoo import vlm
    from layerwise.zoo.specs import SPECS

    return lambda model: vlm.accuracy(model, SPECS[name], "test", 512)["accuracy"]


def tower_sparsity(plan) -> dict[str, float]:
    """Parameter-weighted planned sparsity of each tower (by the name before `.layers`/`.encoder`)."""
    out: dict[str, list[float]] = {}
    for r in plan.rows:
        t = "text" if ("text_model" in r.name or "language_model" in r.name) else "vision"
        z, n = out.get(t, (0.0, 0))
        out[t] = (z + r.sparsity * r.params, n + r.params)
    return {t: z / n for t, (z, n) in out.items()}


def measure(args) -> dict:
    import layerwise
    from layerwise.allocate import allocate
    from layerwise.models.adapters.towers import engine_adapter
    from layerwise.pipeline.analyze import analyze
    from layerwise.pipeline.prune import prune, select_linears, uniform_plan

    res = {"runs": [], "dense": {}}
    for name in args.models:
        score = scorer(name)
        base = layerwise.load(f"zoo:{name}")
        res["dense"][name] = score(base.model)
        linears = select_linears(engine_adapter(base.model), None, None)
        print(f"{name}: dense {res['dense'][name]:.4f}, {len(linears)} linears", flush=True)
        for seed in range(args.seeds):
            need = [{"owl": "owl", "ecoflap": "zeroth_order"}[a] for a in args.allocations if a != "uniform"]
            an = analyze(f"zoo:{name}", scores=",".join(need), calib="digits", nsamples=args.nsamples,
                         seed=seed) if need else None
            for method in METHODS:
                for s in SPARSITIES:
                    for alloc in args.allocations:
                        plan = uniform_plan(linears, method, s, None)
                        if alloc != "uniform":
                            key = {"owl": "owl", "ecoflap": "zeroth_order"}[alloc]
                            allocate(alloc, plan, {key: an.block_scores[key]}, s)
                        r = prune(f"zoo:{name}", plan=plan, calib="digits", nsamples=args.nsamples, seed=seed)
                        acc = score(r.model)
                        res["runs"].append({"model": name, "seed": seed, "method": method, "sparsity": s,
                                            "allocation": alloc, "accuracy": acc,
                                            "measured_sparsity": r.plan.measured_sparsity(),
                                            "towers": tower_sparsity(r.plan)})
                        print(f"{name} seed {seed} {method:9s} {s:.0%} {alloc:8s} accuracy {acc:.4f} "
                              f"towers {json.dumps({k: round(v, 3) for k, v in tower_sparsity(r.plan).items()})}",
                              flush=True)
    return res


def render(res: dict) -> str:
    parts = []
    for name in [m for m in MODELS if m in res["dense"]]:
        runs = [r for r in res["runs"] if r["model"] == name]
        seeds = len({r["seed"] for r in runs})
        rows = []
        for method in METHODS:
            for s in SPARSITIES:
                cells = [method, f"{s:.0%}"]
                means = {}
                for alloc in ALLOCS:
                    a = [r["accuracy"] for r in runs if (r["method"], r["sparsity"], r["allocation"]) == (method, s, alloc)]
                    means[alloc] = statistics.mean(a)
                    cells.append(f"{statistics.mean(a):.4f} ± {statistics.pstdev(a):.4f}")
                eco = [r["towers"] for r in runs if (r["method"], r["sparsity"], r["allocation"]) == (method, s, "ecoflap")]
                cells.append(" / ".join(f"{t} {statistics.mean(e[t] for e in eco):.0%}" for t in ("vision", "text")))
                rows.append(cells)
        towers = "image / text" if name == "clip-digits" else "vision encoder / decoder"
        objective = (" ECoFLaP's zeroth-order objective: the multi-positive contrastive loss the model is trained "
                     "with (the calibration pairs carry their digit)." if name == "clip-digits" else "")
        parts += [f"**`zoo:{name}`** — {METRIC[name]}; dense {res['dense'][name]:.4f}. Mean ± sd over {seeds} "
                  f"calibration draws.{objective}", "",
                  md_table(["pruner", "sparsity", *ALLOCS, f"ECoFLaP's sparsity ({towers})"], rows), ""]
    return "\n".join(parts).rstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--allocations", default=",".join(ALLOCS),
                    help="rerun only these (the others' earlier runs are kept)")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.allocations = [a for a in args.allocations.split(",") if a]
    if args.render_only:
        res = json.loads(RESULTS.read_text())
    else:
        from layerwise.utils.hf import quiet

        quiet()
        res = measure(args)
        if RESULTS.exists():     # keep the other model's results when one model is rerun
            old = json.loads(RESULTS.read_text())
            keep = [r for r in old["runs"] if r["model"] not in args.models or r["allocation"] not in args.allocations]
            res["runs"] = keep + res["runs"]
            res["dense"] = {**old["dense"], **res["dense"]}
            res["commands"] = [c for c in old.get("commands", []) if c != command_line()]
        res["commands"] = res.get("commands", []) + [command_line()]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1))
    body = render(res)
    print(body)
    if not args.no_write:
        update_section("tower_allocation", body, "Sparsity allocation across towers: CLIP and LLaVA",
                       commands=res.get("commands") or [command_line()])


if __name__ == "__main__":
    main()
