"""Heavy-tailed α per linear: layerwise against weightwatcher, same model, side by side in one run.

weightwatcher (`pip install weightwatcher==0.7.7`, not a dependency of layerwise) is the reference
implementation of the ESD power-law fit that AlphaPruning and FARMS build on. This compares, for every
linear of every block, its α with ours (plain ESD, KS-searched xmin: the same estimator) and the time
each takes.

    python benchmarks/peer_weightwatcher.py [--model zoo:llama-12l] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, md_table, spearman, update_section  # noqa: E402

from layerwise.io.load import load_model  # noqa: E402
from layerwise.models.adapters import get_adapter  # noqa: E402
from layerwise.scores.esd import alpha  # noqa: E402
from layerwise.utils.hf import quiet  # noqa: E402


def large_matrices(ww, repeats: int, seed: int = 0) -> dict:
    """Gaussian noise plus a power-law low-rank part, the shape of a trained layer's spectrum."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = [(2048, 2048), (4096, 1024), (1024, 4096), (2048, 512)]
    net = torch.nn.Sequential(*[torch.nn.Linear(i, o, bias=False) for o, i in shapes])
    with torch.no_grad():
        for lin, (o, i) in zip(net, shapes):
            r = min(o, i) // 8
            U = torch.linalg.qr(torch.randn(o, r, generator=g))[0]
            V = torch.linalg.qr(torch.randn(i, r, generator=g))[0]
            s = torch.arange(1, r + 1, dtype=torch.float32) ** -0.7 * 8
            lin.weight.copy_(torch.randn(o, i, generator=g) / i ** 0.5 + U @ torch.diag(s) @ V.T)
    t_ours, t_ww = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = [alpha(lin.weight.detach(), xmin="search").alpha for lin in net]
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        df = ww.WeightWatcher(model=net).analyze()
        t_ww.append(time.perf_counter() - t0)
    return {"desc": ", ".join(f"{o}×{i}" for o, i in shapes), "t_ours": t_ours, "t_ww": t_ww,
            "a_ours": ours, "a_ww": [float(x) for x in df["alpha"]]}


def main() -> None:
    quiet()
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    try:
        import weightwatcher as ww
    except ImportError:
        sys.exit("error: this benchmark needs weightwatcher: pip install weightwatcher==0.7.7")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    model = load_model(a.model).model
    linears = get_adapter(model).all_linears()
    names = [r.name for r in linears]
    t_ours, t_ww = [], []
    for _ in range(a.repeats):   # interleaved
        t0 = time.perf_counter()
        ours = {r.name: alpha(r.module.weight.detach(), xmin="search") for r in linears}
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        df = ww.WeightWatcher(model=model).analyze()
        t_ww.append(time.perf_counter() - t0)
    theirs = {row.longname: (float(row.alpha), float(row.xmin)) for row in df.itertuples()}
    missing = [n for n in names if n not in theirs]
    if missing:
        sys.exit(f"error: weightwatcher did not report {len(missing)} linears (e.g. {missing[0]})")
    a_ours = np.array([ours[n].alpha for n in names])
    a_ww = np.array([theirs[n][0] for n in names])
    x_ours = np.array([ours[n].xmin for n in names])
    x_ww = np.array([theirs[n][1] for n in names])
    rel = np.abs(a_ours - a_ww) / a_ww
    # xmin is scale-dependent (weightwatcher divides the eigenvalues by N); compare it up to that scale
    scale = np.median(x_ww / x_ours)
    same_tail = np.isclose(x_ours * scale, x_ww, rtol=1e-3)
    per_kind: dict[str, list] = {}
    for n, r in zip(names, rel):
        per_kind.setdefault(n.rsplit(".", 1)[-1], []).append(r)
    rows = [[k, len(v), f"{100 * statistics.median(v):.2f}%", f"{100 * max(v):.2f}%"] for k, v in per_kind.items()]
    blocks = sorted({r.block for r in linears})
    mean_blk = [[b, f"{np.mean([ours[r.name].alpha for r in linears if r.block == b]):.3f}",
                 f"{np.mean([theirs[r.name][0] for r in linears if r.block == b]):.3f}"] for b in blocks]
    large = large_matrices(ww, a.repeats)
    name = a.model.replace("zoo:", "")
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"peer_weightwatcher_{name}.json").write_text(json.dumps(
        {"names": names, "alpha_layerwise": a_ours.tolist(), "alpha_weightwatcher": a_ww.tolist(),
         "xmin_layerwise": x_ours.tolist(), "xmin_weightwatcher": x_ww.tolist(),
         "seconds_layerwise": t_ours, "seconds_weightwatcher": t_ww, "large": large}, indent=1))
    to, tw = statistics.median(t_ours), statistics.median(t_ww)
    body = (f"Model `{a.model}`: {len(names)} linears of {len(blocks)} blocks. layerwise: `scores.esd.alpha(W, "
            f"xmin='search')` (eigenvalues of WᵀW, Hill/MLE α, xmin minimising the KS distance over all "
            f"candidates, exact branch-and-bound); weightwatcher {ww.__version__}: `WeightWatcher(model).analyze()` "
            f"defaults. Times are medians of {a.repeats} interleaved runs in one process.\n\n"
            + md_table(["", "layerwise", "weightwatcher"], [
                ["seconds for all linears", f"{to:.3f}", f"{tw:.3f}"],
                ["Spearman ρ of α across linears", f"{spearman(a_ours, a_ww):.4f}", ""],
                ["Pearson r of α", f"{float(np.corrcoef(a_ours, a_ww)[0, 1]):.4f}", ""],
                ["median / max relative α difference", f"{np.median(rel):.1e} / {rel.max():.1e}", ""],
                ["same tail start (xmin up to weightwatcher's 1/N scale)",
                 f"{int(same_tail.sum())} of {len(names)}", ""]])
            + "\n\nRelative α difference by linear type:\n\n"
            + md_table(["linear", "count", "median", "max"], rows)
            + "\n\nMean α per block (the quantity AlphaPruning allocates by):\n\n"
            + md_table(["block", "layerwise", "weightwatcher"], mean_blk)
            + f"\n\nlayerwise is {tw / to:.1f}× {'faster' if to < tw else 'slower'} on these matrices "
              "(at most 384 × 128).\n\n"
            + f"Larger matrices ({large['desc']}), same comparison:\n\n"
            + md_table(["", "layerwise", "weightwatcher"], [
                ["seconds", f"{statistics.median(large['t_ours']):.2f}", f"{statistics.median(large['t_ww']):.2f}"],
                ["α per matrix", ", ".join(f"{x:.4f}" for x in large["a_ours"]),
                 ", ".join(f"{x:.4f}" for x in large["a_ww"])]]))
    print(body)
    if not a.no_write:
        update_section(f"peer-weightwatcher-{name}", body, f"Peer: ESD α against weightwatcher, {a.model}")


if __name__ == "__main__":
    main()
