"""Mixed precision by layer importance: perplexity against average bits for each order.

Orders lim, zd, reverse (of LIM) and random (5 seeds), with RTN and GPTQ, high 4 / low 2 bits, plus
uniform 3- and 4-bit baselines; then the single-block sensitivity (one block at 2 bits, the rest at
4) against each score's ranking (Spearman).

    python benchmarks/quant_quality.py [--model zoo:llama-12l] [--windows 300]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, ROOT, add_output_options, command_line, md_table, spearman, update_section  # noqa: E402

from layerwise.allocate.bits import ranking_from_scores  # noqa: E402
from layerwise.data import calibration_samples, eval_windows  # noqa: E402
from layerwise.engine import InMemoryStore  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.quantize import quantize  # noqa: E402
from layerwise.plan import Plan, PlanRow  # noqa: E402
from layerwise.models.adapters import get_adapter  # noqa: E402
from layerwise.scores.analyze import analyze_store  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

BITS = (2.0, 2.5, 3.0, 3.25, 3.5, 4.0)
SCORES = ("lim", "zd", "bi", "alpha", "farms", "owl")


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--random-seeds", type=int, default=5)
    add_output_options(ap, "quant_NAME.json")
    a = ap.parse_args()
    model, seeds = a.model, a.random_seeds
    if a.render_only:
        render(model.replace("zoo:", ""), write=not a.no_write)
        return
    base = load_model(model)
    windows = eval_windows("stdlib", base.tokenizer, 256, "validation", a.windows)
    dense = perplexity(base.model, windows, 16).perplexity
    samples = calibration_samples("stdlib", base.tokenizer, a.nsamples, a.seqlen, 0)
    an = analyze_store(InMemoryStore(load_model(model).model), samples, list(SCORES), keep_eigs=False,
                       model_name=model)
    nb = an.num_blocks
    rankings = {s: ranking_from_scores(s, an.block_scores[s]) for s in SCORES}
    orders = {"lim": rankings["lim"], "zd": rankings["zd"], "reverse": rankings["lim"][::-1]}
    rng = np.random.default_rng(0)
    for k in range(seeds):
        orders[f"random{k}"] = [int(i) for i in rng.permutation(nb)]
    print("rankings", json.dumps(orders), flush=True)
    kw = dict(nsamples=a.nsamples, seqlen=a.seqlen, seed=0)
    t0 = time.perf_counter()
    res: dict = {}
    for qz in ("rtn", "gptq"):
        res[qz] = {}
        for bits in BITS:
            res[qz][str(bits)] = {}
            names = ["lim"] if bits in (2.0, 4.0) else list(orders)
            for name in names:
                r = quantize(load_model(model), bits=bits, high=4, low=2, order=",".join(map(str, orders[name])),
                             quantizer=qz, **kw)
                ppl = perplexity(r.model, windows, 16).perplexity
                for o in (orders if bits in (2.0, 4.0) else [name]):
                    res[qz][str(bits)][o] = ppl
                print(f"{qz} {bits} {name}: {ppl:.3f} (nominal {r.bits['nominal_bits']:.3f}, effective "
                      f"{r.bits['effective_bits_quantized']:.3f}) {time.perf_counter() - t0:.0f}s", flush=True)
        r3 = quantize(load_model(model), bits=3, high=3, low=3, quantizer=qz, **kw)
        res[qz]["uniform3"] = perplexity(r3.model, windows, 16).perplexity
        res[qz]["uniform3_effective"] = r3.bits["effective_bits_quantized"]
        print(f"{qz} uniform 3: {res[qz]['uniform3']:.3f}", flush=True)
    # single-block sensitivity: block b at 2 bits, every other block at 4 (RTN)
    ref = load_model(model)
    lin = get_adapter(ref.model).all_linears()
    base4 = res["rtn"]["4.0"]["lim"]
    delta = []
    for b in range(nb):
        plan = Plan([PlanRow(name=x.name, block=x.block, shape=x.shape, method="rtn", bits=2 if x.block == b else 4,
                             group_size=128) for x in lin])
        r = quantize(load_model(model), plan=plan, **kw)
        delta.append(perplexity(r.model, windows, 16).perplexity - base4)
        print(f"sensitivity block {b}: +{delta[-1]:.3f}", flush=True)
    # Ranking position 0 = most important; a sensitive block should be important: correlate Δppl with
    # minus its position.
    rho = {s: spearman(delta, [-rankings[s].index(b) for b in range(nb)]) for s in SCORES}
    name = model.replace("zoo:", "")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"quant_{name}.json").write_text(json.dumps(
        {"model": model, "windows": a.windows, "nsamples": a.nsamples, "seqlen": a.seqlen,
         "random_seeds": seeds, "dense": dense, "ppl": res, "orders": orders, "sensitivity": delta,
         "spearman": rho, "base4": base4, "commands": [command_line()], "block_scores": an.block_scores}, indent=1))
    render(name, write=not a.no_write)


def render(name: str, write: bool = True) -> None:
    """Table, plot and verdicts from benchmarks/results/quant_NAME.json (rerun with --render-only)."""
    d = json.loads((ROOT / "benchmarks" / "results" / f"quant_{name}.json").read_text())
    model, dense, res, delta, rho = d["model"], d["dense"], d["ppl"], d["sensitivity"], d["spearman"]
    seeds, base4 = d.get("random_seeds", 5), d.get("base4", d["ppl"]["rtn"]["4.0"]["lim"])
    # plot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, qz in zip(axes, ("rtn", "gptq")):
        for o, c in (("lim", "C0"), ("zd", "C1"), ("reverse", "C3")):
            ax.plot(BITS, [res[qz][str(b)][o] for b in BITS], marker="o", color=c, label=o)
        rnd = [[res[qz][str(b)][f"random{k}"] for k in range(seeds)] for b in BITS]
        ax.plot(BITS, [statistics.median(x) for x in rnd], color="C2", ls="--", label="random (median)")
        ax.fill_between(BITS, [min(x) for x in rnd], [max(x) for x in rnd], color="C2", alpha=0.2)
        ax.scatter([3.0], [res[qz]["uniform3"]], marker="*", s=80, color="k", label="uniform 3-bit", zorder=5)
        ax.axhline(dense, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("average bits (nominal)")
        ax.set_ylabel("validation perplexity")
        ax.set_title(f"{model} — {qz.upper()}, high 4 / low 2, group 128", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    FIG.mkdir(parents=True, exist_ok=True)
    figp = FIG / f"quant_{name}.png"
    fig.savefig(figp, dpi=110)
    plt.close(fig)
    rows = []
    for qz in ("rtn", "gptq"):
        for b in BITS:
            rnd = [res[qz][str(b)][f"random{k}"] for k in range(seeds)]
            rows.append([qz, b, f"{res[qz][str(b)]['lim']:.2f}", f"{res[qz][str(b)]['zd']:.2f}",
                         f"{statistics.median(rnd):.2f} [{min(rnd):.2f}–{max(rnd):.2f}]",
                         f"{res[qz][str(b)]['reverse']:.2f}"])
        rows.append([qz, "3 (uniform)", f"{res[qz]['uniform3']:.2f}", "", "", ""])
    verdict = []
    for qz in ("rtn", "gptq"):
        for b in (2.5, 3.0, 3.25, 3.5):
            r = res[qz][str(b)]
            rnd = statistics.median(r[f"random{k}"] for k in range(seeds))
            verdict.append(f"{qz} {b}: lim {'<' if r['lim'] < rnd else '≥'} random median, "
                           f"lim {'<' if r['lim'] < r['reverse'] else '≥'} reverse, "
                           f"zd {'<' if r['zd'] < rnd else '≥'} random median")
    # Mixed 4/2 against uniform 3-bit at the same nominal average: does spending the bits unevenly help?
    mixed_vs_uniform = [f"{qz.upper()} mixed LIM {res[qz]['3.0']['lim']:.2f} vs uniform 3-bit {res[qz]['uniform3']:.2f} "
                        f"({'mixed better' if res[qz]['3.0']['lim'] < res[qz]['uniform3'] else 'uniform better'})"
                        for qz in ("rtn", "gptq")]
    g_vs_r = [f"{b} bits: GPTQ {res['gptq'][str(b)]['lim']:.2f} vs RTN {res['rtn'][str(b)]['lim']:.2f}"
              for b in (2.0, 2.5, 3.0)]
    body = (f"Model `{model}`, dense perplexity {dense:.3f} ({d.get('windows', 300)} validation windows × 256). High 4 / "
            f"low 2 bits, symmetric, group size 128; calibration {d.get('nsamples', 128)} × {d.get('seqlen', 256)} (seed 0); LIM/ZD "
            "rankings from the same calibration draw; random = 5 seeded block permutations (median [min–max]).\n\n"
            + md_table(["quantizer", "avg bits", "lim", "zd", "random", "reverse"], rows)
            + f"\n\n![perplexity vs bits](docs/figures/{figp.name})\n\n"
            + "As measured: " + "; ".join(verdict) + ".\n\nGPTQ vs RTN (LIM order) at ≤ 3 bits: "
            + "; ".join(g_vs_r) + ".\n\n"
            + "At 3 average bits, 4/2 mixing against every block at 3 bits: " + "; ".join(mixed_vs_uniform)
            + ". Rows 2 and 4 are the uniform 2- and 4-bit models (every order gives the same model).\n\n"
            + "Single-block sensitivity (RTN, one block at 2 bits, the rest at 4; Δ perplexity vs all-4-bit "
              f"{base4:.3f}): " + ", ".join(f"b{i} +{d:.2f}" for i, d in enumerate(delta)) + ".\n\n"
            + "Spearman correlation between that sensitivity and each score's importance ranking: "
            + ", ".join(f"{s} {v:+.2f}" for s, v in rho.items()) + ".")
    print(body)
    if write:
        update_section(f"quant-{name}", body, commands=d.get("commands"), title=f"Mixed-precision quantization: {model}")


if __name__ == "__main__":
    main()
