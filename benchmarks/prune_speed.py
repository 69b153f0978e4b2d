"""Pruning time against one forward pass of the calibration set, side by side in one process.

    python benchmarks/prune_speed.py [--model zoo:llama-12l] [--nsamples 128] [--seqlen 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_options, md_table, update_section  # noqa: E402

import torch  # noqa: E402

from layerwise.data import calibration_samples  # noqa: E402
from layerwise.io.load import load_model  # noqa: E402
from layerwise.pipeline.prune import prune  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402


@torch.no_grad()
def forward_time(model, samples, batch_size=8) -> float:
    t0 = time.perf_counter()
    for i in range(0, samples.shape[0], batch_size):
        model(input_ids=samples[i:i + batch_size], use_cache=False)
    return time.perf_counter() - t0


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    add_model_options(ap)
    a = ap.parse_args()
    lm = load_model(a.model)
    samples = calibration_samples("stdlib", lm.tokenizer, a.nsamples, a.seqlen, 0)
    fwd, runs = [], {"magnitude": [], "wanda": [], "sparsegpt": []}
    for rep in range(a.repeats):  # interleaved so that machine noise hits every method alike
        fwd.append(forward_time(lm.model, samples))
        for method in runs:
            m = load_model(a.model)
            t0 = time.perf_counter()
            r = prune(m, method=method, sparsity=0.5, nsamples=a.nsamples, seqlen=a.seqlen)
            wall = time.perf_counter() - t0
            runs[method].append((wall, r.timings))
            print(f"rep {rep} {method}: {wall:.2f}s  forward {fwd[-1]:.2f}s", flush=True)
    f = statistics.median(fwd)
    rows = [["one forward pass of the calibration set", f"{f:.2f}", "1.00", "", "", "", ""]]
    for method, rs in runs.items():
        med = statistics.median(w for w, _ in rs)
        t = {k: statistics.median(x[1][k] for x in rs) for k in ("capture_s", "forward_s", "stats_s", "solve_s")}
        rows.append([f"prune {method} 50%", f"{med:.2f}", f"{med / f:.2f}", f"{t['capture_s']:.2f}",
                     f"{t['forward_s']:.2f}", f"{t['stats_s']:.2f}", f"{t['solve_s']:.2f}"])
    body = (f"Model {a.model}, {a.nsamples} x {a.seqlen} calibration tokens, in memory, no output written; "
            f"medians of {a.repeats} interleaved repetitions.\n\n"
            + md_table(["run", "seconds", "× forward", "capture", "block forwards", "statistics", "solve"], rows)
            + "\n\n`block forwards` = the statistics pass (hook time excluded) plus the propagation pass of every "
              "block; `statistics` = time inside the hooks (Σx² per input column; the Gram matrix Σxxᵀ over all "
              "tokens for SparseGPT, over the first 2048 tokens for the others, whose plan reports the "
              "reconstruction error from it); `solve` = mask selection and, for SparseGPT, the OBS column "
              "sweep. Wanda runs two block passes (statistics on the dense block, then the pruned block's "
              "output for the next one), so its floor is about 2 × 12 blocks against one forward pass of "
              "12 blocks plus the LM head.")
    print(body)
    if not a.no_write:
        update_section("prune-speed", body, "Pruning time")


if __name__ == "__main__":
    main()
