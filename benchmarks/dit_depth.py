"""Depth pruning of a diffusion transformer without any training: which blocks can go?

zoo:dit-digits (12 DiT blocks) loses k blocks chosen by PPCL's contiguous intervals (each interval
keeps one block, no students trained), Block Influence (ShortGPT), the last k, or k random blocks
(3 seeds). Measured on the pruned generator: the judge's prompt accuracy and the Fréchet distance on
judge features (20 SDE samples per class, fixed noises, against the 497 held-out test digits), and the
increase of the flow-matching loss over the dense model (256 validation digits, 5 noise levels).

    python benchmarks/dit_depth.py --remove 2,3,4
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, update_section  # noqa: E402

from layerwise.data.images import digit_images  # noqa: E402
from layerwise.eval.generators import denoising_loss_per_timestep, generator_metrics  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.depth import depth  # noqa: E402
from layerwise.rl.sampler import Sampler  # noqa: E402
from layerwise.rl.trainer import samples  # noqa: E402


def measure(model, dense, judge) -> dict:
    classes = torch.arange(10)
    x = samples(model, Sampler(20), classes, 20, seed=4242)
    m = generator_metrics(judge, x, classes.repeat_interleave(20), digit_images("test").pixels)
    val = digit_images("validation")
    dl = denoising_loss_per_timestep(model, dense, val.pixels[:256], val.labels[:256])
    m["loss_increase"] = statistics.mean(r["increase"] for r in dl)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:dit-digits")
    ap.add_argument("--remove", default="2,3,4")
    ap.add_argument("--random-seeds", default="0,1,2")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    judge = load_model("zoo:judge-digits").model.eval()
    dense = load_model(args.model).model.eval()
    base = measure(dense, dense, judge)
    rows, results = [["dense (12 blocks)", "-", f"{base['prompt_accuracy']:.3f}", f"{base['frechet_distance']:.2f}",
                      "0"]], {"dense": base}
    for k in [int(x) for x in args.remove.split(",")]:
        for select in ("ppcl", "bi", "last", "random"):
            seeds = [int(s) for s in args.random_seeds.split(",")] if select == "random" else [0]
            ms, removed = [], []
            for seed in seeds:
                r = depth(args.model, remove=k, select=select, seed=seed, calib="digits", nsamples=64)
                ms.append(measure(r.model, dense, judge))
                removed.append(r.removed)
            results[f"{select}-{k}"] = {"removed": removed, "metrics": ms}

            def agg(key, fmt):
                v = [m[key] for m in ms]
                return fmt.format(statistics.mean(v)) + (f" ± {statistics.pstdev(v):.3f}" if len(v) > 1 else "")

            rows.append([f"{select}, −{k}", "; ".join(str(sorted(x)) for x in removed),
                         agg("prompt_accuracy", "{:.3f}"), agg("frechet_distance", "{:.2f}"),
                         agg("loss_increase", "{:.4f}")])
            print(rows[-1], flush=True)
    table = md_table(["blocks removed by", "removed", "prompt accuracy", "Fréchet distance", "flow-loss increase"], rows)
    print(table)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "dit_depth.json").write_text(json.dumps(results, indent=1))
    if args.no_write:
        return
    body = ("No training after removal (PPCL's intervals keep their middle block; trained students: the PPCL section below). "
            "Metrics on the pruned generator: judge accuracy and Fréchet distance of 200 SDE samples "
            "(20 steps, eta 0.3) on fixed noises; mean increase of the flow-matching loss over the dense model "
            "on 256 validation digits at noise levels 0.1…0.9.\n\n" + table + "\n")
    update_section("dit_depth", body, "Depth pruning of a DiT without training (zoo:dit-digits)")


if __name__ == "__main__":
    main()
