"""PPCL on a diffusion transformer (zoo:dit-digits, 12 DiT blocks): the paper's relative claims, measured.

1. Contiguous vs scattered removal of 4 blocks, no training: flow-loss increase of every contiguous
   run vs 30 random scattered sets (no two adjacent).
2. Probe-selected vs random intervals (same lengths, same protected range) after equal distillation.
3. Distilled block students vs plain bypass (each interval keeps its middle block) vs linear
   stand-ins (closed-form ridge, and ridge + the same distillation).
4. Non-sequential (teacher-forced, PPCL) vs sequential (student-chained) training with many
   intervals active (6 of 12 blocks removed), evaluated with all intervals and with each half.
5. The pluggable family from one teacher-forced run (depths 12 → 6) vs students trained only for
   that subset (the first two nested subsets), plus the sampling speed of every member.

Every training run: `steps` steps, global batch 32, lr 1e-3 (AdamW, cosine), seeds 0,1,2 (training
data; for random intervals also their placement). Metrics on the generator: judge accuracy and Fréchet
distance of 200 SDE samples on fixed noises, mean flow-loss increase over the dense model.

    python benchmarks/dit_ppcl.py --seeds 0,1,2 --steps 600
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, update_section  # noqa: E402
from dit_depth import measure  # noqa: E402

from layerwise.data.images import digit_images  # noqa: E402
from layerwise.distill.driver import TrainConfig  # noqa: E402
from layerwise.distill.objectives import HEALERS  # noqa: E402
from layerwise.eval.generators import denoising_loss_per_timestep  # noqa: E402
from layerwise.eval.speed import interleaved_times  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.models.adapters import get_adapter  # noqa: E402
from layerwise.pipeline.depth import collect_states, train_healing  # noqa: E402
from layerwise.prune.depth import assemble, remove_blocks  # noqa: E402
from layerwise.prune.family import nested_order  # noqa: E402
from layerwise.rl.sampler import Sampler  # noqa: E402
from layerwise.rl.trainer import samples  # noqa: E402
from layerwise.scores.probes import depth_map, select_intervals  # noqa: E402

MODEL = "zoo:dit-digits"


def loss_increase(model, dense) -> float:
    val = digit_images("validation")
    return statistics.mean(r["increase"] for r in denoising_loss_per_timestep(model, dense, val.pixels[:256], val.labels[:256]))


def train_students(teacher, intervals, seed, steps, lr, student="block", teacher_forcing=True, calib=None):
    healer = HEALERS.create("distill", {"student": student, "teacher_forcing": teacher_forcing})
    healer.prepare(teacher, intervals, calib)
    if steps == 0 and student == "linear":
        return dict(healer.fitted)
    cfg = TrainConfig(steps=steps, global_batch=32, lr=lr, seed=seed, checkpoint_every=steps, warmup=10)
    with tempfile.TemporaryDirectory() as work:
        module = train_healing(healer, MODEL, teacher, None, intervals, cfg, None, Path(work))
    return healer.students(module)


def build(teacher, active, students=None):
    return assemble(copy.deepcopy(teacher), active, students).eval()


def random_intervals(lengths, lo, hi, rng):
    """Non-overlapping intervals with the given spans (blocks), placed at random in [lo, hi) (they may
    touch, as PPCL's own choice may when the budget leaves no room for gaps)."""
    for _ in range(10_000):
        order = rng.permutation(len(lengths))
        ivs, ok, used = [], True, set()
        for n in [lengths[i] for i in order]:
            s = int(rng.integers(lo, hi - n + 1))
            span = set(range(s, s + n))
            if s + n > hi or span & used:
                ok = False
                break
            used |= span
            ivs.append({"start": s, "end": s + n - 1})
        if ok:
            return sorted(ivs, key=lambda iv: iv["start"])
    raise RuntimeError("could not place random intervals")


def agg(ms, key, fmt="{:.3f}"):
    v = [m[key] for m in ms]
    return fmt.format(statistics.mean(v)) + (" ± " + fmt.format(statistics.pstdev(v)) if len(v) > 1 else "")


def row(name, ms, extra=""):
    return [name, agg(ms, "prompt_accuracy"), agg(ms, "frechet_distance", "{:.2f}"), agg(ms, "loss_increase", "{:.4f}"), extra]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--speed-repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    t_start = time.perf_counter()
    judge = load_model("zoo:judge-digits").model.eval()
    teacher = load_model(MODEL).model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    L = get_adapter(teacher).num_blocks
    calib = get_adapter(teacher).calibration_samples({}, 256, seed=0)
    states, bi = collect_states(teacher, calib[:64], 4096, 0)
    dmap = depth_map(states, bi, max_len=3, protect_head=2, protect_tail=2)
    results: dict = {"dense": measure(teacher, teacher, judge)}
    sections = []
    M = lambda m: measure(m, teacher, judge)  # noqa: E731

    # 1. contiguous vs scattered (bypass only)
    k = 4
    contig = {a: loss_increase(remove_blocks(copy.deepcopy(teacher), range(a, a + k)), teacher) for a in range(L - k + 1)}
    rng = np.random.default_rng(0)
    scattered = []
    while len(scattered) < 30:
        s = sorted(int(i) for i in rng.choice(L, size=k, replace=False))
        if all(b - a > 1 for a, b in zip(s, s[1:])) and s not in [x for x, _ in scattered]:
            scattered.append((s, loss_increase(remove_blocks(copy.deepcopy(teacher), s), teacher)))
    best_c = min(contig, key=contig.get)
    best_s = min(scattered, key=lambda x: x[1])
    results["contiguous_vs_scattered"] = {"contiguous": contig, "scattered": scattered}
    t1 = md_table(["removal of 4 blocks (bypass, no training)", "sets tried", "best flow-loss increase",
                   "median", "best set"],
                  [["contiguous run", str(len(contig)), f"{contig[best_c]:.4f}", f"{statistics.median(contig.values()):.4f}",
                    f"[{best_c}, {best_c + k - 1}]"],
                   ["scattered (no two adjacent)", str(len(scattered)), f"{best_s[1]:.4f}",
                    f"{statistics.median(x for _, x in scattered):.4f}", str(best_s[0])]])
    print(t1, flush=True)
    sections.append(("Contiguous vs scattered removal", t1))

    # 2 + 3. probe-selected vs random intervals; students vs bypass vs linear stand-ins (remove 4)
    ppcl = select_intervals(dmap, 4)
    lengths = [iv["end"] - iv["start"] + 1 for iv in ppcl]
    rows2, rows3 = [], []
    res2 = {"ppcl": [], "random": [], "random_intervals": []}
    res3 = {"bypass": [M(build(teacher, ppcl))], "block": [], "linear_closed_form": [], "linear_trained": []}
    for seed in seeds:
        st = train_students(teacher, ppcl, seed, args.steps, args.lr)
        m = M(build(teacher, ppcl, st))
        res2["ppcl"].append(m)
        res3["block"].append(m)
        ivs = random_intervals(lengths, 2, L - 2, np.random.default_rng(100 + seed))
        res2["random_intervals"].append([(iv["start"], iv["end"]) for iv in ivs])
        res2["random"].append(M(build(teacher, ivs, train_students(teacher, ivs, seed, args.steps, args.lr))))
        lin = train_students(teacher, ppcl, seed, args.steps, args.lr, student="linear", calib=calib)
        res3["linear_trained"].append(M(build(teacher, ppcl, lin)))
        print(seed, res2["ppcl"][-1], res2["random"][-1], res3["linear_trained"][-1], flush=True)
    res3["linear_closed_form"].append(M(build(teacher, ppcl, train_students(teacher, ppcl, 0, 0, args.lr, "linear", calib=calib))))
    results["probe_vs_random"], results["standins"] = res2, res3
    span = ", ".join(f"[{iv['start']}, {iv['end']}]" for iv in ppcl)
    t2 = md_table(["intervals (−4 blocks), distilled equally", "prompt accuracy", "Fréchet distance", "flow-loss increase", "intervals"],
                  [row("probe-selected (PPCL)", res2["ppcl"], span),
                   row("random, same lengths", res2["random"], "; ".join(str(x) for x in res2["random_intervals"]))])
    t3 = md_table(["replacement of the PPCL intervals (−4 blocks)", "prompt accuracy", "Fréchet distance", "flow-loss increase", "training"],
                  [row("plain bypass (interval keeps its middle block)", res3["bypass"], "none"),
                   row("linear stand-ins, closed-form ridge", res3["linear_closed_form"], "none (256 calibration digits)"),
                   row("linear stand-ins, ridge + distillation", res3["linear_trained"], f"{args.steps} steps"),
                   row("block students (PPCL)", res3["block"], f"{args.steps} steps")])
    print(t2, t3, sep="\n", flush=True)
    sections += [("Probe-selected vs random intervals", t2), ("Students vs bypass vs linear stand-ins", t3)]

    # 4 + 5. many intervals: teacher-forced vs sequential; the family vs dedicated students
    # six of twelve blocks do not fit outside a protected head/tail of two: protect one each side
    many = select_intervals(depth_map(states, bi, max_len=3, protect_head=1, protect_tail=1), 6)
    order = nested_order(many)
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    res4 = {"tf": {"all": [], "half_a": [], "half_b": []}, "seq": {"all": [], "half_a": [], "half_b": []}}
    fam_members: dict[int, list] = {}
    dedicated: dict[int, list] = {}
    fam_models = {}
    for seed in seeds:
        for kind, tf in (("tf", True), ("seq", False)):
            st = train_students(teacher, many, seed, args.steps, args.lr, teacher_forcing=tf)
            res4[kind]["all"].append(M(build(teacher, many, st)))
            for h, name in zip(halves, ("half_a", "half_b")):
                res4[kind][name].append(M(build(teacher, sorted(h, key=lambda iv: iv["start"]), st)))
            if tf:
                for j in range(1, len(order) + 1):
                    active = sorted(order[:j], key=lambda iv: iv["start"])
                    m = build(teacher, active, st)
                    depth = L - sum(iv["end"] - iv["start"] for iv in active)
                    fam_members.setdefault(depth, []).append(M(m))
                    if seed == seeds[0]:
                        fam_models[depth] = m
                for j in (1, 2):
                    active = sorted(order[:j], key=lambda iv: iv["start"])
                    depth = L - sum(iv["end"] - iv["start"] for iv in active)
                    own = train_students(teacher, active, seed, args.steps, args.lr)
                    dedicated.setdefault(depth, []).append(M(build(teacher, active, own)))
        print(seed, {k: v["all"][-1] for k, v in res4.items()}, flush=True)
    results["sequential"], results["family"], results["dedicated"] = res4, fam_members, dedicated
    results["many_intervals"] = [(iv["start"], iv["end"]) for iv in many]
    names = {"all": "all intervals", "half_a": "cheapest half", "half_b": "other half"}
    rows4 = []
    for which in ("all", "half_a", "half_b"):
        for kind, label in (("tf", "teacher-forced (PPCL)"), ("seq", "sequential (student-chained)")):
            rows4.append(row(f"{label}, {names[which]} active", res4[kind][which]))
    t4 = md_table(["training (−6 blocks: " + ", ".join(f"[{iv['start']}, {iv['end']}]" for iv in many) + ")",
                   "prompt accuracy", "Fréchet distance", "flow-loss increase", ""], rows4)
    # speed of each member, side by side
    classes = torch.arange(10)
    calls = {d: (lambda m=m: samples(m, Sampler(20), classes, 10, seed=1)) for d, m in sorted(fam_models.items(), reverse=True)}
    calls[L] = lambda: samples(teacher, Sampler(20), classes, 10, seed=1)
    times = {d: [] for d in calls}
    for rep in range(args.speed_repeats + 1):
        for d, c in calls.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                c()
            if rep:
                times[d].append(time.perf_counter() - t0)
    med = {d: statistics.median(v) for d, v in times.items()}
    results["speed_s"] = med
    rows5 = []
    for d in sorted(set(fam_members) | {L}, reverse=True):
        ms = fam_members.get(d) or [results["dense"]]
        r = row(f"{d} blocks, family member" if d != L else f"{L} blocks, dense", ms,
                f"{med[L] / med[d]:.2f}× ({L / d:.2f}× ideal)" if d in med else "")
        rows5.append(r)
        if d in dedicated:
            rows5.append(row(f"{d} blocks, dedicated students", dedicated[d], ""))
    t5 = md_table(["depth", "prompt accuracy", "Fréchet distance", "flow-loss increase", "sampling speed vs dense"], rows5)
    print(t4, t5, sep="\n", flush=True)
    sections += [("Teacher-forced vs sequential training, many intervals", t4),
                  ("One pluggable family vs dedicated students, and sampling speed", t5)]
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dit_ppcl.json").write_text(json.dumps(results, indent=1, default=str))
    minutes = (time.perf_counter() - t_start) / 60
    print(f"total {minutes:.1f} min")
    if args.no_write:
        return
    body = (f"zoo:dit-digits (12 blocks). Training: {args.steps} steps of teacher-forced cosine alignment, global batch 32, "
            f"lr {args.lr}, seeds {args.seeds} (mean ± std over seeds). Metrics: judge accuracy and Fréchet distance of 200 SDE "
            "samples (20 steps, η 0.3) on fixed noises; mean flow-matching loss increase over the dense model (256 validation "
            f"digits, σ 0.1…0.9). Dense: accuracy {results['dense']['prompt_accuracy']:.3f}, Fréchet distance "
            f"{results['dense']['frechet_distance']:.2f}. Sampling speed: 100 samples × 20 steps, median of "
            f"{args.speed_repeats} interleaved runs, ideal = 12 / blocks (the embedding and the final layer are not removed). "
            f"Run time {minutes:.0f} min on {platform.machine()}.\n\n"
            + "\n\n".join(f"**{title}**\n\n{tab}" for title, tab in sections) + "\n")
    update_section("dit_ppcl", body, "PPCL on a DiT: intervals, students, stand-ins, sequential training, pluggable family")


if __name__ == "__main__":
    main()
