"""`layerwise tokens` on a vision-language model (LLaVA-style): vision tokens are removed at decoder block
`--site` K by a selector (FastV: attention of the last query at block K−1; random), keeping the
`--keep-ratio` share of them; text tokens always stay, and removed vision tokens stay out of every
later block (whatever the selector). The schedule is the Plan's token rows.

Measured: answer accuracy against the dense model on the quadrant questions, oracle recall of the
vision tokens that matter (the asked quadrant's patches), FLOPs of the decoder, and prefill time
against the dense model side by side. The result reloads with `layerwise.load`.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..console import info
from ..data.quadrants import DIGIT0
from ..errors import ConfigError
from ..plan import Plan, TokenRow
from ..tokens import TokenRouting


def check_keep_ratio(keep: float) -> float:
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ConfigError(f"--keep-ratio is the share of vision tokens kept, in (0, 1] (got {keep!r})")
    return float(keep)


def vlm_schedule(L: int, site: int, keep: float, selector=None) -> list[float]:
    """Drop `1 − keep` of the vision tokens at decoder block `site`. Block 0 is a site for selectors that
    read hidden states (CoViPAL's module, random): the projected vision tokens and the text embeddings
    are already there. FastV needs the attention of the block before its site."""
    first = 1 if selector is None or getattr(selector, "needs_attention", None) else 0
    if not first <= site < L:
        why = ("the block before it gives the attention" if first else "")
        raise ConfigError(f"--site must be a decoder block from {first} to {L - 1} (got {site})"
                          + (f": {why}" if why else ""))
    drop = [0.0] * L
    drop[site] = 1 - keep
    return drop


@torch.no_grad()
def evaluate_vlm(model, selector, drop: list[float], spec, draws: int = 5, questions: int = 256) -> dict:
    """Answer accuracy (dense and pruned) and oracle recall over `draws` seeded draws of test questions."""
    from ..zoo.vlm import answer_logits, batch

    site = next(i for i, d in enumerate(drop) if d > 0) if any(drop) else None
    acc, dense_acc, recall = [], [], []
    for k in range(draws):
        b = batch(spec, 0, questions, "test", seed=20_000 + k)
        y = b.answer
        dense_acc.append(float((answer_logits(model, b).argmax(-1) + DIGIT0 == y).float().mean()))
        with TokenRouting(model, selector, drop, record=True) as r:
            acc.append(float((answer_logits(model, b).argmax(-1) + DIGIT0 == y).float().mean()))
            kept = r.state.kept.get(site) if site is not None else None
        if kept is not None:
            vis = (b.ids == model.config.image_token_id)
            kept_vis = kept[vis].view(b.ids.shape[0], -1)                # [B, P]
            k_kept = kept_vis.sum(1).float()
            hit = (kept_vis & b.relevant).sum(1).float()
            recall.append(float((hit / torch.minimum(k_kept, b.relevant.sum(1).float())).mean()))
    out = {"accuracy_dense": statistics.mean(dense_acc), "accuracy": statistics.mean(acc),
           "accuracy_std": statistics.pstdev(acc), "draws": draws, "questions": questions}
    if recall:
        out["oracle_recall"] = statistics.mean(recall)
    return out


def prefill_speed(model, selector, drop: list[float], inputs: dict, repeats: int = 5) -> dict:
    from ..eval.speed import interleaved_times

    t = interleaved_times(lambda: model(**inputs, use_cache=False),
                          {"dense": None, "pruned": TokenRouting(model, selector, drop)}, repeats)
    return {"prefill_speedup": t["dense"] / t["pruned"]}


def vlm_tokens(src, selector, *, keep_ratio: float, site: int, plan: Plan | None, seed: int, art, draws: int = 5):
    from ..models.adapters import get_adapter
    from ..zoo.specs import SPECS
    from .tokens import TokensResult

    if selector.name not in ("fastv", "random", "covipal"):
        raise ConfigError(f"vision-token pruning takes fastv, random or covipal; got '{selector.name}'")
    t0 = time.perf_counter()
    model = src.loaded.model.eval()
    adapter = get_adapter(model)
    L = adapter.num_blocks
    card = getattr(src.loaded, "card", None) or {}
    if card.get("task", {}).get("name") != "quadrant-vqa" or card.get("name") not in SPECS:
        raise ConfigError(f"{src.spec}: vision-token pruning is evaluated on the quadrant task of zoo:llava-quadrants "
                          "(a model card with task quadrant-vqa)")
    spec = SPECS[card["name"]]
    if plan is not None:
        rows = {t.site: t for t in plan.tokens}
        if sorted(rows) != list(range(L)):
            raise ConfigError(f"the plan's token rows do not describe a {L}-block decoder: a plan for another model?")
        drop = [1 - rows[i].keep_ratio for i in range(L)]
    else:
        drop = vlm_schedule(L, site, check_keep_ratio(keep_ratio), selector)
    res = TokensResult(model=model, drop=drop, selector=selector)
    if selector.trainable:
        res.curve = train_module(model, selector, drop, spec, seed)
        res.timings["training_s"] = time.perf_counter() - t0
    res.metrics = evaluate_vlm(model, selector, drop, spec, draws)
    res.metrics.update(prefill_speed(model, selector, drop, adapter.example_inputs(batch=8)))
    res.timings["total_s"] = time.perf_counter() - t0
    info(f"{selector.name} at block {site}, keep {keep_ratio:g}: answer accuracy {res.metrics['accuracy']:.4f} "
         f"(dense {res.metrics['accuracy_dense']:.4f})")
    if art is not None:
        res.out = _write(art, res, src, adapter)
    return res


def train_module(model, selector, drop: list[float], spec, seed: int) -> list[dict]:
    """Build and train a trainable selector's module (CoViPAL) on the training questions, model frozen."""
    from ..tokens.covipal import train_ppm
    from ..zoo.vlm import batch

    site = next(i for i, d in enumerate(drop) if d > 0)
    L, c = len(drop), selector.config
    guide = c.guide % L if c.guide < 0 else c.guide
    if not site < guide < L:
        raise ConfigError(f"the guidance block ({c.guide} → {guide}) must be deeper than the pruning block {site} "
                          f"and inside the {L}-block decoder")
    torch.manual_seed(seed)
    selector.build(model)

    def batch_at(step: int) -> dict:
        b = batch(spec, step, c.batch, "train", seed=seed + 1)
        return {"input_ids": b.ids, "pixel_values": b.pixels}

    return train_ppm(model, selector.router, site, 1 - drop[site], batch_at, guide=guide,
                     stage1_steps=c.stage1_steps, stage2_steps=c.stage2_steps, lr=c.lr)


def _write(art, res, src, adapter) -> Path:
    from ..io import build_manifest, write_json
    from ..tokens.format import save_routed

    tmp = art.begin()
    reload = save_routed(tmp, res.model, src.tokenizer, TokenRouting(res.model, res.selector, res.drop),
                         adapter.example_inputs(batch=2), "vision-token-pruned model")
    if res.curve:
        write_json(tmp / "module_curve.json", res.curve)
    cfg = res.selector.config_dict()
    Plan(tokens=[TokenRow(i, 1 - d, res.selector.name, cfg) for i, d in enumerate(res.drop)],
         meta={"kind": "tokens", "target": "vision", "selector": cfg, "metrics": res.metrics}).save(tmp / "plan.json")
    manifest = build_manifest("tokens", {"model": src.spec, "selector": cfg, "schedule": res.drop}, None,
                              res.timings, res.metrics, {"sites": len(res.drop)})
    manifest["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", manifest)
    lines = [f"# Vision-token pruning: {src.spec}", "", f"Selector `{res.selector.name}`, schedule {res.drop}.", "",
             "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in res.metrics.items()]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    return art.commit()
