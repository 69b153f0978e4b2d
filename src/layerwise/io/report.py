"""Markdown + PNG reports written next to every compressed model."""
from __future__ import annotations

import json
from pathlib import Path

from ..plan import Plan, _row_sparsity


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def plot_plan(plan: Plan, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({_short(r.name) for r in plan.rows}, key=lambda k: [_short(r.name) for r in plan.rows].index(k))
    colors = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
    xs = list(range(len(plan.rows)))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, len(xs) * 0.09 + 3), 6), sharex=True)
    if any(r.bits is not None for r in plan.rows):
        axes[0].bar(xs, [r.bits or 0 for r in plan.rows], color=[colors[_short(r.name)] for r in plan.rows])
        axes[0].set_ylabel("weight bits")
        axes[0].set_ylim(0, 9)
    else:
        axes[0].bar(xs, [_row_sparsity(r) for r in plan.rows], color=[colors[_short(r.name)] for r in plan.rows])
        axes[0].set_ylabel("sparsity")
        axes[0].set_ylim(0, 1)
    errs = [r.recon_error if r.recon_error is not None else float("nan") for r in plan.rows]
    axes[1].bar(xs, errs, color=[colors[_short(r.name)] for r in plan.rows])
    axes[1].set_ylabel("relative reconstruction error")
    if any(e and e > 0 for e in errs):
        axes[1].set_yscale("log")
    blocks = [r.block for r in plan.rows]
    ticks = [i for i in xs if i == 0 or blocks[i] != blocks[i - 1]]
    axes[1].set_xticks(ticks)
    axes[1].set_xticklabels([str(blocks[i]) for i in ticks])
    axes[1].set_xlabel("block")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in kinds]
    axes[0].legend(handles, kinds, ncol=min(7, len(kinds)), fontsize=7, loc="upper right")
    fig.suptitle(title or "per-layer plan")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(directory: Path, plan: Plan, manifest: dict, title: str) -> None:
    directory = Path(directory)
    plot_plan(plan, directory / "report_layers.png", title)
    m = manifest.get("metrics") or {}
    t = manifest.get("timings") or {}
    lines = [f"# {title}", ""]
    if manifest.get("command"):
        lines += ["```", manifest["command"], "```", ""]
    lines += ["| | |", "|---|---|"]
    for k, v in (manifest.get("options") or {}).items():
        lines.append(f"| {k} | {v} |")
    ps = manifest.get("plan") or {}
    for k, v in ps.items():
        lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
    lines.append("")
    if m:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        for k, v in m.items():
            lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    if t:
        lines += ["## Time", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in t.items() if isinstance(v, (int, float))]
        lines.append("")
    lines += ["## Per layer", "", "![per-layer budget and reconstruction error](report_layers.png)", ""]
    if any(r.bits is not None for r in plan.rows):
        lines += ["| layer | shape | quantizer | bits | group | recon error |", "|---|---|---|---|---|---|"]
        for r in plan.rows:
            lines.append(f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.method} | {r.bits} | {r.group_size} | "
                         f"{'-' if r.recon_error is None else f'{r.recon_error:.5f}'} |")
        (directory / "report.md").write_text("\n".join(lines) + "\n")
        return
    lines += ["| layer | shape | method | pattern | sparsity | zeros | recon error |", "|---|---|---|---|---|---|---|"]
    for r in plan.rows:
        lines.append(f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.method} | {r.pattern} | {_row_sparsity(r):.4f} | "
                     f"{r.zeros if r.zeros is not None else '-'} | "
                     f"{'-' if r.recon_error is None else f'{r.recon_error:.5f}'} |")
    (directory / "report.md").write_text("\n".join(lines) + "\n")


def write_json(path: Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=1, default=str) + "\n")
