"""`layerwise eval`: one call measuring quality, fidelity and speed of a model on a corpus."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..utils.checks import count
from ..data.corpora import load_corpus
from ..data.tokens import eval_windows
from ..errors import DataError
from ..models.loader import LoadedModel, is_causal_lm
from .fidelity import AgreementResult, EmbeddingResult, agreement, embedding_fidelity, texts_for_encoder
from .perplexity import PerplexityResult, perplexity
from .speed import SpeedResult, bytes_on_disk, count_parameters, measure_speed, model_bytes


@dataclass
class EvalReport:
    model: str
    data: str
    split: str
    kind: str                              # "causal-lm", "encoder", "image-classifier", "zero-shot" (dual encoder) or "vqa"
    parameters: int
    nonzero_parameters: int
    model_mb: float
    bytes_on_disk: int | None
    perplexity: PerplexityResult | None = None
    agreement: AgreementResult | None = None
    embedding: EmbeddingResult | None = None
    speed: SpeedResult | None = None
    speed_bf16: SpeedResult | None = None      # the same model cast to bfloat16: the baseline users deploy
    reference: str | None = None
    lm_eval: dict | None = None                 # {task: {metric: value}} from lm-evaluation-harness
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        parts = ("perplexity", "agreement", "embedding", "speed", "speed_bf16")
        d = {k: v for k, v in self.__dict__.items() if k not in parts}
        for k in parts:
            v = getattr(self, k)
            d[k] = v.to_dict() if v is not None else None
        return d

    def rows(self) -> list[tuple[str, str]]:
        r = [("model", self.model), ("kind", self.kind), ("data", f"{self.data} / {self.split}"),
             ("parameters", f"{self.parameters:,}")]
        if self.nonzero_parameters != self.parameters:
            r.append(("non-zero parameters", f"{self.nonzero_parameters:,} "
                      f"({1 - self.nonzero_parameters / self.parameters:.1%} zeros)"))
        r.append(("weights in memory", f"{self.model_mb:.1f} MB"))
        if self.bytes_on_disk is not None:
            r.append(("bytes on disk", f"{self.bytes_on_disk:,}"))
        if self.perplexity:
            p = self.perplexity
            r.append(("perplexity", f"{p.perplexity:.3f}  ({p.windows} windows x {p.seqlen}, {p.tokens:,} tokens)"))
        if self.agreement:
            a = self.agreement
            r.append((f"top-1 agreement vs {self.reference}", f"{a.top1_agreement:.4f}"))
            r.append(("KL(reference || model)", f"{a.kl_divergence:.5f} nats/token"))
        if self.embedding:
            e = self.embedding
            r.append((f"embedding cosine vs {self.reference}", f"mean {e.cosine_mean:.5f}, min {e.cosine_min:.5f} "
                      f"({e.texts} texts)"))
        if self.speed:
            s = self.speed
            r.append(("prefill", f"{s.prefill_tokens_per_s:,.0f} tokens/s (batch 1 x {s.prefill_len})"))
            if s.decode_tokens_per_s:
                r.append(("decode", f"{s.decode_tokens_per_s:,.1f} tokens/s ({s.decode_len} greedy steps, KV cache)"))
            r.append(("peak RSS", f"{s.peak_rss_mb:,.0f} MB  ({s.device}, {s.threads} threads)"))
        if self.speed and self.speed_bf16:
            s, b = self.speed, self.speed_bf16
            r.append(("bf16 copy: prefill", f"{b.prefill_tokens_per_s:,.0f} tokens/s "
                      f"({b.prefill_tokens_per_s / s.prefill_tokens_per_s:.2f}x the model as loaded)"))
            if b.decode_tokens_per_s and s.decode_tokens_per_s:
                r.append(("bf16 copy: decode", f"{b.decode_tokens_per_s:,.1f} tokens/s "
                          f"({b.decode_tokens_per_s / s.decode_tokens_per_s:.2f}x)"))
        e = self.extra
        if "accuracy" in e:
            what = {"vqa": "questions", "zero-shot": "images, zero-shot with held-out prompts"}.get(self.kind, "images")
            label = {"vqa": "answer accuracy", "zero-shot": "zero-shot accuracy"}.get(self.kind, "accuracy")
            r.append((label, f"{e['accuracy']:.4f}  ({e['images']} {what})"))
            r.append(("NLL", f"{e['nll']:.4f} nats/{'question' if self.kind == 'vqa' else 'image'}"))
        if "top1_agreement" in e:
            r.append((f"top-1 agreement vs {self.reference}", f"{e['top1_agreement']:.4f}"))
        if "images_per_s" in e:
            r.append(("speed", f"{e['images_per_s']:,.0f} images/s (batch {e['speed_batch']})"))
        for task, metrics in (self.lm_eval or {}).items():
            r.append((f"lm-eval {task}", ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())))
        r.append(("evaluation time", f"{self.seconds:.1f} s"))
        return r


def _is_image_model(model) -> bool:
    from ..models.adapters import get_adapter
    from ..errors import ConfigError

    try:
        return any(f.kind == "pixels" for f in get_adapter(model).inputs)
    except ConfigError:
        return False


def _local_dir(spec):
    """The directory a manifest's model spec names (zoo:NAME or a path), or None."""
    from pathlib import Path

    from ..models.shipped import path as shipped_path

    if not isinstance(spec, str):
        return None
    if spec.startswith("zoo:"):
        try:
            return shipped_path(spec[4:])
        except Exception:  # an unknown name: no recipe to follow
            return None
    p = Path(spec).expanduser()
    return p if p.is_dir() else None


def image_recipe(lm, depth: int = 8, section: str = "data") -> dict | None:
    """The canvases an image model is evaluated on: its card's data section (or another `section`), or,
    for a compressed model, that of the model its manifest says it was made from (followed through
    chains of outputs)."""
    import json
    from pathlib import Path

    if lm.card and lm.card.get(section):
        return lm.card[section]
    path = lm.path
    for _ in range(depth):
        if path is None or not (Path(path) / "manifest.json").is_file():
            return None
        try:
            spec = json.loads((Path(path) / "manifest.json").read_text()).get("options", {}).get("model")
        except (OSError, ValueError):
            return None
        path = _local_dir(spec)
        if path is not None and (path / "card.json").is_file():
            return json.loads((path / "card.json").read_text()).get(section)
    return None


def _evaluate_images(lm, data, split, batch_size, reference, speed, t0) -> EvalReport:
    """Image classifiers: accuracy and NLL on the digit canvases, agreement with a reference, images/s."""
    from ..data.images import SPLITS, canvases_for
    from ..errors import ConfigError
    from .images import classifier_score, images_per_second, top1_agreement

    if data not in ("stdlib", "digits"):
        raise ConfigError(f"image classifiers are evaluated on 'digits' (scikit-learn digit canvases); got --data {data}")
    split = "test" if split == "all" else split
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    net = lm.model.eval()
    c = net.config
    if c.model_type in ("clip", "llava"):
        return _evaluate_multimodal(lm, split, t0)
    images = canvases_for(split, c.image_size, image_recipe(lm))
    ref = _as_loaded(reference) if reference is not None else None
    report = EvalReport(model=lm.source, data="digits", split=split, kind="image-classifier",
                        parameters=count_parameters(net), nonzero_parameters=count_parameters(net, nonzero=True),
                        model_mb=model_bytes(net) / 2**20,
                        bytes_on_disk=bytes_on_disk(net, lm.path) if lm.path else None,
                        reference=ref.source if ref else None)
    s = classifier_score(net, images, max(batch_size, 64))
    report.extra = {"accuracy": s.accuracy, "nll": s.nll, "images": s.n}
    if ref is not None:
        report.extra["top1_agreement"] = top1_agreement(net, ref.model, images)
    if speed:
        report.extra["images_per_s"] = images_per_second(net, images.pixels[:256])
        report.extra["speed_batch"] = min(256, len(images))
    report.seconds = time.perf_counter() - t0
    return report


def _evaluate_multimodal(lm, split, t0) -> EvalReport:
    """A dual encoder: zero-shot accuracy with the held-out prompt templates; a vision-language model:
    answer accuracy on the quadrant questions (the tasks of the zoo's CLIP and LLaVA models)."""
    from ..data import captions as cap
    from ..data.images import canvases_for
    from .images import quadrant_accuracy, zero_shot_score

    net = lm.model
    report = EvalReport(model=lm.source, data="digits", split=split, kind="", parameters=count_parameters(net),
                        nonzero_parameters=count_parameters(net, nonzero=True), model_mb=model_bytes(net) / 2**20,
                        bytes_on_disk=bytes_on_disk(net, lm.path) if lm.path else None)
    if net.config.model_type == "clip":
        images = canvases_for(split, net.config.vision_config.image_size, image_recipe(lm))
        s = zero_shot_score(net, images, cap.class_prompts(cap.ZERO_SHOT_TEMPLATES))
        report.kind = "zero-shot"
        report.extra = {"accuracy": s.accuracy, "nll": s.nll, "images": s.n}
    else:
        task = image_recipe(lm, section="task") or {}
        r = quadrant_accuracy(net, split, canvas=task.get("canvas", net.config.vision_config.image_size),
                              noise=task.get("noise", 0.2))
        report.kind = "vqa"
        report.extra = {"accuracy": r["accuracy"], "nll": r["nll"], "images": r["questions"]}
    report.seconds = time.perf_counter() - t0
    return report


def _as_loaded(model) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        from ..io.load import load_model

        return load_model(model)
    if isinstance(model, torch.nn.Module):
        return LoadedModel(model, None, source=type(model).__name__)
    raise DataError(f"cannot evaluate an object of type {type(model).__name__}")


def evaluate(model, data: str = "stdlib", split: str = "validation", seqlen: int = 256,
             max_windows: int | None = None, batch_size: int = 8, reference=None, tokenizer=None,
             speed: bool = True, max_texts: int = 256, bf16: bool = True, lm_eval: list[str] | None = None,
             lm_eval_items: int = 200) -> EvalReport:
    """Evaluate `model` (a `LoadedModel`, a `zoo:`/path/hub spec, or an `nn.Module` with `tokenizer`)."""
    t0 = time.perf_counter()
    count("--batch-size", batch_size)
    if max_windows is not None:
        count("--max-windows", max_windows)
    lm = _as_loaded(model)
    if _is_image_model(lm.model):
        return _evaluate_images(lm, data, split, batch_size, reference, speed, t0)
    tok = tokenizer or lm.tokenizer
    if tok is None:
        raise DataError(f"model {lm.source} has no tokenizer; pass --tokenizer PATH or zoo:NAME")
    ref = _as_loaded(reference) if reference is not None else None
    net = lm.model
    net.eval()
    causal = is_causal_lm(net)
    corpus = load_corpus(data)
    report = EvalReport(model=lm.source, data=corpus.name, split=split,
                        kind="causal-lm" if causal else "encoder",
                        parameters=count_parameters(net), nonzero_parameters=count_parameters(net, nonzero=True),
                        model_mb=model_bytes(net) / 2**20,
                        bytes_on_disk=bytes_on_disk(net, lm.path) if lm.path else None,
                        reference=ref.source if ref else None)
    max_pos = getattr(net.config, "max_position_embeddings", None) or getattr(net.config, "n_positions", None)
    if max_pos is not None and seqlen > max_pos:
        raise DataError(f"--seqlen {seqlen} exceeds the model's {max_pos} positions")
    with torch.no_grad():
        if causal:
            windows = eval_windows(corpus, tok, seqlen, split, max_windows)
            report.perplexity = perplexity(net, windows, batch_size)
            if ref is not None:
                report.agreement = agreement(net, ref.model, windows, batch_size)
            sample = windows[:1]
            if speed:
                report.speed = measure_speed(net, sample, causal=True)
                if bf16 and next(net.parameters()).dtype == torch.float32:
                    import copy

                    half = copy.deepcopy(net).to(torch.bfloat16).eval()
                    report.speed_bf16 = measure_speed(half, sample, causal=True)
                    del half
        else:
            texts = texts_for_encoder(corpus.split(split), max_texts=max_texts)
            if ref is not None:
                report.embedding = embedding_fidelity(net, ref.model, tok, texts, seqlen=min(seqlen, 128))
            if speed:
                enc = tok(texts[:1] * 1, truncation=True, max_length=min(seqlen, 128), return_tensors="pt")
                report.speed = measure_speed(net, enc["input_ids"], causal=False,
                                             attention_mask=enc.get("attention_mask"))
    if lm_eval:
        if not causal:
            raise DataError("--lm-eval tasks score a causal language model")
        from .lm_eval_tasks import run_lm_eval

        report.lm_eval = run_lm_eval(net, tok, lm_eval, corpus=data, split=split, n=lm_eval_items,
                                     batch_size=batch_size)
    report.seconds = time.perf_counter() - t0
    return report
