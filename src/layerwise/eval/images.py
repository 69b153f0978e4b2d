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
