"""Token reduction inside a ViT: ToMe merging against random dropping at equal token counts.

Quality: the trained `zoo:vit-digits` (6 blocks, 65 tokens) on its test canvases, r tokens leaving
after each block's attention (r = 2, 4, 6, 8; equal counts per block give equal FLOPs up to ToMe's
matching, which is counted). ToMe with and without proportional attention; random dropping over
`--seeds` seeds (mean and spread). Images/s of each against the dense model, side by side.

Speed: a random-weight ViT-S/16 shape (hidden 384, 6 heads, MLP 1536, 12 blocks; speed does not depend
on the weights) at 224² (197 tokens) and 384² (577 tokens): dense vs ToMe vs random drop at the
largest constant r within 25% and 40% token-block sparsity, images/s medians of alternating runs.

    python benchmarks/vit_tokens.py [--seeds 5] [--repeats 7] [--speed-batch 8]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import FIG, ROOT, command_line, md_table, update_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "vit_tokens.json"


def alternating(model, reductions: dict, pixels, repeats: int) -> dict:
    """images/s of the dense model and of every reduction, A B C A B C ... after a warm-up round."""
    from layerwise.eval.speed import interleaved_times

    t = interleaved_times(lambda: model(pixel_values=pixels), {"dense": None, **reductions}, repeats)
    return {k: pixels.shape[0] / v for k, v in t.items()}


def quality(args) -> list[dict]:
    import layerwise
    from layerwise.data.images import canvases_for
    from layerwise.pipeline.tokens_encoder import evaluate_reduction
    from layerwise.tokens import TOKEN_SELECTORS
    from layerwise.tokens.merging import EncoderReduction

    lm = layerwise.load("zoo:vit-digits")
    model = lm.model.eval()
    images = canvases_for("test", model.config.image_size, lm.card["data"])
    L = model.config.num_hidden_layers
    rows = []
    for r in args.r:
        configs = {"tome": ("tome", {}), "tome (no prop-attn)": ("tome", {"prop_attn": False})}
        configs.update({f"random seed {s}": ("random", {"seed": s}) for s in range(args.seeds)})
        reds = {k: EncoderReduction(model, TOKEN_SELECTORS.create(n, o), [r] * L) for k, (n, o) in configs.items()}
        speed = alternating(model, {k: v for k, v in reds.items() if k in ("tome", "random seed 0")},
                            images.pixels[:args.quality_batch], args.repeats)
        for k, red in reds.items():
            m = evaluate_reduction(model, red, images)
            m.update(method=k, r=r, speedup=speed[k] / speed["dense"] if k in speed else None)
            rows.append(m)
            print(f"r={r} {k:22s} acc {m['accuracy']:.4f} (dense {m['accuracy_dense']:.4f}) nll {m['nll']:.4f} "
                  f"flops {m['flops_ratio']:.3f}" + (f" speed x{m['speedup']:.2f}" if m["speedup"] else ""))
    return rows


def vit_s(image: int):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=image, patch_size=16, num_channels=3, hidden_size=384, num_hidden_layers=12,
                    num_attention_heads=6, intermediate_size=1536, num_labels=1000)
    return ViTForImageClassification(cfg).eval()


def speed(args) -> list[dict]:
    from layerwise.tokens import TOKEN_SELECTORS
    from layerwise.tokens.flops import encoder_flops
    from layerwise.tokens.merging import EncoderReduction, constant_r, token_counts

    rows = []
    for image in args.images:
        model = vit_s(image)
        n = (image // 16) ** 2 + 1
        x = torch.randn(args.speed_batch, 3, image, image, generator=torch.Generator().manual_seed(image))
        reds, meta = {}, {}
        for s in args.sparsities:
            for name in ("tome", "random"):
                r = constant_r(n, 12, s, tome=name == "tome")
                reds[(name, s)] = EncoderReduction(model, TOKEN_SELECTORS.create(name), [r] * 12)
                att, mlp = token_counts([r] * 12, n)
                meta[(name, s)] = (r, encoder_flops(model, att, mlp, heads_metric=name == "tome")
                                   / encoder_flops(model, [n] * 12))
        ips = alternating(model, reds, x, args.repeats)
        for key, (r, fr) in meta.items():
            rows.append({"image": image, "tokens": n, "method": key[0], "sparsity": key[1], "r": r, "flops_ratio": fr,
                         "images_per_s_dense": ips["dense"], "images_per_s": ips[key],
                         "speedup": ips[key] / ips["dense"]})
            print(f"{image}² ({n} tokens) {key[0]:6s} r={r:3d}: {ips[key]:.2f} im/s vs dense {ips['dense']:.2f} "
                  f"(x{ips[key] / ips['dense']:.2f}, FLOPs ideal x{1 / fr:.2f})")
    return rows


def plot(q: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, pick in (("ToMe", lambda m: m == "tome"), ("ToMe, no prop-attn", lambda m: m == "tome (no prop-attn)"),
                        ("random drop (mean of seeds)", lambda m: m.startswith("random"))):
        pts = {}
        for row in q:
            if pick(row["method"]):
                pts.setdefault(row["flops_ratio"], []).append(row["accuracy"])
        xs = sorted(pts)
        ax.plot(xs, [statistics.mean(pts[x]) for x in xs], "o-", label=label)
    dense = q[0]["accuracy_dense"]
    ax.axhline(dense, color="grey", ls="--", lw=1, label="dense")
    ax.set_xlabel("FLOPs / dense FLOPs")
    ax.set_ylabel("test accuracy")
    ax.set_title("vit-digits: tokens leaving after each block's attention", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    FIG.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG / "vit_tokens.png", dpi=110)
    plt.close(fig)


def render(res: dict) -> str:
    q, s = res["quality"], res["speed"]
    rows = []
    for r in sorted({row["r"] for row in q}):
        at = [row for row in q if row["r"] == r]
        tome = next(row for row in at if row["method"] == "tome")
        noprop = next(row for row in at if row["method"] == "tome (no prop-attn)")
        rnd = [row for row in at if row["method"].startswith("random")]
        ra = [row["accuracy"] for row in rnd]
        rs = next(row["speedup"] for row in rnd if row["method"] == "random seed 0")
        rows.append([r, f"{tome['flops_ratio']:.3f}", f"{rnd[0]['flops_ratio']:.3f}", f"{tome['accuracy_dense']:.4f}",
                     f"{tome['accuracy']:.4f}", f"{noprop['accuracy']:.4f}",
                     f"{statistics.mean(ra):.4f} ± {statistics.pstdev(ra):.4f} (min {min(ra):.4f})",
                     f"{tome['nll']:.3f}", f"{statistics.mean(row['nll'] for row in rnd):.3f}",
                     f"{tome['speedup']:.2f}", f"{rs:.2f}"])
    n_seeds = len([row for row in q if row["r"] == q[0]["r"] and row["method"].startswith("random")])
    body = ["### Quality: zoo:vit-digits (6 blocks, 65 tokens, test canvases)", "",
            f"r tokens leave after each block's attention; random drop over {n_seeds} seeds (mean ± standard deviation, and the worst seed). "
            "Speed-ups: images/s against the dense model at batch "
            f"{res['quality_batch']}, medians of alternating runs.", "",
            md_table(["r", "FLOPs ToMe", "FLOPs random", "dense acc", "ToMe acc", "ToMe acc (no prop-attn)",
                      "random drop acc", "ToMe NLL", "random NLL", "ToMe speed-up", "random speed-up"], rows), "",
            "![accuracy vs FLOPs](docs/figures/vit_tokens.png)", "",
            "### Speed: random-weight ViT-S/16 shape (hidden 384, 6 heads, MLP 1536, 12 blocks)", "",
            f"Batch {res['speed_batch']}, images/s medians of alternating runs (dense and every reduction in one "
            "loop); FLOPs-ideal speed-up = dense / reduced analytic FLOPs (ToMe's matching included).", "",
            md_table(["image", "tokens", "method", "token-block sparsity ≤", "r", "FLOPs-ideal", "images/s dense",
                      "images/s reduced", "measured speed-up"],
                     [[f"{row['image']}²", row["tokens"], row["method"], row["sparsity"], row["r"],
                       f"{1 / row['flops_ratio']:.2f}", f"{row['images_per_s_dense']:.2f}",
                       f"{row['images_per_s']:.2f}", f"{row['speedup']:.2f}"] for row in s])]
    body += ["", verdict(res)]
    return "\n".join(body)


def verdict(res: dict) -> str:
    lines = []
    for r in sorted({row["r"] for row in res["quality"]}):
        at = [row for row in res["quality"] if row["r"] == r]
        tome = next(row["accuracy"] for row in at if row["method"] == "tome")
        ra = [row["accuracy"] for row in at if row["method"].startswith("random")]
        lines.append(f"r={r}: ToMe {tome:.4f} vs random {statistics.mean(ra):.4f} — "
                     + ("ToMe ahead of every random seed" if tome > max(ra) else
                        "ToMe NOT ahead of every random seed"))
    return "Verdicts (as measured): " + "; ".join(lines) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--r", type=lambda s: [int(x) for x in s.split(",")], default=[2, 4, 6, 8])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quality-batch", type=int, default=256)
    ap.add_argument("--speed-batch", type=int, default=8)
    ap.add_argument("--images", type=lambda s: [int(x) for x in s.split(",")], default=[224, 384])
    ap.add_argument("--sparsities", type=lambda s: [float(x) for x in s.split(",")], default=[0.25, 0.4])
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.render_only:
        res = json.loads(RESULTS.read_text())
    else:
        res = {"quality": quality(args), "speed": speed(args), "quality_batch": args.quality_batch,
               "speed_batch": args.speed_batch, "commands": [command_line()]}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1))
    plot(res["quality"])
    body = render(res)
    print(body)
    if not args.no_write:
        update_section("vit_tokens", body, "ViT token reduction: ToMe vs random drop (quality and images/s)",
                       commands=res.get("commands") or ["python benchmarks/vit_tokens.py"])


if __name__ == "__main__":
    main()
