"""`layerwise analyze` of the reference model with every score: time per stage, the table and plots.

    python benchmarks/analysis_speed.py [--model zoo:llama-12l]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIG, md_table, update_section  # noqa: E402

from layerwise.pipeline.analyze import analyze  # noqa: E402
from layerwise.scores.base import SCORES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    scores = "lim,zd,bi,alpha,farms,owl,zeroth_order"
    out = Path(tempfile.mkdtemp()) / "an"
    t0 = time.perf_counter()
    an = analyze(a.model, scores=scores, out=out)
    wall = time.perf_counter() - t0
    name = a.model.replace("zoo:", "")
    FIG.mkdir(parents=True, exist_ok=True)
    figs = []
    for f in ("scores.png", "esd_alpha.png", "esd_farms.png"):
        dst = FIG / f"analysis_{name}_{f}"
        shutil.copy(out / f, dst)
        figs.append(dst.name)
    table = an.block_table()
    cols = list(table[0])
    rows = [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4g}" for c in cols] for r in table]
    body = (f"`layerwise analyze {a.model} --scores {scores}` (32 × 256 calibration tokens; zeroth-order: 32 "
            f"samples, one direction per tensor and batch). Wall time **{wall:.1f} s** in all: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in an.timings.items()) + ".\n\n"
            + "Directions: " + "; ".join(f"{n} {'higher' if SCORES[n].higher_is_important else 'lower'} = more "
                                         "important" for n in an.block_scores) + ".\n\n"
            + md_table(cols, rows) + "\n\n" + "\n".join(f"![{f}](docs/figures/{f})" for f in figs))
    print(body)
    if not a.no_write:
        update_section(f"analysis-{name}", body, f"Layer analysis: {a.model}")


if __name__ == "__main__":
    main()
