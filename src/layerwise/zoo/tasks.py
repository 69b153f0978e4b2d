"""Training of the task models of the zoo (test beds whose redundancy is known), deterministic and
resumable like the language models: the batch of step s depends only on (seed, s), weights are
initialised from the seed, and the optimizer state is checkpointed.

`filler-lm`: the filler-token key-value task (`data/filler.py`), the test bed of token pruning.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..console import info, progress_bar
from ..data import filler
from ..io.artifacts import Artifact
from ..utils.threads import configure_threads
from .specs import ZooSpec

CHECKPOINT = "checkpoint.pt"
EVAL_SEQUENCES = 1024


def build(spec: ZooSpec):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=filler.VOCAB, bos_token_id=filler.BOS, eos_token_id=filler.BOS, **spec.config)
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(cfg)


def train_filler(spec: ZooSpec, art: Artifact, work_dir, threads, stop_after) -> Path | None:
    from .train import lr_at

    out = art.out
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    nthreads = configure_threads(threads)
    task = spec.extra["task_options"]
    model = build(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    start, curve, elapsed = 0, [], 0.0
    if (work / CHECKPOINT).exists():
        state = torch.load(work / CHECKPOINT, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, curve, elapsed = state["step"], state["curve"], state["elapsed"]
        info(f"resuming {spec.name} from step {start}")
    val = filler.filler_batch(0, EVAL_SEQUENCES, spec.seed, split="validation", **task)
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{spec.name}: {nparams / 1e6:.2f}M parameters, {spec.steps} steps of {spec.batch_size} sequences")
    t0 = time.perf_counter() - elapsed
    model.train()
    with progress_bar() as prog:
        bar = prog.add_task(f"train {spec.name}", total=spec.steps, completed=start, info="")
        for step in range(start, spec.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(spec, step)
            b = filler.filler_batch(step, spec.batch_size, spec.seed, **task)
            loss = filler.task_loss(model(input_ids=b.ids, use_cache=False).logits, b)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done = step + 1
            if done % spec.eval_every == 0 or done == spec.steps:
                model.eval()
                acc = filler.answer_accuracy(model, val)
                model.train()
                curve.append({"step": done, "train_loss": float(loss.detach()), "val_accuracy": acc,
                              "elapsed_s": time.perf_counter() - t0})
                prog.update(bar, info=f"loss {float(loss.detach()):.3f} val acc {acc:.3f}")
            if done % spec.checkpoint_every == 0 or done == spec.steps or done == stop_after:
                tmp = work / f"{CHECKPOINT}.tmp"
                torch.save({"step": done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "curve": curve, "elapsed": time.perf_counter() - t0}, tmp)
                os.replace(tmp, work / CHECKPOINT)
            prog.advance(bar)
            if stop_after is not None and done >= stop_after and done < spec.steps:
                return None
    wall = time.perf_counter() - t0
    model.eval()
    test = filler.answer_accuracy(model, filler.filler_batch(0, EVAL_SEQUENCES, spec.seed, split="test", **task))
    card = _card(spec, model, nparams, nthreads, wall, curve, curve[-1]["val_accuracy"], test, task)
    from .card import save_zoo_model

    save_zoo_model(art, model, card, filler.tokenizer())
    info(f"wrote {out}: test accuracy {test:.3f} after {wall / 60:.1f} min")
    return out


def _card(spec, model, nparams, nthreads, wall, curve, val, test, task) -> dict:
    from .train import training_settings

    return {
        "name": spec.name, "description": spec.description, "architecture": type(model).__name__,
        "parameters": nparams,
        "config": {k: v for k, v in model.config.to_dict().items()
                   if k in spec.config or k in ("vocab_size", "head_dim", "hidden_act")},
        "task": {"name": "filler-kv", "definition": "layerwise.data.filler (records among filler tokens, "
                 "then a query section; the value of each queried key is predicted)", **task,
                 "vocabulary": filler.VOCAB, "generated": "from (seed, split, step); no download"},
        "training": {"seed": spec.seed, "steps": spec.steps, "batch_size": spec.batch_size,
                     "seqlen": task["length"], **training_settings(spec, nthreads, wall)},
        "eval": {"metric": "answer accuracy", "sequences": EVAL_SEQUENCES, "validation_accuracy": val,
                 "test_accuracy": test},
        "curve": curve,
    }
