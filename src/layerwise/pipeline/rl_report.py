"""What an RL run shows: reward against iterations, forward calls and seconds; samples before/after."""
from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: dict, path: Path, title: str = "", key: str = "reward_mean") -> None:
    """runs: label → one log (list of rows) or several logs (seeds: mean line, min–max band)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    xs = (("iteration", "iteration"), ("forward_calls_total", "rollout forward calls (cumulative)"),
          ("wall_s_total", "wall time (s, cumulative)"))
    for i, (label, logs) in enumerate(runs.items()):
        logs = logs if logs and isinstance(logs[0], list) else [logs]
        y = torch.tensor([[r[key] for r in log] for log in logs], dtype=torch.float64)
        for a, (xk, xl) in zip(ax, xs):
            x = torch.tensor([[r[xk] for r in log] for log in logs], dtype=torch.float64).mean(0)
            a.plot(x, y.mean(0), color=f"C{i}", label=label)
            if y.shape[0] > 1:
                a.fill_between(x, y.min(0).values, y.max(0).values, color=f"C{i}", alpha=0.15)
            a.set_xlabel(xl)
    ax[0].set_ylabel(key.replace("_", " "))
    ax[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sample_set(net, sampler, per_class: int = 64, seed: int = 777) -> tuple[torch.Tensor, torch.Tensor]:
    from ..rl.policy import num_conditions
    from ..rl.trainer import samples

    classes = torch.arange(num_conditions(net))
    with torch.no_grad():
        x = samples(net, sampler, classes, per_class, seed)
    return x, classes.repeat_interleave(per_class)


def plot_samples(sets: dict, path: Path) -> None:
    """2-D points: scatter coloured by prompt; images: one row of samples per prompt."""
    plt = _plt()
    sets = {k: v for k, v in sets.items() if v is not None}
    fig, ax = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), squeeze=False)
    for a, (label, (x, c)) in zip(ax[0], sets.items()):
        if x[0].numel() == 2:
            from ..data import gmm

            x = x.reshape(-1, 2)
            a.scatter(x[:, 0], x[:, 1], c=c, cmap="tab10", s=4, alpha=0.6, vmin=0, vmax=9)
            mu = gmm.means(int(c.max()) + 1)
            a.scatter(mu[:, 0], mu[:, 1], c=torch.arange(len(mu)), cmap="tab10", marker="x", s=80, vmin=0, vmax=9)
            a.set_aspect("equal")
        else:
            img = x.reshape(x.shape[0], *x.shape[-2:])
            classes = c.unique()
            per = min(8, int((c == classes[0]).sum()))
            rows = [torch.cat(list(img[c == k][:per]), dim=1) for k in classes]
            a.imshow(torch.cat(rows, dim=0).clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            a.axis("off")
        a.set_title(f"{label}: samples by prompt", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_rl_report(directory: Path, manifest: dict, result, algorithm) -> None:
    b, a = result.before, result.after
    last = result.log[-1] if result.log else {}
    lines = [f"# RL alignment: {algorithm.name}", ""]
    if manifest.get("command"):
        lines += ["```", manifest["command"], "```", ""]
    lines += ["| | before | after |", "|---|---|---|"]
    for k in b:
        if k == "samples":
            continue
        lines.append(f"| {k} | {b[k]:.4f} | {a.get(k, float('nan')):.4f} |")
    lines += [f"| evaluation samples | {b.get('samples')} | {a.get('samples')} |", "",
              "| training | |", "|---|---|",
              f"| iterations | {last.get('iteration', 0)} |",
              f"| rollout forward calls | {last.get('forward_calls_total', 0):,} |",
              f"| transitions trained (forward + backward) | {last.get('transitions_total', 0):,} |",
              f"| wall time (rollouts + updates) | {last.get('wall_s_total', 0.0):.1f} s |",
              f"| algorithm | `{algorithm.config_dict()}` |",
              f"| reload | {manifest.get('reload', '-')} |", "",
              "![reward curves](rl_curves.png)", "", "![samples before and after](rl_samples.png)", ""]
    (Path(directory) / "report.md").write_text("\n".join(lines))
