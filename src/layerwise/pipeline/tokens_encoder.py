"""`layerwise tokens` on an image encoder (ViT): tokens leave the sequence after each block's attention,
merged (tome) or dropped (random), by a per-block count `r` (the Plan's token rows).

The count is given (`--r`, constant), replayed from a plan, or the largest constant count whose
share of removed token-blocks stays within `--sparsity`. Accuracy, NLL and agreement with the dense
model on the test canvases, analytic FLOPs (the matching included) and images/s against the dense
model measured side by side; the result reloads with `layerwise.load`.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..console import info
from ..errors import ConfigError
from ..plan import Plan, TokenRow
from ..tokens.flops import encoder_flops
from ..tokens.merging import EncoderReduction, check_schedule, constant_r


def schedule(adapter, selector, sparsity: float, r: int | None, plan: Plan | None) -> list[int]:
    L, n = adapter.num_blocks, adapter.num_tokens()
    if plan is not None:
        rows = {t.site: t for t in plan.tokens}
        if sorted(rows) != list(range(L)) or any("r" not in rows[i].config for i in rows):
            raise ConfigError(f"the plan's token rows do not describe an encoder of {L} blocks (one row per block "
                              "with its count r): a plan for another model?")
        return check_schedule([rows[i].config["r"] for i in range(L)], n, selector)
    if r is not None:
        return check_schedule([r] * L, n, selector)
    k = constant_r(n, L, sparsity, tome=not selector.removes_in_encoder)
    if k == 0 and sparsity > 0:
        raise ConfigError(f"--sparsity {sparsity:g} is below what removing one token per block costs on this "
                          f"{n}-token encoder; raise it or pass --r")
    return [k] * L


def token_sparsity(counts: tuple[list[int], list[int]], n: int) -> float:
    att, mlp = counts
    return 1 - (sum(att) + sum(mlp)) / (2 * len(att) * n)


@torch.no_grad()
def evaluate_reduction(model, reduction: EncoderReduction, images, batch: int = 256) -> dict:
    dl = torch.cat([model(pixel_values=x).logits for x, _ in images.batches(batch)])
    with reduction:
        rl = torch.cat([model(pixel_values=x).logits for x, _ in images.batches(batch)])
    lp, lq = F.log_softmax(dl.float(), -1), F.log_softmax(rl.float(), -1)
    y = images.labels
    n = reduction.adapter.num_tokens()
    att, mlp = reduction.counts()
    flops = encoder_flops(model, att, mlp, heads_metric=not reduction.selector.removes_in_encoder)
    return {"accuracy_dense": float((dl.argmax(-1) == y).float().mean()),
            "accuracy": float((rl.argmax(-1) == y).float().mean()),
            "nll_dense": float(F.nll_loss(lp, y)), "nll": float(F.nll_loss(lq, y)),
            "kl": float((lp.exp() * (lp - lq)).sum(-1).mean()),
            "top1_agreement": float((dl.argmax(-1) == rl.argmax(-1)).float().mean()),
            "token_sparsity": token_sparsity((att, mlp), n),
            "flops_ratio": flops / encoder_flops(model, [n] * len(att))}


def images_per_second(model, reduction: EncoderReduction, pixels: torch.Tensor, repeats: int = 7) -> dict:
    """Dense and reduced images/s on one batch, alternating runs after a warm-up round (medians)."""
    from ..eval.speed import interleaved_times

    t = interleaved_times(lambda: model(pixel_values=pixels), {"dense": None, "reduced": reduction}, repeats)
    out = {f"images_per_s_{k}": pixels.shape[0] / v for k, v in t.items()}
    out["speedup"] = out["images_per_s_reduced"] / out["images_per_s_dense"]
    return out


def encoder_tokens(src, selector, *, sparsity: float, r: int | None, plan: Plan | None, seed: int, art,
                   speed: bool = True):
    from ..data.images import canvases_for
    from .tokens import TokensResult

    t0 = time.perf_counter()
    model = src.loaded.model.eval()
    from ..models.adapters import get_adapter

    adapter = get_adapter(model)
    counts = schedule(adapter, selector, sparsity, r, plan)
    reduction = EncoderReduction(model, selector, counts)
    card = getattr(src.loaded, "card", None) or {}
    images = canvases_for("test", adapter.image_shape()[1], card.get("data"))
    res = TokensResult(model=model, drop=[], selector=selector)
    res.r = counts
    att, mlp = reduction.counts()
    res.drop = [1 - b / a for a, b in zip(att, mlp)]
    res.metrics = evaluate_reduction(model, reduction, images)
    if speed:
        res.metrics.update(images_per_second(model, reduction, images.pixels[:256]))
    res.timings["total_s"] = time.perf_counter() - t0
    info(f"{selector.name} r={counts}: accuracy {res.metrics['accuracy']:.4f} (dense "
         f"{res.metrics['accuracy_dense']:.4f}), FLOPs x{res.metrics['flops_ratio']:.3f}")
    if art is not None:
        res.out = _write(art, res, reduction, src, images.pixels[:4])
    return res


def encoder_plan(res, reduction: EncoderReduction) -> Plan:
    cfg = res.selector.config_dict()
    att, mlp = reduction.counts()
    rows = [TokenRow(i, mlp[i] / att[i], res.selector.name, {**cfg, "r": v}) for i, v in enumerate(res.r)]
    return Plan(tokens=rows, meta={"kind": "tokens", "target": "encoder", "selector": cfg, "r": res.r,
                                   "tokens_attention": att, "tokens_mlp": mlp, "metrics": res.metrics})


def _write(art, res, reduction: EncoderReduction, src, pixels: torch.Tensor) -> Path:
    from ..io import build_manifest, write_json
    from ..tokens.format import save_routed

    tmp = art.begin()
    reload = save_routed(tmp, res.model, None, reduction, {"pixel_values": pixels}, "token-reduced encoder")
    encoder_plan(res, reduction).save(tmp / "plan.json")
    manifest = build_manifest("tokens", {"model": src.spec, "selector": res.selector.config_dict(), "r": res.r},
                              None, res.timings, res.metrics, {"blocks": len(res.r),
                                                              "token_sparsity": res.metrics["token_sparsity"]})
    manifest["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", manifest)
    _report(tmp, res, reduction, src)
    return art.commit()


def _report(tmp: Path, res, reduction: EncoderReduction, src) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    att, mlp = reduction.counts()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = torch.arange(len(att)).float()
    ax.bar(x - 0.2, att, 0.4, label="attention")
    ax.bar(x + 0.2, mlp, 0.4, label="MLP")
    ax.set_xlabel("block")
    ax.set_ylabel("tokens")
    ax.legend(fontsize=8)
    ax.set_title(f"{src.spec}: {res.selector.name}, r = {res.r}", fontsize=9)
    fig.tight_layout()
    fig.savefig(tmp / "report_tokens.png", dpi=110)
    plt.close(fig)
    lines = [f"# Token reduction: {src.spec}", "", f"Selector `{res.selector.name}`, tokens leaving after each "
             f"block's attention: {res.r}; token-block sparsity {res.metrics['token_sparsity']:.3f}.", "",
             "![tokens per block](report_tokens.png)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in res.metrics.items()]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
