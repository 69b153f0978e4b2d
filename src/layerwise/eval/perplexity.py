"""Perplexity, with one definition used everywhere (training curves, cards, `eval`, benchmarks).

Definition (also in docs/evaluation.md):
  * the split's documents are tokenized and joined by the tokenizer's EOS token into one stream;
  * the stream is cut into non-overlapping windows of `seqlen` tokens (default 256); the remainder
    shorter than a window is dropped; `max_windows` keeps only the first windows;
  * each window is one forward pass with no context from earlier windows; every position except the
    first is scored, i.e. `seqlen - 1` next-token predictions per window;
  * perplexity = exp(sum of token negative log-likelihoods / number of scored tokens), accumulated
    in float64.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..console import track
from ..errors import DataError


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float
    tokens: int
    windows: int
    seqlen: int

    def to_dict(self) -> dict:
        return asdict(self)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, use_cache=False)
    return out.logits if hasattr(out, "logits") else out[0]


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 8,
               description: str = "perplexity") -> PerplexityResult:
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise DataError("perplexity needs windows of at least 2 tokens")
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and int(windows.max()) >= vocab:
        raise DataError(f"the tokenizer produces token id {int(windows.max())} but the model's vocabulary "
                        f"has {vocab} entries; use the model's own tokenizer (--tokenizer)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    count = 0
    batches = range(0, windows.shape[0], batch_size)
    for i in track(batches, description, total=len(batches)):
        ids = windows[i:i + batch_size].to(device)
        logits = _logits(model, ids)[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        if not torch.isfinite(nll):
            raise DataError("the model produced non-finite logits (NaN/inf) during perplexity evaluation")
        total += float(nll.double())
        count += ids[:, 1:].numel()
    model.train(was_training)
    mean = total / count
    return PerplexityResult(perplexity=math.exp(mean), nll=mean, tokens=count,
                            windows=int(windows.shape[0]), seqlen=int(windows.shape[1]))
