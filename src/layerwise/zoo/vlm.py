"""Training of the LLaVA-style zoo model (`llava-quadrants`): a stock `LlavaForConditionalGeneration`
(CLIP vision tower, two-layer projector, Llama decoder with GQA) answering which digit sits in the
quadrant a question names (`data.quadrants`).

The answer token is supervised, plus an auxiliary loss that trains the vision side directly: a
linear probe (training only, not saved) reads the digit of every quadrant from the mean of that
quadrant's projected vision tokens. Without it, the decoder sees the average of four digits until its
attention learns where to look, and training stalls at chance (measured: 500 steps at 2.30 nats).
Deterministic: weights from the seed, batch k from (seed, k).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..console import info, progress_bar
from ..data import quadrants as qd
from ..io.artifacts import Artifact
from ..utils.threads import configure_threads
from .specs import ZooSpec


def build(spec: ZooSpec):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(spec.seed)
    c = spec.config
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**c["vision"]),
                      text_config=LlamaConfig(vocab_size=len(qd.VOCAB), pad_token_id=qd.PAD, bos_token_id=qd.BOS,
                                              eos_token_id=qd.EOS, **c["text"]),
                      image_token_id=qd.IMAGE, vision_feature_layer=-1, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", image_seq_length=num_vision_tokens(spec), pad_token_id=qd.PAD)
    return LlavaForConditionalGeneration(cfg)


def num_vision_tokens(spec: ZooSpec) -> int:
    v = spec.config["vision"]
    return (v["image_size"] // v["patch_size"]) ** 2


def tokenizer():
    """A word-level tokenizer over the task's vocabulary (so the model ships with one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(qd.VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<pad>", additional_special_tokens=qd.SPECIALS[3:] + qd.QUADRANTS)


def batch(spec: ZooSpec, step: int, size: int, split: str = "train", seed: int | None = None) -> qd.QuadrantBatch:
    d = spec.extra["data"]
    return qd.quadrant_batch(step, size, spec.seed if seed is None else seed, split, d["size"],
                             spec.config["vision"]["patch_size"], d["noise"])


def answer_logits(model, b: qd.QuadrantBatch) -> torch.Tensor:
    """[B, 10] logits of the ten digits at the answer position."""
    out = model(input_ids=b.ids, pixel_values=b.pixels, use_cache=False)
    return out.logits[:, b.answer_pos, qd.DIGIT0:qd.DIGIT0 + 10]


def accuracy(model, spec: ZooSpec, split: str, n: int = 512, batch_size: int = 128) -> dict:
    from ..eval.images import quadrant_accuracy

    d = spec.extra["data"]
    return quadrant_accuracy(model, split, n, batch_size, d["size"], d["noise"], seed=10_000 + spec.seed)


def _probe_loss(probe, feats: torch.Tensor, quadrant_of: torch.Tensor, b: qd.QuadrantBatch) -> torch.Tensor:
    """Cross-entropy of the digit in every quadrant, read from the mean of its projected vision tokens."""
    digits = b.digits - qd.DIGIT0
    loss = 0.0
    for q in range(4):
        loss = loss + F.cross_entropy(probe(feats[:, quadrant_of == q].mean(1)), digits[:, q])
    return loss / 4


def train_vlm(spec: ZooSpec, art: Artifact, threads: int | None, steps: int | None) -> Path:
    from .card import save_zoo_model
    from .train import training_settings

    nthreads = configure_threads(threads)
    model = build(spec)
    steps = steps or spec.steps
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{spec.name}: {nparams / 1e6:.3f}M parameters, {steps} steps of {spec.batch_size} questions, "
         f"{nthreads} threads")
    probe = torch.nn.Linear(model.config.text_config.hidden_size, 10)
    quadrant_of = qd.patch_quadrants(spec.extra["data"]["size"], spec.config["vision"]["patch_size"])
    feats: list = []
    model.model.multi_modal_projector.register_forward_hook(lambda m, a, out: feats.append(out))
    params = list(model.parameters()) + list(probe.parameters())
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=spec.lr, betas=spec.betas)
    curve, t0 = [], time.perf_counter()
    model.train()
    with progress_bar() as prog:
        task = prog.add_task(f"train {spec.name}", total=steps, info="")
        for step in range(steps):
            lr = spec.lr * min(1.0, (step + 1) / spec.warmup)
            lr *= spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            b = batch(spec, step, spec.batch_size)
            feats.clear()
            loss = F.cross_entropy(answer_logits(model, b), b.answer - qd.DIGIT0)
            loss = loss + spec.extra["aux_weight"] * _probe_loss(probe, feats[0], quadrant_of, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            opt.step()
            if (step + 1) % spec.eval_every == 0 or step + 1 == steps:
                v = accuracy(model, spec, "validation", 256)
                curve.append({"step": step + 1, "train_loss": float(loss.detach()), "val_accuracy": v["accuracy"],
                              "val_nll": v["nll"]})
                info(f"step {step + 1}: loss {curve[-1]['train_loss']:.4f}, validation accuracy {v['accuracy']:.4f}")
                model.train()
            prog.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
    model.eval()
    wall = time.perf_counter() - t0
    val, test = accuracy(model, spec, "validation"), accuracy(model, spec, "test")
    d = spec.extra["data"]
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "config": spec.config,
            "task": {"name": "quadrant-vqa", "definition": "layerwise.data.quadrants.quadrant_batch: four scikit-learn "
                     "digits at seeded offsets in the quadrants of a noisy canvas; the question names a quadrant, "
                     "the answer is its digit", "canvas": d["size"], "noise": d["noise"],
                     "vision_tokens": num_vision_tokens(spec), "sequence": "<bos> <image>xP <quadrant> <ask>",
                     "vocabulary": len(qd.VOCAB), "generated": "every batch a pure function of (split, seed, step); "
                     "digits split by image (train 1000 / validation 300 / test 497 digits)"},
            "training": {"seed": spec.seed, "steps": steps, "batch_size": spec.batch_size,
                         "auxiliary": f"quadrant digit probe on mean projected vision tokens, weight "
                                      f"{spec.extra['aux_weight']} (training only)",
                         **training_settings(spec, nthreads, wall)},
            "eval": {"validation": val, "test": test}, "curve": curve}
    save_zoo_model(art, model, card, tokenizer())
    info(f"wrote {art.out}: test answer accuracy {test['accuracy']:.4f} after {wall / 60:.1f} min")
    return art.out
