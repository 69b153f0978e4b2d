"""Token pruning in a UNet's self-attention: SimPrune (SiTo) vs ToMe-SD vs random drop, noise α > 0 vs 0,
and the speed crossover.

Quality, on zoo:unet-digit-pairs (128 tokens at the top level), at ratios 0.25 / 0.5 / 0.75, three
selection seeds: the relative error of the velocity prediction vs the unpruned model at σ = 0.1…0.9
(256 held-out canvases), and the prompt consistency of 200 SDE samples (40 prompts × 5, fixed noises).
Speed: a random-weight UNet of the same architecture (channels 64/128) at 16×16 … 96×96 latents, batch
2, one UNet call dense vs pruned (ratio 0.5), interleaved, medians of `--repeats`.

    python benchmarks/unet_tokens.py
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, update_section  # noqa: E402

from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.tokens_diffusion import SIGMAS, consistency, heldout, prediction_error  # noqa: E402
from layerwise.tokens import TOKEN_SELECTORS  # noqa: E402
from layerwise.tokens.diffusion import SpatialTokenPruning  # noqa: E402

METHODS = {"SimPrune α=0.1": ("simprune", {"alpha": 0.1}), "SimPrune α=0": ("simprune", {"alpha": 0.0}),
           "ToMe-SD": ("tome-sd", {}), "random drop": ("random", {})}


def speed_curve(sizes, repeats, ratio=0.5):
    from diffusers import UNet2DConditionModel

    rows, out = [], {}
    for size in sizes:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(sample_size=size, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                                    layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                    attention_head_dim=(2, 4), norm_num_groups=16).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, size, size, generator=g)
        ctx = torch.randn(2, 8, 64, generator=g)
        t = torch.full((2,), 500.0)
        variants = {"dense": None, **{name: SpatialTokenPruning(unet, TOKEN_SELECTORS.create(m, o), ratio, cfg=True)
                                      for name, (m, o) in METHODS.items() if name != "SimPrune α=0"}}
        times = {k: [] for k in variants}
        with torch.inference_mode():
            for rep in range(repeats + 1):
                for k, v in variants.items():
                    if v is not None:
                        v.install()
                    t0 = time.perf_counter()
                    unet(x, t, encoder_hidden_states=ctx)
                    dt = time.perf_counter() - t0
                    if v is not None:
                        v.remove()
                    if rep:
                        times[k].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[size] = med
        rows.append([f"{size}×{size}", str(size * size), f"{med['dense'] * 1000:.0f} ms"]
                    + [f"{med['dense'] / med[k]:.2f}×" for k in variants if k != "dense"])
        print(rows[-1], flush=True)
    heads = ["latent", "top-level tokens", "dense UNet call"] + [f"{k} speed-up" for k in METHODS if k != "SimPrune α=0"]
    return md_table(heads, rows), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", default="0.25,0.5,0.75")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sizes", default="16,32,48,64,96")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    model = load_model("zoo:unet-digit-pairs").model.eval()
    judge = load_model("zoo:judge-digits").model.eval()
    x0, cond = heldout(model, 256)
    dense_consistency = consistency(model, judge, per=5)
    rows, results = [], {"dense_consistency": dense_consistency}
    for ratio in [float(r) for r in args.ratios.split(",")]:
        for name, (method, opts) in METHODS.items():
            errs, cons = [], []
            for seed in [int(s) for s in args.seeds.split(",")]:
                p = SpatialTokenPruning(model, TOKEN_SELECTORS.create(method, opts), ratio, seed=seed)
                errs.append(prediction_error(model, p, x0, cond))
                with p:
                    cons.append(consistency(model, judge, per=5))
            per_sigma = {s: statistics.mean(e[i]["relative_error"] for e in errs) for i, s in enumerate(SIGMAS)}
            results[f"{name}@{ratio}"] = {"errors": errs, "consistency": cons}
            rows.append([f"{ratio:.2f}", name] + [f"{per_sigma[s]:.4f}" for s in SIGMAS]
                        + [f"{statistics.mean(cons):.3f} ± {statistics.pstdev(cons):.3f}"])
            print(rows[-1], flush=True)
    t1 = md_table(["ratio", "method"] + [f"rel. error σ={s}" for s in SIGMAS] + ["prompt consistency"], rows)
    t2, speeds = speed_curve([int(s) for s in args.sizes.split(",")], args.repeats)
    results["speed_s"] = speeds
    print(t1, t2, sep="\n\n")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "unet_tokens.json").write_text(json.dumps(results, indent=1, default=str))
    minutes = (time.perf_counter() - t_start) / 60
    if args.no_write:
        return
    body = (f"Quality on zoo:unet-digit-pairs (unpruned prompt consistency {dense_consistency:.3f}); relative error "
            f"‖v_pruned − v‖²/‖v‖² on 256 held-out canvases, mean over selection seeds {args.seeds}; consistency of "
            "200 SDE samples (20 steps) on fixed noises, mean ± std over the seeds. Every method prunes the "
            "self-attention (attn1) of the top level only, 2×2 windows.\n\n" + t1 + "\n\n"
            f"Speed: random-weight UNet (channels 64/128, 4 latent channels), batch 2 (a guidance pair, halves "
            f"pruned alike), one call at t=500, ratio 0.5, median of {args.repeats} interleaved runs; speed-up = "
            f"dense time / pruned time. {minutes:.0f} min on {platform.machine()}.\n\n" + t2 + "\n")
    update_section("unet_tokens", body, "Token pruning in a UNet's self-attention (SimPrune, ToMe-SD, random)")


if __name__ == "__main__":
    main()
