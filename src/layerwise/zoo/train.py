"""Deterministic, resumable training of the reference models.

Determinism: the batch of step `s` depends only on (seed, s), weights are initialised from the seed,
and the optimizer state is checkpointed, so an interrupted run resumed from its checkpoint ends with
the same weights as an uninterrupted one (same thread count, same machine type).
"""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch

from ..console import info, progress_bar
from ..data.corpora import load_corpus
from ..data.tokens import eval_windows, token_stream, tokenizer_fingerprint, training_batch
from ..errors import ConfigError
from ..eval.perplexity import perplexity
from ..io.artifacts import Artifact
from ..utils.threads import configure_threads
from .specs import SPECS, ZooSpec
from .tokenizer import train_bpe

CHECKPOINT = "checkpoint.pt"


def get_spec(name: str) -> ZooSpec:
    if name not in SPECS:
        raise ConfigError(f"unknown zoo model '{name}' to train; trainable: {', '.join(SPECS)}")
    return SPECS[name]


def build_model(spec: ZooSpec, vocab_size: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    if spec.architecture != "llama":
        raise ConfigError(f"zoo architecture '{spec.architecture}' is not supported")
    cfg = LlamaConfig(vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id,
                      pad_token_id=eos_id, **spec.config)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg)
    return model


def lr_at(spec: ZooSpec, step: int) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    t = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def batch_at(spec: ZooSpec, stream: torch.Tensor, step: int) -> torch.Tensor:
    return training_batch(stream, step, spec.batch_size, spec.seqlen, spec.seed)


def _optimizer(spec: ZooSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=spec.lr, betas=spec.betas, eps=1e-8)


@torch.no_grad()
def _val_loss(model, windows: torch.Tensor) -> float:
    return perplexity(model, windows, batch_size=16, description="validation").nll


def _save_checkpoint(work: Path, model, opt, step: int, curve: list, elapsed: float) -> None:
    tmp = work / f"{CHECKPOINT}.tmp"
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "curve": curve, "elapsed": elapsed}, tmp)
    os.replace(tmp, work / CHECKPOINT)


def train(name: str, out: str | os.PathLike, work_dir: str | os.PathLike | None = None,
          steps: int | None = None, threads: int | None = None, overwrite: bool = False,
          stop_after: int | None = None) -> Path | None:
    """Train zoo model `name` into `out` (a save_pretrained directory with its card).

    `work_dir` holds the tokenizer and checkpoints; rerunning resumes from the last checkpoint.
    `steps` overrides the spec (for tests); `stop_after` ends the process early at that step,
    as an interruption would (for resume tests); then nothing is written to `out`.
    The output is checked and locked before training starts, so a bad --out fails in a second.
    """
    spec = get_spec(name)
    art = Artifact(out, overwrite=overwrite)
    with art.run():
        if spec.extra.get("task") == "filler-kv":
            from ..utils.hf import quiet
            from .tasks import train_filler

            quiet()
            return train_filler(_spec_for(name, steps), art, work_dir, threads, stop_after)
        if spec.extra.get("task") == "image-classification":
            from .vision import train_image_classifier

            return train_image_classifier(spec, art, threads, steps)
        if spec.extra.get("task") == "zero-shot-digits":
            from .clip import train_clip

            return train_clip(spec, art, threads, steps)
        if spec.extra.get("task") == "digit-judge":
            from .diffusion import train_judge

            return train_judge(spec, art, threads, steps)
        if spec.extra.get("task") == "flow-matching-images":
            from .diffusion import train_dit

            return train_dit(spec, art, threads, steps)
        if spec.extra.get("task") == "flow-matching-pairs":
            from .diffusion import train_unet

            return train_unet(spec, art, threads, steps)
        if spec.extra.get("task") == "flow-matching":
            from .flow import train_flow

            return train_flow(spec, art, threads, steps)
        if spec.extra.get("task") == "quadrant-vqa":
            from .vlm import train_vlm

            return train_vlm(spec, art, threads, steps)
        return _train(name, art, work_dir, steps, threads, stop_after)


def _tokenizer(tok_dir: Path, corpus, spec):
    """The zoo model's BPE tokenizer: trained once on the corpus's train split, then reused."""
    if tok_dir.exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tok_dir)
    info(f"training the {spec.vocab_size}-token BPE tokenizer on {spec.corpus}/train")
    tok = train_bpe(corpus, spec.vocab_size)
    tok.save_pretrained(tok_dir)
    return tok


def training_settings(spec: ZooSpec, nthreads: int, wall: float) -> dict:
    """The optimizer, schedule, machine and stack of a card's training section."""
    import transformers

    return {"optimizer": f"AdamW betas={list(spec.betas)} wd={spec.weight_decay}", "lr": spec.lr,
            "schedule": f"linear warm-up {spec.warmup} steps, cosine to {spec.min_lr_ratio} x lr",
            "grad_clip": spec.grad_clip, "precision": "float32", "threads": nthreads, "wall_time_s": round(wall, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def _card(name, spec, model, tok, corpus, train_stream, nthreads, wall, final, test, curve, nparams) -> dict:
    """The model card: corpus, tokenizer, training settings and machine, final perplexities, curve."""
    return {
        "name": name,
        "description": spec.description,
        "architecture": type(model).__name__,
        "parameters": nparams,
        "config": {k: v for k, v in model.config.to_dict().items()
                   if k in spec.config or k in ("vocab_size", "head_dim", "hidden_act")},
        "corpus": corpus.split_info(),
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": len(tok),
                      "trained_on": f"{spec.corpus} train split", "fingerprint": tokenizer_fingerprint(tok)},
        "training": {"seed": spec.seed, "steps": spec.steps, "batch_size": spec.batch_size,
                     "seqlen": spec.seqlen, "tokens_seen": spec.steps * spec.tokens_per_step,
                     "epochs": spec.steps * spec.tokens_per_step / train_stream.numel(),
                     **training_settings(spec, nthreads, wall)},
        "eval": {"data": spec.corpus, "split": "validation", "seqlen": spec.seqlen,
                 "windows": final.windows, "tokens": final.tokens, "perplexity": final.perplexity,
                 "test_perplexity": test.perplexity,
                 "definition": "non-overlapping windows, seqlen-1 scored tokens each (docs/evaluation.md)"},
        "curve": curve,
    }


def _spec_for(name: str, steps: int | None) -> ZooSpec:
    """The zoo spec, shortened to `steps` (tests) with warm-up, evaluation and checkpoints scaled."""
    spec = get_spec(name)
    if steps is None:
        return spec
    return ZooSpec(**{**spec.to_dict(), "steps": int(steps), "betas": tuple(spec.betas),
                      "warmup": min(spec.warmup, max(1, int(steps) // 10)),
                      "eval_every": min(spec.eval_every, max(1, int(steps) // 4)),
                      "checkpoint_every": min(spec.checkpoint_every, max(1, int(steps) // 4))})


def _resume(ckpt: Path, model, opt, name: str) -> tuple[int, list, float]:
    if not ckpt.exists():
        return 0, [], 0.0
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    info(f"resuming {name} from step {state['step']} ({ckpt})")
    return state["step"], state["curve"], state["elapsed"]


def _train(name: str, art: Artifact, work_dir, steps, threads, stop_after) -> Path | None:
    from ..utils.hf import quiet

    quiet()
    spec = _spec_for(name, steps)
    out = art.out
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    nthreads = configure_threads(threads)

    corpus = load_corpus(spec.corpus)
    tok = _tokenizer(work / "tokenizer", corpus, spec)
    train_stream = token_stream(corpus, tok, "train")
    val_all = eval_windows(corpus, tok, spec.seqlen, "validation")
    val_quick = val_all[: spec.eval_windows]

    model = build_model(spec, len(tok), tok.eos_token_id)
    opt = _optimizer(spec, model)
    start, curve, elapsed = _resume(work / CHECKPOINT, model, opt, name)
    model.train()
    nparams = sum(p.numel() for p in model.parameters())
    info(f"{name}: {nparams / 1e6:.2f}M parameters, {spec.steps} steps of "
         f"{spec.batch_size}x{spec.seqlen} tokens, {train_stream.numel() / 1e6:.2f}M training tokens, "
         f"{nthreads} threads")
    t0 = time.perf_counter() - elapsed
    window_loss, window_n = 0.0, 0
    with progress_bar() as prog:
        task = prog.add_task(f"train {name}", total=spec.steps, completed=start, info="")
        step = start
        try:
            for step in range(start, spec.steps):
                lr = lr_at(spec, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                ids = batch_at(spec, train_stream, step)
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                window_loss += float(loss.detach())
                window_n += 1
                done = step + 1
                if done % spec.eval_every == 0 or done == spec.steps:
                    vl = _val_loss(model, val_quick)
                    model.train()
                    curve.append({"step": done, "tokens": done * spec.tokens_per_step,
                                  "train_loss": window_loss / window_n, "val_loss": vl,
                                  "val_ppl": math.exp(vl), "lr": lr,
                                  "elapsed_s": time.perf_counter() - t0})
                    window_loss, window_n = 0.0, 0
                    prog.update(task, info=f"loss {curve[-1]['train_loss']:.3f} val ppl {math.exp(vl):.2f}")
                if done % spec.checkpoint_every == 0 or done == spec.steps:
                    _save_checkpoint(work, model, opt, done, curve, time.perf_counter() - t0)
                prog.advance(task)
                if stop_after is not None and done >= stop_after and done < spec.steps:
                    _save_checkpoint(work, model, opt, done, curve, time.perf_counter() - t0)
                    return None
        except KeyboardInterrupt:
            info(f"interrupted; the last checkpoint in {work} resumes the run")
            raise
    wall = time.perf_counter() - t0

    model.eval()
    final = perplexity(model, val_all, batch_size=16, description="final validation")
    test = perplexity(model, eval_windows(corpus, tok, spec.seqlen, "test"), batch_size=16,
                      description="final test")
    from .card import save_zoo_model

    card = _card(name, spec, model, tok, corpus, train_stream, nthreads, wall, final, test, curve, nparams)
    save_zoo_model(art, model, card, tok)
    info(f"wrote {out}: validation perplexity {final.perplexity:.3f} after {wall / 60:.1f} min")
    return out
