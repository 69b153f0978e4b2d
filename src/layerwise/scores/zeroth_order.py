"""ECoFLaP's zeroth-order (forward-only) global importance of every weight tensor.

For each tensor P, for each calibration batch: draw a seeded direction z, evaluate the loss at
P + εz and P − εz, accumulate |L₊ − L₋| / 2ε (the magnitude of the directional derivative, an
estimate of ‖∇_P L‖ up to a constant). The tensor is restored by copy, so weights end bit-identical.
The same batches are used for every tensor; directions depend only on (seed, tensor, batch).
The loss: a causal LM's next-token loss; an image classifier's cross-entropy against the dense
model's own predictions (calibration images carry no labels, and this measures how far a tensor's
perturbation moves the model from what it computes); a multi-tower model's own training loss
(`adapter.calibration_loss`) over a whole forward, so ECoFLaP's scores compare blocks across towers.
"""
from __future__ import annotations

import torch

from ..console import track
from ..errors import ConfigError


@torch.no_grad()
def _loss(model, ids: torch.Tensor) -> float:
    out = model(input_ids=ids, labels=ids, use_cache=False)
    return float(out.loss.double())


@torch.no_grad()
def _tail_loss(adapter, start: int, batch, ids: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    """The LM loss recomputed from block `start`'s cached input: a perturbation of a tensor in block
    `start` cannot change anything before it, so blocks 0..start−1 need not run again."""
    h = batch["inputs"][start]
    for blk in adapter.block_list()[start:]:
        h = adapter.call_block(blk, h, batch["args"], batch["kwargs"])
    logits = adapter.logits_from_hidden(h)
    if targets is not None:
        return float(torch.nn.functional.cross_entropy(logits.float(), targets).double())
    model = adapter.model
    # The model's own loss arithmetic: |L₊ − L₋|/2ε amplifies any difference in rounding.
    return float(model.loss_function(logits=logits, labels=ids, vocab_size=model.config.vocab_size).double())


@torch.no_grad()
def _block_inputs(model, adapter, ids: torch.Tensor) -> dict:
    from ..engine.capture import capture_block_inputs

    (b,) = capture_block_inputs(model, adapter, ids, batch_size=ids.shape[0])
    inputs, h = [], b.hidden
    for blk in adapter.block_list():
        inputs.append(h)
        h = adapter.call_block(blk, h, b.args, b.kwargs)
    return {"inputs": inputs, "final": h, "args": b.args, "kwargs": b.kwargs}


def _directional(P: torch.Tensor, seed: int, t: int, b: int, eps: float, loss) -> float:
    """|L(P + εz) − L(P − εz)| / 2ε for the seeded direction z of (tensor t, batch b); P restored by copy."""
    orig = P.detach().clone()
    g = torch.Generator().manual_seed(seed * 1_000_003 + t * 1009 + b)
    z = torch.randn(P.shape, generator=g, dtype=torch.float32).to(P.dtype)
    P.add_(z, alpha=eps)
    lp = loss()
    P.copy_(orig)
    P.sub_(z, alpha=eps)
    lm = loss()
    P.copy_(orig)
    return abs(lp - lm) / (2 * eps)


@torch.no_grad()
def _whole_model_scores(model, adapter, linears, samples, n_samples, batch_size, eps, seed) -> dict[str, float]:
    """Multi-tower models: a tensor of one tower changes what the next tower sees, so every loss is a
    full forward (the model's own training loss: contrastive for a dual encoder, the answer's
    next-token loss for a vision-language model)."""
    batches = [samples[i:i + batch_size] for i in range(0, min(n_samples, samples.shape[0]), batch_size)]
    scores: dict[str, float] = {}
    for t, ref in enumerate(track(linears, "zeroth-order scores")):
        scores[ref.name] = sum(
            _directional(ref.module.weight, seed, t, b, eps,
                         lambda batch=batch: float(adapter.calibration_loss(model, batch).double()))
            for b, batch in enumerate(batches))
    return scores


@torch.no_grad()
def zeroth_order_scores(model, linears, samples: torch.Tensor, n_samples: int = 32, batch_size: int = 8,
                        eps: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """`linears`: LinearRef list. Returns {linear name: score} (higher = more important)."""
    from ..models.loader import is_causal_lm

    from ..models.adapters.towers import engine_adapter

    from ..models.adapters import Adapter

    adapter = engine_adapter(model)
    classifier = any(f.kind == "pixels" for f in adapter.inputs) and adapter.head_path is not None
    own_loss = type(adapter).calibration_loss is not Adapter.calibration_loss
    # several towers, or a model whose loss is not a head on the last block (a generator's denoising
    # loss): every loss is a whole forward with the adapter's calibration loss
    if len(adapter.towers()) > 1 or (own_loss and not is_causal_lm(model) and not classifier):
        return _whole_model_scores(model, adapter, linears, samples, n_samples, batch_size, eps, seed)
    if not is_causal_lm(model) and not classifier:
        raise ConfigError("the zeroth_order score needs a causal LM loss or an image classifier's head; this model "
                          "has neither")
    batches = [samples[i:i + batch_size] for i in range(0, min(n_samples, samples.shape[0]), batch_size)]
    cached = [_block_inputs(model, adapter, ids) for ids in batches] if adapter.head_path else None
    targets = [adapter.logits_from_hidden(c["final"]).argmax(-1) for c in cached] if classifier else None
    scores: dict[str, float] = {}
    for t, ref in enumerate(track(linears, "zeroth-order scores")):
        total = 0.0
        for b, ids in enumerate(batches):
            tgt = targets[b] if targets else None
            loss = (lambda: _tail_loss(adapter, ref.block, cached[b], ids, tgt)) if cached else \
                (lambda: _loss(model, ids))
            total += _directional(ref.module.weight, seed, t, b, eps, loss)
        scores[ref.name] = total
    return scores
