"""FTP token routing against Block Influence depth pruning (ShortGPT) on zoo:llama-12l at equal FLOPs.

Token skipping at mean sparsity s removes about s of the linear FLOPs and more of the attention
FLOPs, but adds its router (the attention feature of the previous block); removing k of L blocks
removes k/L of the block FLOPs. So the comparison is made on the measured analytic FLOPs ratio of each
configuration, not on nominal sparsity: perplexity and top-1 agreement with the dense model on the
validation windows, neither method healed (FTP trains only its router; the LLM stays frozen).

    python benchmarks/tokens_vs_depth.py [--sparsities 0.15,0.25,0.35] [--remove 1,2,3,4] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import FIG, md_table, update_section  # noqa: E402

SEQLEN = 256


@torch.no_grad()
def quality(model, dense_logits, ids):
    logits = torch.cat([model(input_ids=ids[s:s + 16], use_cache=False).logits for s in range(0, len(ids), 16)])
    lp = F.log_softmax(logits.float(), -1)
    nll = -lp[:, :-1].gather(-1, ids[:, 1:, None]).mean()
    return float(torch.exp(nll)), float((logits.argmax(-1) == dense_logits.argmax(-1)).float().mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sparsities", default="0.15,0.25,0.35")
    ap.add_argument("--remove", default="1,2,3,4")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    from layerwise import load
    from layerwise.data.tokens import eval_windows
    from layerwise.pipeline.depth import depth
    from layerwise.pipeline.tokens import tokens
    from layerwise.tokens.flops import dense_flops, forward_flops

    lm = load("zoo:llama-12l")
    ids = eval_windows("stdlib", lm.tokenizer, SEQLEN, "validation", a.windows)
    with torch.no_grad():
        dense_logits = torch.cat([lm.model(input_ids=ids[s:s + 16], use_cache=False).logits
                                  for s in range(0, len(ids), 16)])
    ppl_dense, _ = quality(lm.model, dense_logits, ids)
    L = lm.model.config.num_hidden_layers
    rows = []
    for k in [int(x) for x in a.remove.split(",")]:
        d = depth(lm, remove=k, select="bi", nsamples=32, seqlen=SEQLEN)
        kept = [[SEQLEN] * 1 for _ in range(L - k)]
        ratio = forward_flops(d.model, kept, SEQLEN) / dense_flops(lm.model, 1, SEQLEN)
        ppl, agree = quality(d.model, dense_logits, ids)
        rows.append({"method": f"ShortGPT (BI), remove {k}", "flops_ratio": ratio, "perplexity": ppl,
                     "top1_agreement": agree})
        print(rows[-1], flush=True)
    for s in [float(x) for x in a.sparsities.split(",")]:
        for method in ("ftp", "static"):
            r = tokens(lm, method=method, sparsity=s, schedule="ga", steps=a.steps, seqlen=SEQLEN,
                       eval_sequences=a.windows)
            ppl, agree = r.metrics["perplexity"], r.metrics["top1_agreement"]
            rows.append({"method": f"{method} token skipping, sparsity {s:.0%}", "flops_ratio": r.metrics["flops_ratio"],
                         "perplexity": ppl, "top1_agreement": agree, "schedule": r.drop})
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: -r["flops_ratio"])

    def interp(prefix, x):
        pts = sorted((r["flops_ratio"], r["perplexity"]) for r in rows if r["method"].startswith(prefix))
        xs, ys = [p[0] for p in pts], [np.log(p[1]) for p in pts]
        return float(np.exp(np.interp(x, xs, ys))) if xs[0] <= x <= xs[-1] else None

    grid = sorted({round(r["flops_ratio"], 3) for r in rows})
    matched = []
    for x in grid:
        a_, b_ = interp("ftp", x), interp("ShortGPT", x)
        if a_ is not None and b_ is not None:
            matched.append([f"{x:.3f}", a_, b_, "FTP" if a_ < b_ else "ShortGPT"])
    body = (f"Dense validation perplexity {ppl_dense:.3f} ({a.windows} windows × {SEQLEN} tokens). FLOPs ratio = "
            "analytic forward FLOPs / dense (router and attention feature included).\n\n"
            + md_table(["configuration", "FLOPs ratio", "perplexity", "top-1 agreement"],
                       [[r["method"], r["flops_ratio"], r["perplexity"], r["top1_agreement"]] for r in rows])
            + "\n\nAt equal FLOPs (log-perplexity interpolated along each method's curve):\n\n"
            + (md_table(["FLOPs ratio", "FTP perplexity", "ShortGPT perplexity", "lower"], matched)
               if matched else "(the two curves do not overlap in FLOPs)"))
    print(body)
    if not a.no_write:
        out = Path(__file__).resolve().parent / "results" / "tokens_vs_depth.json"
        out.write_text(json.dumps(rows, indent=1))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for prefix, lab in (("ShortGPT", "ShortGPT (BI depth)"), ("ftp", "FTP router"), ("static", "static router")):
            pts = sorted((r["flops_ratio"], r["perplexity"]) for r in rows if r["method"].startswith(prefix))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
        ax.axhline(ppl_dense, color="0.5", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs ratio (analytic, vs dense)")
        ax.set_ylabel("validation perplexity")
        ax.invert_xaxis()
        ax.legend(fontsize=8)
        fig.tight_layout()
        FIG.mkdir(parents=True, exist_ok=True)
        fig.savefig(FIG / "tokens_vs_depth.png", dpi=110)
        plt.close(fig)
        update_section("tokens_vs_depth", body + "\n\n![FLOPs-matched](docs/figures/tokens_vs_depth.png)\n",
                       "Token routing (FTP) vs depth pruning (ShortGPT) on zoo:llama-12l at equal FLOPs")


if __name__ == "__main__":
    main()
