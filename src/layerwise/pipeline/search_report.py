"""What a search run shows: the searched widths against the dense ones, and the search's course."""
from __future__ import annotations

from pathlib import Path


def plot_search(result, dense_config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, meta = result.genotype, result.plan.meta
    removed = {b.block for b in result.plan.blocks if b.action == "remove"}
    units = result.plan.units
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    labels = [f"{u.block}.{u.where}" for u in units]
    kept = [(u.total - len(u.removed)) / u.total for u in units]
    colors = ["0.75" if u.block in removed else f"C{_stage(result.plan, u.block)}" for u in units]
    ax[0].bar(range(len(units)), kept, color=colors)
    ax[0].set_xticks(range(len(units)), labels, rotation=90, fontsize=7)
    ax[0].set_ylim(0, 1.05)
    ax[0].set_ylabel("width kept (share of dense)")
    ax[0].set_title(f"{g.method}: {g.ratio:.1%} of dense FLOPs; grey = block removed by depth", fontsize=9)
    if g.history:
        ep = [h["epoch"] for h in g.history]
        ax[1].plot(ep, [h["flops_ratio"] for h in g.history], label="argmax genotype")
        ax[1].plot(ep, [h["expected_flops_ratio"] for h in g.history], label="expected (softmax)")
        target = meta.get("flops_ratio")
        ax[1].axhspan(_band(result)[0], _band(result)[1], color="C2", alpha=0.15, label="target band")
        ax[1].set_xlabel("search epoch")
        ax[1].set_ylabel("FLOPs / dense FLOPs")
        ax[1].legend(fontsize=7)
        ax[1].set_title(f"search course (final {target:.3f})", fontsize=9)
    else:
        ax[1].axis("off")
        ax[1].text(0.05, 0.5, f"{g.method}: no search course (closed-form shape)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _stage(plan, block: int) -> int:
    for b in plan.blocks:
        if b.block == block:
            digits = "".join(ch for ch in str(b.scores.get("stage", "")) if ch.isdigit())
            return int(digits or 0)
    return 0


def _band(result) -> tuple[float, float]:
    cfg = result.plan.meta
    hi = cfg.get("target", result.genotype.ratio)
    return hi - cfg.get("tolerance", 0.05), hi


def search_markdown(result, source: str) -> str:
    g, m, meta = result.genotype, result.metrics, result.plan.meta
    lines = [f"# search: {source}", "", "| | |", "|---|---|",
             f"| method | {g.method} (space {', '.join(meta.get('space', []))}) |",
             f"| FLOPs | {g.flops / 1e6:.3f} M of {g.full_flops / 1e6:.3f} M ({g.ratio:.1%}) |",
             "| depth | " + ", ".join(f"{d}: {v}" for d, v in g.choices.items() if "." not in d and d != "stem")
             + " |",
             f"| training | {'KD from the dense network' if meta.get('kd') else 'cross-entropy or none'}, "
             + (f"{meta['tokens']:,} tokens" if "tokens" in meta else f"{meta.get('kd_epochs', 0)} epochs")
             + f", {'inherited' if meta.get('inherit') else 'fresh'} weights |"]
    for k, v in m.items():
        if isinstance(v, dict):
            lines.append(f"| {k} (test) | accuracy {v['accuracy']:.4f}, NLL {v['nll']:.4f} |")
        else:
            lines.append(f"| {k} (validation) | {v:.4f} |")
    for k, v in result.timings.items():
        lines.append(f"| {k} | {v:.1f} |")
    lines += ["", "![searched widths and search course](search.png)", "", "Widths:", "",
              "| layer | width |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in g.choices.items() if "." in k or k == "stem"]
    return "\n".join(lines) + "\n"
