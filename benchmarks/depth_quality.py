"""Depth pruning: perplexity after removing k blocks, for ppcl / bi / random (5 seeds) / last,
before healing, after contiguous layer distillation and after plain fine-tuning of the whole pruned
model (equal budgets); one distillation run assembled into several ratios; real speed side by side.

    python benchmarks/depth_quality.py [--model zoo:llama-12l] [--ks 2,3,4] [--steps 80] [--batch 8]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, ROOT, add_output_options, add_speed_options, command_line, md_table, update_section  # noqa: E402

from layerwise.data import calibration_samples, eval_windows  # noqa: E402
from layerwise.distill.driver import TrainConfig  # noqa: E402
from layerwise.eval import perplexity  # noqa: E402
from layerwise.eval.speed import side_by_side  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.depth import collect_states, heal  # noqa: E402
from layerwise.prune.depth import assemble, runs_to_intervals, select_blocks  # noqa: E402
from layerwise.scores.probes import depth_map, select_intervals  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--ks", default="2,3,4")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--protect", type=int, default=2)
    add_speed_options(ap)
    ap.add_argument("--reuse-table", action="store_true",
                    help="take the selection x healing table from benchmarks/results/depth_NAME.json and rerun "
                         "only the one-run family and the speed measurement")
    add_output_options(ap, "depth_NAME.json")
    a = ap.parse_args()
    if a.render_only:
        render(a.model.replace("zoo:", ""), write=not a.no_write)
        return
    ks = [int(x) for x in a.ks.split(",")]
    base = load_model(a.model)
    teacher = base.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    tok = base.tokenizer
    windows = eval_windows("stdlib", tok, 256, "validation", a.windows)
    dense = perplexity(teacher, windows, 16).perplexity
    samples = calibration_samples("stdlib", tok, 64, 256, 0)
    states, bi = collect_states(teacher, samples, 4096, 0)
    dmap = depth_map(states, bi, protect_head=a.protect, protect_tail=a.protect)
    L = dmap.num_blocks
    print(f"dense {dense:.3f}; BI {[round(x, 3) for x in bi]}", flush=True)
    cfg = TrainConfig(steps=a.steps, global_batch=a.batch, seqlen=a.seqlen, lr=a.lr, checkpoint_every=a.steps)
    work_root = Path(tempfile.mkdtemp(prefix="depth-bench-"))
    res: dict = {}
    t0 = time.perf_counter()

    def run(name: str, k: int, intervals: list[dict]) -> dict:
        out = {}
        m0 = assemble(copy.deepcopy(teacher), intervals)
        out["none"] = perplexity(m0, windows, 16).perplexity
        students, _ = heal("distill", a.model, teacher, None, intervals, cfg, tok, work_root / f"{name}-{k}-d")
        out["distill"] = perplexity(assemble(copy.deepcopy(teacher), intervals, students).eval(), windows, 16).perplexity
        ft = assemble(copy.deepcopy(teacher), intervals)
        for p in ft.parameters():
            p.requires_grad_(True)
        ft, _ = heal("finetune", a.model, teacher, ft, intervals, cfg, tok, work_root / f"{name}-{k}-f")
        out["finetune"] = perplexity(ft.eval(), windows, 16).perplexity
        print(f"k={k} {name:8s} none {out['none']:.2f} distill {out['distill']:.2f} finetune {out['finetune']:.2f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
        return out

    name = a.model.replace("zoo:", "")
    res_path = ROOT / "benchmarks" / "results" / f"depth_{name}.json"
    chosen = {}
    prev = json.loads(res_path.read_text()) if a.reuse_table else None
    prev_commands = prev.get("commands", []) if prev else []
    for k in ks if prev is None else []:
        res[k] = {}
        iv = select_intervals(dmap, k)
        chosen[k] = iv
        res[k]["ppcl"] = run("ppcl", k, iv)
        res[k]["bi"] = run("bi", k, runs_to_intervals(select_blocks("bi", k, L, bi), L))
        res[k]["last"] = run("last", k, runs_to_intervals(select_blocks("last", k, L), L))
        rnd = [run(f"random{s}", k, runs_to_intervals(select_blocks("random", k, L, seed=s), L))
               for s in range(a.random_seeds)]
        res[k]["random"] = {h: [r[h] for r in rnd] for h in ("none", "distill", "finetune")}
    if prev is not None:
        res = {int(k): v for k, v in prev["results"].items()}
        chosen = {int(k): v for k, v in prev["chosen"].items()}
        ks = sorted(res)
    # One distillation run, several ratios: students for the intervals of the largest k; every subset of
    # those intervals is a model (students are trained teacher-forced, independently of each other).
    kmax = max(ks)
    ivs = chosen[kmax]
    students, _ = heal("distill", a.model, teacher, None, ivs, cfg, tok, work_root / "family")
    fam = {}
    for mask in range(1, 2 ** len(ivs)):
        active = [iv for j, iv in enumerate(ivs) if mask >> j & 1]
        r = sum(iv["end"] - iv["start"] for iv in active)
        if r in fam:
            continue
        m = assemble(copy.deepcopy(teacher), active, students).eval()
        fam[r] = {"intervals": [[iv["start"], iv["end"]] for iv in active],
                  "ppl": perplexity(m, windows, 16).perplexity}
        print(f"family remove {r}: {fam[r]['ppl']:.3f}", flush=True)
    # real speed, side by side, interleaved repetitions; a batch of windows so that one timing is long
    # enough to rise above timer and scheduler noise
    models = {"dense": teacher}
    for k in ks:
        models[f"-{k} blocks"] = assemble(copy.deepcopy(teacher), chosen[k]).eval()
    prompt = windows[:a.speed_batch]
    sp = side_by_side(models, prompt, repeats=a.speed_repeats)
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    res_path.write_text(json.dumps(
        {"dense": dense, "results": res, "family": fam, "speed": sp, "bi": bi, "depth_map": dmap.to_dict(),
         "chosen": chosen, "args": vars(a),
         "commands": (prev_commands if a.reuse_table else []) + [command_line()]}, indent=1, default=str))
    render(name, write=not a.no_write)


def verdicts(res: dict, ks: list[int]) -> str:
    """Plain statements of what the table shows, computed from it."""
    med = {k: {h: statistics.median(res[k]["random"][h]) for h in ("none", "distill", "finetune")} for k in ks}
    out = []
    for sel in ("ppcl", "bi"):
        beats = [k for k in ks if res[k][sel]["none"] < med[k]["none"]]
        out.append(f"{sel} beats the random median without healing at k = {beats or 'none'} of {ks}")
    out.append("bi beats ppcl without healing at k = "
               f"{[k for k in ks if res[k]['bi']['none'] < res[k]['ppcl']['none']] or 'none'}")
    n = sum(1 for k in ks for sel in ("ppcl", "bi", "last") if res[k][sel]["distill"] < res[k][sel]["finetune"])
    out.append(f"contiguous distillation beats fine-tuning at equal tokens in {n} of {3 * len(ks)} "
               "(k, selection) cells; both improve on no healing in every cell" if all(
                   res[k][sel][h] < res[k][sel]["none"] for k in ks for sel in ("ppcl", "bi", "last")
                   for h in ("distill", "finetune")) else
               f"contiguous distillation beats fine-tuning at equal tokens in {n} of {3 * len(ks)} cells")
    return "As measured: " + "; ".join(out) + "."


def render(name: str, write: bool = True) -> None:
    d = json.loads((ROOT / "benchmarks" / "results" / f"depth_{name}.json").read_text())
    a = argparse.Namespace(**d["args"])
    res = {int(k): v for k, v in d["results"].items()}
    chosen = {int(k): v for k, v in d["chosen"].items()}
    fam = {int(k): v for k, v in d["family"].items()}
    ks, sp, dense, L = sorted(res), d["speed"], d["dense"], len(d["bi"])
    kmax = max(ks)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, h in zip(axes, ("none", "distill", "finetune")):
        for sel, c in (("ppcl", "C0"), ("bi", "C1"), ("last", "C3")):
            ax.plot(ks, [res[k][sel][h] for k in ks], marker="o", color=c, label=sel)
        med = [statistics.median(res[k]["random"][h]) for k in ks]
        ax.plot(ks, med, marker="s", color="C2", ls="--", label="random (median)")
        ax.fill_between(ks, [min(res[k]["random"][h]) for k in ks], [max(res[k]["random"][h]) for k in ks],
                        color="C2", alpha=0.2)
        ax.axhline(dense, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("blocks removed")
        ax.set_title({"none": "no healing", "distill": f"contiguous distillation ({a.steps} steps)",
                      "finetune": f"fine-tuning ({a.steps} steps)"}[h], fontsize=9)
    axes[0].set_ylabel("validation perplexity")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    FIG.mkdir(parents=True, exist_ok=True)
    figp = FIG / f"depth_{name}.png"
    fig.savefig(figp, dpi=110)
    plt.close(fig)
    rows = []
    for k in ks:
        for sel in ("ppcl", "bi", "last"):
            r = res[k][sel]
            rows.append([k, sel, f"{r['none']:.2f}", f"{r['distill']:.2f}", f"{r['finetune']:.2f}"])
        rr = res[k]["random"]
        rows.append([k, f"random ({a.random_seeds} seeds)"] + [f"{statistics.median(rr[h]):.2f} "
                    f"[{min(rr[h]):.2f}–{max(rr[h]):.2f}]" for h in ("none", "distill", "finetune")])
    tokens = a.steps * a.batch * a.seqlen
    body = (f"Model `{a.model}` ({L} blocks), dense perplexity {dense:.3f} ({a.windows} validation windows × 256). "
            f"PPCL intervals from span probes + CKA trend (64 × 256 calibration tokens, 4096 probe tokens, "
            f"max interval 3, {a.protect} protected blocks at each end). Healing budget for every row: {a.steps} steps × "
            f"{a.batch} × {a.seqlen} = {tokens:,} training tokens of stdlib/train, AdamW lr {a.lr}, cosine. "
            "`distill`: one student per interval (baselines: each removed run absorbed by its kept neighbour), "
            "teacher-forced, per-token cosine loss; `finetune`: LM loss on the whole pruned model.\n\n"
            + md_table(["removed", "selection", "no healing", "distill", "finetune"], rows)
            + f"\n\n![depth pruning](docs/figures/{figp.name})\n\n"
            + verdicts(res, ks) + "\n\n"
            + "Chosen PPCL intervals: " + "; ".join(f"k={k}: " + ", ".join(f"[{iv['start']},{iv['end']}]"
                                                                          for iv in chosen[k]) for k in ks)
            + f".\n\nOne distillation run (students for the k={kmax} intervals), assembled without retraining:\n\n"
            + md_table(["blocks removed", "active intervals", "perplexity"],
                       [[r, v["intervals"], f"{v['ppl']:.2f}"] for r, v in sorted(fam.items())])
            + f"\n\nReal speed (batch {a.speed_batch}; prefill of {a.speed_batch} × 256 tokens, decode of 64 tokens "
              f"per sequence with KV cache; medians of {a.speed_repeats} interleaved repetitions in one process; "
              "the assembled models are stock `LlamaForCausalLM` with fewer layers):\n\n"
            + md_table(["model", "prefill tok/s", "× dense", "decode tok/s", "× dense"],
                       [[n, f"{v['prefill']:,.0f}", f"{v['prefill'] / sp['dense']['prefill']:.2f}",
                         f"{v['decode']:,.1f}", f"{v['decode'] / sp['dense']['decode']:.2f}"] for n, v in sp.items()]))
    print(body)
    if not a.no_write:
        update_section(f"depth-{name}", body, commands=d.get("commands"), title=f"Depth pruning: {a.model}")


if __name__ == "__main__":
    main()
