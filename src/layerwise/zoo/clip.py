"""Training of the CLIP-style zoo model (`clip-digits`): a stock `CLIPModel` (a ViT image tower and a
causal text tower, each projected into one embedding space) trained contrastively on digit canvases
and captions naming the digit (`data.captions`), used for zero-shot classification with prompt
templates it never saw.

Ten classes in a batch of 64 means most captions have several matching images: the contrastive loss
gives every same-class pair the target mass (a multi-positive InfoNCE, both directions), where
CLIP's one-positive loss would push same-digit captions apart. Deterministic: weights from the seed,
epoch e's shuffle and caption templates from (seed, e).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..console import info, progress_bar
from ..data import captions as cap
from ..data.images import canvases_for
from ..eval.images import zero_shot_score
from ..io.artifacts import Artifact
from ..models.adapters.vision import multi_positive_infonce
from ..utils.threads import configure_threads
from .specs import ZooSpec


def build(spec: ZooSpec):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(spec.seed)
    c = spec.config
    text = dict(vocab_size=len(cap.VOCAB), max_position_embeddings=cap.LENGTH, pad_token_id=cap.PAD,
                bos_token_id=cap.BOS, eos_token_id=cap.EOS, **c["text"])
    return CLIPModel(CLIPConfig(text_config=text, vision_config=c["vision"], projection_dim=c["projection_dim"]))


def image_data(spec: ZooSpec, split: str):
    return canvases_for(split, spec.config["vision"]["image_size"], spec.extra["data"])


def tokenizer():
    """A word-level tokenizer over the caption vocabulary (so the model ships with one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(cap.VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                       special_tokens=[("<bos>", cap.BOS), ("<eos>", cap.EOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<pad>", model_max_length=cap.LENGTH)


def contrastive_loss(model, pixels: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, pixel_values=pixels)
    return multi_positive_infonce(out.logits_per_image, out.logits_per_text, labels)


def evaluate(model, spec: ZooSpec, split: str) -> dict:
    data = image_data(spec, split)
    held_out = zero_shot_score(model, data, cap.class_prompts(cap.ZERO_SHOT_TEMPLATES)).to_dict()
    seen = zero_shot_score(model, data, cap.class_prompts(cap.TRAIN_TEMPLATES)).to_dict()
    return {**held_out, "seen_templates_accuracy": seen["accuracy"]}


def train_clip(spec: ZooSpec, art: Artifact, threads: int | None, epochs: int | None) -> Path:
    from .card import save_zoo_model
    from .train import training_settings

    nthreads = configure_threads(threads)
    model = build(spec)
    train = image_data(spec, "train")
    epochs = epochs or spec.steps
    nparams = sum(p.numel() for p in model.parameters())
    steps = epochs * math.ceil(len(train) / spec.batch_size)
    info(f"{spec.name}: {nparams / 1e6:.3f}M parameters, {epochs} epochs of {len(train)} image-caption pairs, "
         f"{nthreads} threads")
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=spec.lr, betas=spec.betas)
    warm = spec.warmup * math.ceil(len(train) / spec.batch_size)
    curve, step, t0 = [], 0, time.perf_counter()
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)
            for x, y in train.batches(spec.batch_size, g):
                lr = spec.lr * min(1.0, (step + 1) / max(1, warm)) * 0.5 * (1 + math.cos(math.pi * step / steps))
                for group in opt.param_groups:
                    group["lr"] = lr
                loss = contrastive_loss(model, x, cap.training_captions(y, g), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
                opt.step()
                step += 1
                prog.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
            if (epoch + 1) % spec.eval_every == 0 or epoch + 1 == epochs:
                v = evaluate(model, spec, "validation")
                curve.append({"epoch": epoch + 1, "train_loss": float(loss.detach()),
                              "val_zero_shot_accuracy": v["accuracy"]})
                info(f"epoch {epoch + 1}: loss {curve[-1]['train_loss']:.4f}, validation zero-shot accuracy "
                     f"{v['accuracy']:.4f}")
                model.train()
    model.eval()
    wall = time.perf_counter() - t0
    val, test = evaluate(model, spec, "validation"), evaluate(model, spec, "test")
    settings = training_settings(spec, nthreads, wall)
    settings.update({"optimizer": f"AdamW betas {tuple(spec.betas)}, weight decay {spec.weight_decay} (matrices only)",
                     "schedule": f"linear warm-up {spec.warmup} epochs, cosine to 0 (per step)"})
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "config": spec.config,
            "data": {"source": "scikit-learn load_digits (1,797 8x8 images)", **spec.extra["data"],
                     "train_images": len(train),
                     "definition": "layerwise.data.images.digit_canvases, captions from layerwise.data.captions"},
            "task": {"name": "zero-shot-digits", "training_templates": cap.TRAIN_TEMPLATES,
                     "zero_shot_templates": cap.ZERO_SHOT_TEMPLATES,
                     "definition": "each image goes to the digit whose zero-shot prompt ensemble (templates never "
                                   "seen in training) is nearest in the joint embedding space"},
            "training": {"seed": spec.seed, "epochs": epochs, "batch_size": spec.batch_size, "steps": steps,
                         "loss": "multi-positive symmetric InfoNCE (same-digit pairs share the target)",
                         **settings},
            "eval": {"validation": val, "test": test}, "curve": curve}
    save_zoo_model(art, model, card, tokenizer())
    info(f"wrote {art.out}: zero-shot test accuracy {test['accuracy']:.4f} (seen templates "
         f"{test['seen_templates_accuracy']:.4f}) after {wall / 60:.1f} min")
    return art.out
