"""Diffusion test beds: a class-conditional DiT on 8×8 digits (`dit-digits`) and the classifier that
judges its samples (`judge-digits`).

The DiT is the stock `diffusers` `DiTTransformer2DModel` trained with rectified flow matching:
x_σ = (1 − σ)·x₀ + σ·ε, σ ~ U(0, 1), timestep σ·1000, the network regresses ε − x₀; its class
embeddings drop labels 10% of the time during training (diffusers' default), so it also has the
unconditional branch classifier-free guidance needs. Samples are drawn with `layerwise.rl`'s sampler
(SDE with η = 0.3 — the policy RL trains — and the deterministic Euler ODE).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..console import info, progress_bar
from ..data.images import digit_images
from ..eval.generators import generator_metrics, save_grid
from ..io.artifacts import Artifact
from ..utils.threads import configure_threads
from .specs import ZooSpec


def _lr(spec: ZooSpec, step: int, total: int) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, total - spec.warmup)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def augment(x: torch.Tensor, g: torch.Generator, shift: int, noise: float) -> torch.Tensor:
    """Random shifts by up to `shift` pixels (blank fill) and Gaussian noise."""
    n, _, h, w = x.shape
    pad = F.pad(x, (shift, shift, shift, shift), value=-1.0)
    off = torch.randint(0, 2 * shift + 1, (n, 2), generator=g)
    out = torch.stack([pad[i, :, off[i, 0]:off[i, 0] + h, off[i, 1]:off[i, 1] + w] for i in range(n)])
    return out + noise * torch.randn(out.shape, generator=g)


def evaluate_judge(model, split: str) -> dict:
    data = digit_images(split)
    with torch.no_grad():
        logits = model(pixel_values=data.pixels).logits
    return {"accuracy": float((logits.argmax(-1) == data.labels).float().mean()),
            "nll": float(F.cross_entropy(logits, data.labels)), "n": len(data)}


def train_judge(spec: ZooSpec, art: Artifact, threads: int | None, epochs: int | None) -> Path:
    from ..models.resnet import CifarResNetConfig, CifarResNetForImageClassification
    from .card import save_zoo_model
    from .train import training_settings

    nthreads = configure_threads(threads)
    torch.manual_seed(spec.seed)
    model = CifarResNetForImageClassification(CifarResNetConfig(**spec.config))
    train = digit_images("train")
    epochs = epochs or spec.steps
    aug = spec.extra["augment"]
    steps = epochs * math.ceil(len(train) / spec.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    curve, step, t0 = [], 0, time.perf_counter()
    spec_steps = ZooSpec(**{**spec.to_dict(), "warmup": spec.warmup * math.ceil(len(train) / spec.batch_size)})
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
            for x, y in train.batches(spec.batch_size, g):
                for group in opt.param_groups:
                    group["lr"] = _lr(spec_steps, step, steps)
                loss = F.cross_entropy(model(pixel_values=augment(x, g, aug["shift"], aug["noise"])).logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                opt.step()
                step += 1
                prog.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
            if (epoch + 1) % spec.eval_every == 0 or epoch + 1 == epochs:
                model.eval()
                v = evaluate_judge(model, "validation")
                model.train()
                curve.append({"epoch": epoch + 1, "train_loss": float(loss.detach()), "val_accuracy": v["accuracy"]})
    model.eval()
    wall = time.perf_counter() - t0
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()), "config": spec.config,
            "data": {"source": "scikit-learn load_digits, plain 8x8 scaled to [-1, 1] (layerwise.data.images."
                               "digit_images)", "train_images": len(train), "augment": aug},
            "task": {"name": "digit-judge", "definition": "10-way digit classification; used only to measure "
                                                          "generated digits"},
            "training": {"seed": spec.seed, "epochs": epochs, "batch_size": spec.batch_size, "steps": steps,
                         "loss": "cross-entropy on augmented digits", **training_settings(spec, nthreads, wall)},
            "eval": {"validation": evaluate_judge(model, "validation"), "test": evaluate_judge(model, "test")},
            "curve": curve}
    save_zoo_model(art, model, card)
    info(f"wrote {art.out}: test accuracy {card['eval']['test']['accuracy']:.4f} after {wall:.0f} s")
    return art.out


def evaluate_generator(model, judge, spec_eval: dict, eta: float | None = None, seed: int = 12345) -> dict:
    """Prompt accuracy and Fréchet distance (judge features, against the test digits) of SDE samples."""
    from ..rl.sampler import Sampler
    from ..rl.trainer import samples

    classes = torch.arange(10)
    per = spec_eval["per_class"]
    x = samples(model, Sampler(spec_eval["steps"], spec_eval["shift"], spec_eval["eta"] if eta is None else eta),
                classes, per, seed)
    return generator_metrics(judge, x, classes.repeat_interleave(per), digit_images("test").pixels)


def train_dit(spec: ZooSpec, art: Artifact, threads: int | None, steps: int | None) -> Path:
    from diffusers import DiTTransformer2DModel

    from ..io.load import load_model

    nthreads = configure_threads(threads)
    torch.manual_seed(spec.seed)           # diffusers' label dropout draws from the global generator
    model = DiTTransformer2DModel(**spec.config)
    judge = load_model(f"zoo:{spec.extra['judge']}").model.eval()
    data = digit_images("train")
    steps = steps or spec.steps
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{spec.name}: {nparams / 1e6:.2f}M parameters, {steps} steps of {spec.batch_size} digits, {nthreads} threads")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    g = torch.Generator().manual_seed(spec.seed)
    ev = spec.extra["eval"]
    noise = float(spec.extra.get("label_noise", 0.0))
    curve, t0, acc_loss, n_loss = [], time.perf_counter(), 0.0, 0
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr(spec, step, steps)
            x0, y = data.sample(spec.batch_size, g)
            if noise:      # misaligned on purpose: some labels replaced by random classes
                flip = torch.rand(spec.batch_size, generator=g) < noise
                y = torch.where(flip, torch.randint(0, 10, (spec.batch_size,), generator=g), y)
            sigma = torch.rand(spec.batch_size, generator=g)
            eps = torch.randn(x0.shape, generator=g)
            s = sigma[:, None, None, None]
            xs = (1 - s) * x0 + s * eps
            v = model(xs, timestep=sigma * 1000.0, class_labels=y).sample
            loss = F.mse_loss(v, eps - x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            acc_loss, n_loss = acc_loss + float(loss.detach()), n_loss + 1
            prog.update(task, advance=1, info=f"loss {float(loss.detach()):.4f}")
            if (step + 1) % spec.eval_every == 0 or step + 1 == steps:
                model.eval()
                m = evaluate_generator(model, judge, {**ev, "per_class": 20})
                model.train()
                curve.append({"step": step + 1, "train_loss": acc_loss / n_loss, "prompt_accuracy": m["prompt_accuracy"],
                              "frechet_distance": m["frechet_distance"]})
                info(f"step {step + 1}: loss {curve[-1]['train_loss']:.4f}, prompt accuracy "
                     f"{m['prompt_accuracy']:.3f}, FD {m['frechet_distance']:.2f}")
                acc_loss, n_loss = 0.0, 0
    model.eval()
    return _finish_dit(spec, art, model, judge, data, curve, steps, nthreads, time.perf_counter() - t0)


def _finish_dit(spec: ZooSpec, art: Artifact, model, judge, data, curve: list, steps: int, nthreads: int,
                wall: float) -> Path:
    """Final evaluation, card and atomic save of a trained DiT."""
    import diffusers

    from ..rl.sampler import Sampler
    from ..rl.trainer import samples
    from .card import save_zoo_model
    from .train import training_settings

    ev = spec.extra["eval"]
    noise = float(spec.extra.get("label_noise", 0.0))
    nparams = sum(p.numel() for p in model.parameters())
    sde, ode = evaluate_generator(model, judge, ev), evaluate_generator(model, judge, ev, eta=0.0)
    real = digit_images("test")
    from ..eval.generators import frechet_distance, judge_features

    half = len(real) // 2
    floor = frechet_distance(judge_features(judge, real.pixels[:half]), judge_features(judge, real.pixels[half:]))
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "config": spec.config,
            "data": {"source": "scikit-learn load_digits, plain 8x8 scaled to [-1, 1] (layerwise.data.images."
                               "digit_images)", "train_images": len(data)},
            "task": {"name": "flow-matching-images",
                     "definition": "rectified flow x = (1-s) x0 + s eps, s ~ U(0,1), timestep 1000 s, regress "
                                   "v = eps - x0; class labels dropped 10% of the time (diffusers' default)"
                                   + (f"; {noise:.0%} of the labels replaced by random classes" if noise else "")},
            "training": {"seed": spec.seed, "steps": steps, "batch_size": spec.batch_size,
                         "loss": "mean squared velocity error", **training_settings(spec, nthreads, wall),
                         "diffusers": diffusers.__version__},
            "eval": {"judge": f"zoo:{spec.extra['judge']}",
                     "sampler": f"{ev['steps']} steps, shift {ev['shift']}; x0 prediction of the last step",
                     "sde": {"eta": ev["eta"], **sde}, "ode": ode,
                     "frechet_floor": floor, "frechet_reference": f"{len(real)} held-out test digits"},
            "curve": curve}

    def grids(d: Path) -> None:
        classes = torch.arange(10)
        x = samples(model, Sampler(ev["steps"], ev["shift"], ev["eta"]), classes, 10, 777)
        save_grid(x, d / "samples.png", 10, f"{spec.name}: SDE samples, one row per class 0-9")

    save_zoo_model(art, model, card, extra=grids)
    info(f"wrote {art.out}: prompt accuracy {sde['prompt_accuracy']:.3f} (SDE) / {ode['prompt_accuracy']:.3f} (ODE), "
         f"FD {sde['frechet_distance']:.2f} (real-vs-real {floor:.2f}) after {wall / 60:.1f} min")
    return art.out


# --- the text-conditioned UNet on two-digit canvases -------------------------------------------------
def evaluate_pairs(model, judge, ev: dict, eta: float | None = None, seed: int = 12345, per: int | None = None) -> dict:
    """Prompt consistency of SDE samples on the evaluation prompts (`eval.generators.pair_consistency`)."""
    from ..data.pairs import eval_prompts
    from ..eval.generators import pair_consistency
    from ..rl.sampler import Sampler
    from ..rl.trainer import samples

    prompts = eval_prompts()
    per = per or ev["per_prompt"]
    x = samples(model, Sampler(ev["steps"], ev["shift"], ev["eta"] if eta is None else eta), prompts, per, seed)
    m = pair_consistency(judge, x, prompts.repeat_interleave(per, dim=0))
    return {k: v for k, v in m.items() if k != "found"}


def train_unet(spec: ZooSpec, art: Artifact, threads: int | None, steps: int | None) -> Path:
    """Rectified flow matching of a stock `UNet2DConditionModel` on two-digit canvases (data.pairs)."""
    from diffusers import UNet2DConditionModel

    from ..data.pairs import pair_batch
    from ..io.load import load_model
    from ..models.velocity import velocity

    nthreads = configure_threads(threads)
    torch.manual_seed(spec.seed)
    model = UNet2DConditionModel(**spec.config)
    judge = load_model(f"zoo:{spec.extra['judge']}").model.eval()
    steps = steps or spec.steps
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{spec.name}: {nparams / 1e6:.2f}M parameters, {steps} steps of {spec.batch_size} canvases, {nthreads} threads")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    g = torch.Generator().manual_seed(spec.seed)
    ev = spec.extra["eval"]
    v_fn = velocity(model)
    curve, t0, acc_loss, n_loss = [], time.perf_counter(), 0.0, 0
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr(spec, step, steps)
            x0, tokens = pair_batch("train", spec.batch_size, g)
            sigma = torch.rand(spec.batch_size, generator=g)
            eps = torch.randn(x0.shape, generator=g)
            s = sigma[:, None, None, None]
            loss = F.mse_loss(v_fn((1 - s) * x0 + s * eps, sigma, tokens), eps - x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            acc_loss, n_loss = acc_loss + float(loss.detach()), n_loss + 1
            prog.update(task, advance=1, info=f"loss {float(loss.detach()):.4f}")
            if (step + 1) % spec.eval_every == 0 or step + 1 == steps:
                model.eval()
                m = evaluate_pairs(model, judge, ev, per=2)
                model.train()
                curve.append({"step": step + 1, "train_loss": acc_loss / n_loss, "consistency": m["consistency"],
                              "both_digits_rate": m["both_digits_rate"]})
                info(f"step {step + 1}: loss {curve[-1]['train_loss']:.4f}, consistency {m['consistency']:.3f}, "
                     f"both digits {m['both_digits_rate']:.3f}")
                acc_loss, n_loss = 0.0, 0
    model.eval()
    return _finish_unet(spec, art, model, judge, curve, steps, nthreads, time.perf_counter() - t0)


def _finish_unet(spec: ZooSpec, art: Artifact, model, judge, curve: list, steps: int, nthreads: int,
                 wall: float) -> Path:
    """Final evaluation, card and atomic save of a trained two-digit UNet."""
    import diffusers

    from ..rl.sampler import Sampler
    from ..rl.trainer import samples
    from .card import save_zoo_model
    from .train import training_settings

    ev = spec.extra["eval"]
    nparams = sum(p.numel() for p in model.parameters())
    sde, ode = evaluate_pairs(model, judge, ev), evaluate_pairs(model, judge, ev, eta=0.0)
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "config": spec.config,
            "data": {"source": "scikit-learn load_digits: 8x16 canvases of a left and a right 8x8 cell, each blank or "
                               "a digit of the training split (layerwise.data.pairs)",
                     "prompts": "[left, right, FILL, FILL]: 0-9 left digit, 10-19 right digit, 20/21 blank "
                                "left/right, 22 filler; one-hot encoder states of width cross_attention_dim"},
            "task": {"name": "flow-matching-pairs",
                     "definition": "rectified flow x = (1-s) x0 + s eps, s ~ U(0,1), timestep 1000 s, regress v = eps - x0; "
                                   "a third of the canvases left digit only, a third right only, a third both"},
            "training": {"seed": spec.seed, "steps": steps, "batch_size": spec.batch_size,
                         "loss": "mean squared velocity error", **training_settings(spec, nthreads, wall),
                         "diffusers": diffusers.__version__},
            "eval": {"judge": f"zoo:{spec.extra['judge']} on each 8x8 cell",
                     "prompts": "10 left-only, 10 right-only, 20 two-digit prompts",
                     "sampler": f"{ev['steps']} steps, shift {ev['shift']}; x0 prediction of the last step",
                     "sde": {"eta": ev["eta"], **sde}, "ode": ode},
            "curve": curve}

    def grids(d: Path) -> None:
        from ..data.pairs import eval_prompts

        prompts = eval_prompts()[::4]
        x = samples(model, Sampler(ev["steps"], ev["shift"], ev["eta"]), prompts, 6, 777)
        save_grid(x, d / "samples.png", 6, f"{spec.name}: SDE samples, one row per prompt")

    save_zoo_model(art, model, card, extra=grids)
    info(f"wrote {art.out}: consistency {sde['consistency']:.3f}, both digits {sde['both_digits_rate']:.3f} (SDE) "
         f"after {wall / 60:.1f} min")
    return art.out
