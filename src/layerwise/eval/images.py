"""Quality and speed of image classifiers: accuracy and NLL on an image set, agreement with a
reference, images per second."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ClassifierScore:
    nll: float
    accuracy: float
    n: int

    def to_dict(self) -> dict:
        return {"nll": self.nll, "accuracy": self.accuracy, "n": self.n}


def logits_of(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = model(pixels)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def classifier_score(model: nn.Module, data, batch_size: int = 256) -> ClassifierScore:
    was = model.training
    model.eval()
    nll, correct = 0.0, 0
    for x, y in data.batches(batch_size):
        logits = logits_of(model, x).float()
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was)
    return ClassifierScore(nll / len(data), correct / len(data), len(data))


@torch.no_grad()
def top1_agreement(model: nn.Module, reference: nn.Module, data, batch_size: int = 256) -> float:
    same = 0
    for x, _ in data.batches(batch_size):
        same += int((logits_of(model.eval(), x).argmax(-1) == logits_of(reference.eval(), x).argmax(-1)).sum())
    return same / len(data)


@torch.inference_mode()
def images_per_second(model: nn.Module, pixels: torch.Tensor, repeats: int = 7) -> float:
    model.eval()
    model(pixels)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(pixels)
        times.append(time.perf_counter() - t0)
    return pixels.shape[0] / statistics.median(times)


@dataclass
class ZeroShotScore:
    accuracy: float
    nll: float
    n: int
    templates: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "nll": self.nll, "n": self.n, "templates": self.templates}


@torch.no_grad()
def class_embeddings(model: nn.Module, prompts: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """[classes, D]: the normalized mean of each class's normalized prompt embeddings (prompts are
    template-major: row t * classes + c)."""
    t = model.get_text_features(input_ids=prompts)
    t = getattr(t, "pooler_output", t)
    t = F.normalize(t.float(), dim=-1).view(-1, classes, t.shape[-1]).mean(0)
    return F.normalize(t, dim=-1)


@torch.no_grad()
def zero_shot_score(model: nn.Module, data, prompts: torch.Tensor, batch_size: int = 256) -> ZeroShotScore:
    """Zero-shot classification by a dual encoder: each image goes to the class whose prompt ensemble
    is nearest (cosine), logits scaled by the model's learned temperature."""
    was = model.training
    model.eval()
    classes = int(data.labels.max()) + 1
    text = class_embeddings(model, prompts, classes)
    scale = float(model.logit_scale.exp())
    nll, correct = 0.0, 0
    for x, y in data.batches(batch_size):
        v = model.get_image_features(pixel_values=x)
        v = F.normalize(getattr(v, "pooler_output", v).float(), dim=-1)
        logits = scale * v @ text.T
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was)
    return ZeroShotScore(correct / len(data), nll / len(data), len(data), prompts.shape[0] // classes)


@torch.no_grad()
def quadrant_accuracy(model: nn.Module, split: str = "test", n: int = 1024, batch_size: int = 128, canvas: int = 16,
                      noise: float = 0.2, seed: int = 10_000) -> dict:
    """A vision-language model's answer accuracy on quadrant questions (`data.quadrants`): the argmax over
    the ten digit tokens at the answer position."""
    from ..data import quadrants as qd

    was = model.training
    model.eval()
    patch = model.config.vision_config.patch_size
    right, nll, total = 0, 0.0, 0
    for k in range(-(-n // batch_size)):
        b = qd.quadrant_batch(k, batch_size, seed, split, canvas, patch, noise)
        out = model(input_ids=b.ids, pixel_values=b.pixels, use_cache=False)
        lg = out.logits[:, b.answer_pos, qd.DIGIT0:qd.DIGIT0 + 10].float()
        y = b.answer - qd.DIGIT0
        right += int((lg.argmax(-1) == y).sum())
        nll += float(F.cross_entropy(lg, y, reduction="sum"))
        total += len(y)
    model.train(was)
    return {"accuracy": right / total, "nll": nll / total, "questions": total}
