"""Helpers shared by the benchmarks: tables, machine notes, and BENCHMARKS.md sections.

Each benchmark owns one section of BENCHMARKS.md between `<!-- BEGIN name -->` / `<!-- END name -->`
markers and rewrites only that section, with the command that produced it.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "BENCHMARKS.md"
FIG = ROOT / "docs" / "figures"


def machine_note() -> str:
    import torch

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.machine()} {cpu or platform.processor()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"{dt.date.today().isoformat()}")


def md_table(headers: list[str], rows: list[list]) -> str:
    def fmt(x):
        if isinstance(x, float):
            return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
        return str(x)

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def update_section(name: str, body: str, title: str, commands: list[str] | None = None) -> None:
    """Replace section `name` of BENCHMARKS.md; `commands` are the runs that measured it (default: this one)."""
    text = BENCH.read_text() if BENCH.exists() else "# Benchmarks\n"
    cmd = "\n".join(commands) if commands else command_line()
    block = (f"<!-- BEGIN {name} -->\n## {title}\n\n```\n{cmd}\n```\n\nMachine: {machine_note()}\n\n"
             f"{body.rstrip()}\n<!-- END {name} -->")
    pat = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCH.write_text(text)
    print(f"updated section '{name}' of {BENCH}")


def spearman(a, b) -> float:
    """Rank correlation (no ties in our uses: perplexities and scores are continuous)."""
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def add_model_options(ap, repeats: int | None = 3) -> None:
    """--model, --nsamples, --seqlen (and --repeats), --no-write: shared by the timing benchmarks."""
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--no-write", action="store_true")


def add_speed_options(ap) -> None:
    ap.add_argument("--speed-repeats", type=int, default=9)
    ap.add_argument("--speed-batch", type=int, default=8)


def add_output_options(ap, results: str) -> None:
    """--render-only (rewrite the section from benchmarks/results/RESULTS) and --no-write."""
    ap.add_argument("--render-only", action="store_true",
                    help=f"rewrite the section from benchmarks/results/{results} without measuring")
    ap.add_argument("--no-write", action="store_true")
