"""Quality of image generators, defined once: prompt consistency, Fréchet distance, sample grids.

A **judge** is a classifier used only to measure (never trained against in these metrics): prompt
consistency is its accuracy on samples against the class they were asked for; the Fréchet distance
compares the Gaussian statistics of its penultimate features on samples and on held-out real images
(FID's formula on a judge trained here, so values compare runs of this project, not published FIDs).
"""
from __future__ import annotations

from pathlib import Path

import torch


def judge_logits(judge, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return judge(pixel_values=x.clamp(-1, 1)).logits.float()


def judge_features(judge, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features (the judge's pooled representation before its classifier)."""
    body = getattr(judge, "resnet", None)
    if body is None:
        raise TypeError(f"{type(judge).__name__} exposes no feature extractor (expected .resnet)")
    with torch.no_grad():
        return body(x.clamp(-1, 1)).float()


def prompt_accuracy(judge, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float((judge_logits(judge, x).argmax(-1) == labels).float().mean())


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½), in float64 (symmetric square roots by eigh)."""
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least two samples on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    sa = _sqrtm_psd(ca)
    cross = _sqrtm_psd(sa @ cb @ sa)
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(ca + cb - 2 * cross))


def generator_metrics(judge, samples: torch.Tensor, labels: torch.Tensor, real: torch.Tensor | None = None) -> dict:
    out = {"prompt_accuracy": prompt_accuracy(judge, samples, labels), "samples": int(samples.shape[0])}
    if real is not None:
        out["frechet_distance"] = frechet_distance(judge_features(judge, samples), judge_features(judge, real))
    return out


def save_grid(x: torch.Tensor, path: Path, nrow: int, title: str | None = None) -> None:
    """Images (N, 1, H, W) in [-1, 1] as one PNG grid, `nrow` per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x.detach().float().clamp(-1, 1)
    n, _, h, w = x.shape
    rows = -(-n // nrow)
    grid = torch.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), -1.0)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = x[i, 0]
    fig, ax = plt.subplots(figsize=(max(3.0, nrow * 0.45 * w / h), max(2.0, rows * 0.45 + (0.3 if title else 0))))
    ax.imshow(grid.numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def denoising_loss_per_timestep(model, reference, images: torch.Tensor, labels: torch.Tensor,
                                sigmas=(0.1, 0.3, 0.5, 0.7, 0.9), seed: int = 0) -> list[dict]:
    """Flow-matching loss ‖v(x_σ) − (ε − x₀)‖² of `model` and of `reference` (the dense model) at
    fixed noise levels on the same noised images: where a compressed generator loses accuracy."""
    from ..models.velocity import velocity

    g = torch.Generator().manual_seed(seed)
    fm, fr = velocity(model), velocity(reference)
    out = []
    for s in sigmas:
        eps = torch.randn(images.shape, generator=g)
        xs = (1 - s) * images + s * eps
        sig = torch.full((images.shape[0],), float(s))
        target = eps - images
        lm = float(((fm(xs, sig, labels) - target) ** 2).mean())
        lr = float(((fr(xs, sig, labels) - target) ** 2).mean())
        out.append({"sigma": float(s), "loss": lm, "reference_loss": lr, "increase": lm - lr})
    return out


@torch.no_grad()
def pair_consistency(judge, x: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Two-digit canvases (`data.pairs`) against their prompts: every named digit found by the judge in
    its cell, every blank cell blank. Rates, and the per-sample flag `found`."""
    from ..data.pairs import BLANK_LEFT, BLANK_MAX, BLANK_RIGHT, LEFT, RIGHT, cells

    left, right = cells(x.clamp(-1, 1))
    pl, pr = judge_logits(judge, left).argmax(-1), judge_logits(judge, right).argmax(-1)
    tl, tr = tokens[:, 0], tokens[:, 1]
    ok_l = torch.where(tl == BLANK_LEFT, left.flatten(1).amax(1) < BLANK_MAX, pl == (tl - LEFT))
    ok_r = torch.where(tr == BLANK_RIGHT, right.flatten(1).amax(1) < BLANK_MAX, pr == (tr - RIGHT))
    both = (tl != BLANK_LEFT) & (tr != BLANK_RIGHT)
    found = ok_l & ok_r
    return {"consistency": float(found.float().mean()),
            "both_digits_rate": float(found[both].float().mean()) if both.any() else float("nan"),
            "samples": int(found.numel()), "found": found}
