"""Analysis reports: scores per block, eigenvalue histograms with fitted tails, Markdown + HTML."""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from .base import SCORES


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scores(an, path: Path) -> None:
    plt = _plt()
    names = list(an.block_scores)
    if not names:
        return
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    blocks = np.arange(an.num_blocks)
    for ax, name in zip(axes.flat, names):
        spec = SCORES[name]
        ax.bar(blocks, an.block_scores[name], color="C0" if spec.higher_is_important else "C3")
        ax.set_title(f"{name} ({'higher' if spec.higher_is_important else 'lower'} = more important)", fontsize=9)
        ax.set_xlabel("block")
        if spec.level == "linear" and name in an.linear_scores:
            pts = [(x["block"], an.linear_scores[name].get(x["name"], np.nan)) for x in an.linears]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=6, color="k", zorder=3, label="linears")
            ax.legend(fontsize=7)
        vals = np.asarray(an.block_scores[name], dtype=float)
        if np.all(np.isfinite(vals)) and vals.min() > 0 and name in ("alpha", "farms"):
            ax.set_ylim(0.8 * np.nanmin([v for v in vals]), None)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"layer scores: {an.model}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectra(an, kind: str, path: Path) -> None:
    """One panel per linear: histogram of log10 eigenvalues and the fitted power-law tail."""
    fits = an.spectra.get(kind) or {}
    if not fits or not any("eigs" in f for f in fits.values()):
        return
    plt = _plt()
    names = [x["name"] for x in an.linears if x["name"] in fits]
    per_block = max(1, len({n.rsplit(".", 1)[-1] for n in names}))
    cols = per_block
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.45 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        f = fits[name]
        e = np.asarray(f["eigs"])
        e = e[e > 0]
        if e.size == 0:
            ax.axis("off")
            continue
        logs = np.log10(e)
        dens, edges, _ = ax.hist(logs, bins=40, density=True, color="0.6")
        if np.isfinite(f["alpha"]):
            # Pareto tail density in log10 space: p(u) ∝ 10^{u(1-α)} for u ≥ log10 xmin, scaled to the tail mass.
            u = np.linspace(np.log10(f["xmin"]), logs.max(), 50)
            frac = f["n_tail"] / max(1, f["n_eigs"])
            a = f["alpha"]
            dens_tail = frac * (a - 1) * np.log(10) * 10 ** ((u - np.log10(f["xmin"])) * (1 - a))
            ax.plot(u, dens_tail, color="C3", lw=1)
            ax.axvline(np.log10(f["xmin"]), color="C3", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{name.split('.')[-3] if name.count('.') > 2 else ''}.{name.rsplit('.', 1)[-1]} "
                     f"α={f['alpha']:.2f}", fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{'plain ESD' if kind == 'alpha' else 'FARMS pooled ESD'} (log10 eigenvalues) with fitted tails",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.4g}"
    return str(v)


def write_analysis_report(directory: Path, an) -> list[str]:
    directory = Path(directory)
    plot_scores(an, directory / "scores.png")
    figs = ["scores.png"]
    for kind in ("alpha", "farms"):
        if kind in an.spectra:
            plot_spectra(an, kind, directory / f"esd_{kind}.png")
            figs.append(f"esd_{kind}.png")
    table = an.block_table()
    cols = list(table[0]) if table else []
    md = [f"# Layer analysis: {an.model}", "", "| score | direction | meaning |", "|---|---|---|"]
    for name in an.block_scores:
        s = SCORES[name]
        md.append(f"| {name} | {'higher' if s.higher_is_important else 'lower'} = more important | {s.description} |")
    md += ["", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    md += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in table]
    md += ["", "## Time", ""] + [f"- {k}: {v:.2f} s" for k, v in an.timings.items()] + [""]
    md += [f"![{f}]({f})" for f in figs]
    (directory / "report.md").write_text("\n".join(md) + "\n")
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>layerwise analysis</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
         f"<h1>Layer analysis: {html.escape(an.model)}</h1><table><tr>"
         + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for r in table:
        h.append("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>")
    h.append("</table>")
    h += [f"<p><img src='{f}' style='max-width:100%'></p>" for f in figs]
    h.append("</body></html>")
    (directory / "report.html").write_text("\n".join(h))
    return figs
