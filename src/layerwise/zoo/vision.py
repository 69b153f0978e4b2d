"""Training of the zoo's image classifiers (`resnet-digits`, `vit-digits`): scikit-learn digits in
noisy canvases.

Deterministic (weights from the seed, the shuffle of epoch e from (seed, e)); a run takes a few
minutes on two cores, so it is not checkpointed.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..console import info
from ..data.images import canvases_for
from ..distill.classifier import TrainConfig, train_classifier
from ..eval.images import classifier_score
from ..io.artifacts import Artifact
from ..models.resnet import CifarResNetConfig, CifarResNetForImageClassification, resnet_flops
from ..utils.threads import configure_threads
from .specs import ZooSpec


def image_data(spec: ZooSpec, split: str):
    return canvases_for(split, spec.config["image_size"], spec.extra["data"])


def build(spec: ZooSpec):
    torch.manual_seed(spec.seed)
    labels = {"num_labels": 10, "id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)}}
    if spec.architecture == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(ViTConfig(**labels, **spec.config))
    return CifarResNetForImageClassification(CifarResNetConfig(**labels, **spec.config))


def flops_per_image(model) -> int:
    if model.config.model_type == "vit":
        from ..tokens.flops import encoder_flops
        from ..models.adapters import get_adapter

        return encoder_flops(model, [get_adapter(model).num_tokens()] * model.config.num_hidden_layers)
    return resnet_flops(model.config)


def train_config(spec: ZooSpec, epochs: int | None = None) -> TrainConfig:
    return TrainConfig(epochs=epochs or spec.steps, batch_size=spec.batch_size, lr=spec.lr,
                       weight_decay=spec.weight_decay, seed=spec.seed, eval_every=max(1, (epochs or spec.steps) // 10),
                       optimizer=spec.extra.get("optimizer", "sgd"), warmup_epochs=spec.extra.get("warmup_epochs", 0.0))


def train_image_classifier(spec: ZooSpec, art: Artifact, threads: int | None, epochs: int | None) -> Path:
    from .card import save_zoo_model
    from .train import training_settings

    nthreads = configure_threads(threads)
    model = build(spec)
    train, val, test = (image_data(spec, s) for s in ("train", "validation", "test"))
    nparams = sum(p.numel() for p in model.parameters())
    cfg = train_config(spec, epochs)
    info(f"{spec.name}: {nparams / 1e6:.3f}M parameters, {flops_per_image(model) / 1e6:.1f} MFLOPs per image, "
         f"{cfg.epochs} epochs of {len(train)} images, {nthreads} threads")
    t0 = time.perf_counter()
    result = train_classifier(model, train, cfg, validation=val, description=f"train {spec.name}")
    wall = time.perf_counter() - t0
    v, t = classifier_score(model, val), classifier_score(model, test)
    settings = training_settings(spec, nthreads, wall)
    if cfg.optimizer == "adamw":
        settings.update({"optimizer": f"AdamW betas (0.9, 0.999), weight decay {cfg.weight_decay} (matrices only)",
                         "schedule": f"linear warm-up {cfg.warmup_epochs:g} epochs, cosine to 0 (per step)",
                         "grad_clip": None})
    else:
        settings.update({"optimizer": f"SGD Nesterov momentum {cfg.momentum}, weight decay {cfg.weight_decay}",
                         "schedule": "cosine to 0 (per step), no warm-up", "grad_clip": None})
    card = {"name": spec.name, "description": spec.description, "architecture": type(model).__name__,
            "parameters": nparams, "flops_per_image": flops_per_image(model),
            "config": {k: getattr(model.config, k) for k in spec.config},
            "data": {"source": "scikit-learn load_digits (1,797 8x8 images)", **spec.extra["data"],
                     "train_images": len(train), "validation_images": len(val), "test_images": len(test),
                     "definition": "layerwise.data.images.digit_canvases: digit (pixels repeated scale x scale) "
                                   "at a seeded random offset, Gaussian noise, split by digit image"},
            "training": {"seed": spec.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                         "images_seen": result.seen, **settings},
            "eval": {"validation": v.to_dict(), "test": t.to_dict()},
            "curve": result.curve}
    save_zoo_model(art, model, card)
    info(f"wrote {art.out}: test accuracy {t.accuracy:.4f}, NLL {t.nll:.4f} after {wall / 60:.1f} min")
    return art.out
