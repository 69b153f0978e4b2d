"""`layerwise tokens` on a diffusion model (a diffusers DiT or text-conditioned UNet): a share `ratio` of
the top-resolution self-attention tokens is pruned (SimPrune, random drop) or merged (ToMe-SD) around
every `attn1` there, at every sampling step.

Measured against the same model unpruned: the relative error of its noise (velocity) prediction at
five noise levels on held-out data, the consistency of samples with their prompts (judge accuracy
for class-conditional DiTs; both cells right for two-digit canvases), and sampling speed side by side.
The result is the stock checkpoint plus `token_routing.json` (kind `spatial`); `layerwise.load`
returns it with the pruning installed, so `layerwise sample` draws from the pruned model.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..console import info
from ..errors import ConfigError
from ..plan import Plan, TokenRow
from ..tokens.diffusion import SpatialTokenPruning

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


def is_diffusion(model) -> bool:
    return any(c.__module__.startswith("diffusers.") for c in type(model).__mro__)


def is_pairs_model(model) -> bool:
    """A text-conditioned UNet on two-digit canvases (prompts are token sequences, data.pairs)."""
    import inspect

    return getattr(model.config, "cross_attention_dim", None) is not None and \
        "encoder_hidden_states" in inspect.signature(model.forward).parameters


def heldout(model, n: int, seed: int = 0):
    """(x0, condition) of held-out data the model was trained on."""
    g = torch.Generator().manual_seed(seed)
    if is_pairs_model(model):
        from ..data.pairs import pair_batch

        return pair_batch("validation", n, g)
    from ..data.images import digit_images

    data = digit_images("validation")
    idx = torch.randint(0, len(data), (n,), generator=g)
    return data.pixels[idx], data.labels[idx]


@torch.no_grad()
def prediction_error(model, pruning: SpatialTokenPruning, x0, cond, sigmas=SIGMAS, seed: int = 0) -> list[dict]:
    """Relative error ‖v_pruned − v_dense‖² / ‖v_dense‖² of the velocity at fixed noise levels."""
    from ..models.velocity import velocity

    fn = velocity(model)
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in sigmas:
        eps = torch.randn(x0.shape, generator=g)
        xs = (1 - s) * x0 + s * eps
        sig = torch.full((x0.shape[0],), float(s))
        dense = fn(xs, sig, cond)
        with pruning:
            pruned = fn(xs, sig, cond)
        out.append({"sigma": s, "relative_error": float((pruned - dense).pow(2).sum() / dense.pow(2).sum())})
    return out


@torch.no_grad()
def consistency(model, judge, per: int = 4, steps: int = 20, seed: int = 12345) -> float:
    from ..rl.sampler import Sampler
    from ..rl.trainer import samples

    if is_pairs_model(model):
        from ..data.pairs import eval_prompts
        from ..eval.generators import pair_consistency

        prompts = eval_prompts()
        x = samples(model, Sampler(steps), prompts, per, seed)
        return pair_consistency(judge, x, prompts.repeat_interleave(per, dim=0))["consistency"]
    from ..eval.generators import prompt_accuracy

    classes = torch.arange(10)
    return prompt_accuracy(judge, samples(model, Sampler(steps), classes, per, seed), classes.repeat_interleave(per))


def sampling_speed(model, pruning: SpatialTokenPruning, cond, batch: int = 16, steps: int = 4, repeats: int = 5) -> dict:
    """Samples per second, dense and pruned, alternating after a warm-up (medians)."""
    from ..eval.speed import interleaved_times
    from ..rl.sampler import Sampler
    from ..rl.trainer import samples

    c = cond[:1].expand(batch, *cond.shape[1:]) if cond.ndim > 1 else cond[:1].expand(batch)
    t = interleaved_times(lambda: samples(model, Sampler(steps), c, 1, 7), {"dense": None, "pruned": pruning}, repeats)
    return {"samples_per_s_dense": batch / t["dense"], "samples_per_s_pruned": batch / t["pruned"],
            "speedup": t["dense"] / t["pruned"]}


def diffusion_tokens(src, selector, *, ratio: float, seed: int, art, judge: str = "zoo:judge-digits",
                     speed: bool = True, samples_per_prompt: int = 4, speed_repeats: int = 5):
    from ..io.load import load_model
    from .tokens import TokensResult

    t0 = time.perf_counter()
    model = src.loaded.model.eval()
    pruning = SpatialTokenPruning(model, selector, ratio, seed=seed)
    x0, cond = heldout(model, 64)
    res = TokensResult(model=model, drop=[ratio], selector=selector)
    errs = prediction_error(model, pruning, x0, cond)
    res.metrics = {f"relative_error_sigma_{e['sigma']}": e["relative_error"] for e in errs}
    res.metrics["relative_error_mean"] = statistics.mean(e["relative_error"] for e in errs)
    jm = load_model(judge).model.eval()
    res.metrics["consistency_dense"] = consistency(model, jm, samples_per_prompt)
    with pruning:
        res.metrics["consistency"] = consistency(model, jm, samples_per_prompt)
        res.metrics["computed_share"] = pruning.computed_share()
    if speed:
        res.metrics.update(sampling_speed(model, pruning, cond, repeats=speed_repeats))
    res.timings["total_s"] = time.perf_counter() - t0
    res.routing = pruning
    info(f"{selector.name} ratio {ratio}: consistency {res.metrics['consistency']:.3f} (dense "
         f"{res.metrics['consistency_dense']:.3f}), mean relative error {res.metrics['relative_error_mean']:.4f}")
    if art is not None:
        res.out = _write(art, res, pruning, src, x0[:2], cond[:2])
    return res


def _write(art, res, pruning, src, x0, cond) -> Path:
    from ..io import build_manifest, write_json
    from ..tokens.format import save_routed

    tmp = art.begin()
    inputs = {"sample" if is_pairs_model(res.model) else "hidden_states": x0, "timestep": torch.full((2,), 500.0)}
    if is_pairs_model(res.model):
        from ..data.pairs import prompt_states

        inputs["encoder_hidden_states"] = prompt_states(cond, res.model.config.cross_attention_dim)
    else:
        inputs["class_labels"] = cond
    reload = save_routed(tmp, res.model, None, pruning, inputs, "token-pruned diffusion model")
    cfg = res.selector.config_dict()
    Plan(tokens=[TokenRow(i, pruning.ratio, res.selector.name, {**cfg, "ratio": pruning.ratio})
                 for i in range(len(pruning.sites))],
         meta={"kind": "tokens", "target": "spatial", "selector": cfg, "ratio": pruning.ratio,
               "max_downsample": pruning.max_downsample, "metrics": res.metrics}).save(tmp / "plan.json")
    manifest = build_manifest("tokens", {"model": src.spec, "selector": cfg, "ratio": pruning.ratio}, pruning.seed,
                              res.timings, res.metrics, {"attention_sites": len(pruning.sites)})
    manifest["checks"] = {"reload": reload}
    write_json(tmp / "manifest.json", manifest)
    from .sample import write_sample_grid

    write_sample_grid(res.model, tmp / "samples_dense.png", f"{src.spec}: unpruned")
    with pruning:
        write_sample_grid(res.model, tmp / "samples.png", f"{res.selector.name}, ratio {pruning.ratio}")
    lines = [f"# Token pruning in self-attention: {src.spec}", "", f"Selector `{res.selector.name}`, ratio "
             f"{pruning.ratio} of the top-resolution tokens around every `attn1` there.", "",
             "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in res.metrics.items()]
    lines += ["", "Samples from the same noises, pruned and unpruned:", "", "![pruned](samples.png)", "",
              "![unpruned](samples_dense.png)"]
    (tmp / "report.md").write_text("\n".join(lines) + "\n")
    return art.commit()

