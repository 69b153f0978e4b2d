"""Agreement with a reference model: top-1 agreement and KL for LMs, embedding cosine for encoders."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..console import track
from ..errors import DataError


@dataclass
class AgreementResult:
    top1_agreement: float      # share of scored positions where both models' argmax token agree
    kl_divergence: float       # mean over positions of KL(reference || model), nats
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EmbeddingResult:
    cosine_mean: float         # mean over texts of cos(mean-pooled model, mean-pooled reference)
    cosine_min: float
    texts: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def agreement(model, reference, windows: torch.Tensor, batch_size: int = 8) -> AgreementResult:
    if model.config.vocab_size != reference.config.vocab_size:
        raise DataError(f"model and reference vocabularies differ ({model.config.vocab_size} vs "
                        f"{reference.config.vocab_size}); agreement needs the same tokenizer")
    agree, kl_sum, n = 0, 0.0, 0
    batches = range(0, windows.shape[0], batch_size)
    for i in track(batches, "agreement", total=len(batches)):
        ids = windows[i:i + batch_size]
        lp = F.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
        lq = F.log_softmax(reference(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        kl_sum += float((lq.exp() * (lq - lp)).sum(-1).double().sum())
        n += lp.shape[0] * lp.shape[1]
    return AgreementResult(agree / n, kl_sum / n, n)


def mean_pooled(model, batch: dict) -> torch.Tensor:
    out = model(**batch)
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * mask).sum(1) / mask.sum(1).clamp(min=1)


def encoder_batches(tokenizer, texts: list[str], seqlen: int, batch_size: int):
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=seqlen, padding=True,
                        return_tensors="pt")
        enc.pop("token_type_ids", None) if "token_type_ids" not in enc else None
        yield dict(enc)


@torch.no_grad()
def embedding_fidelity(model, reference, tokenizer, texts: list[str], seqlen: int = 128,
                       batch_size: int = 32) -> EmbeddingResult:
    cos = []
    batches = list(encoder_batches(tokenizer, texts, seqlen, batch_size))
    for batch in track(batches, "embedding fidelity"):
        a = F.normalize(mean_pooled(model, batch).float(), dim=-1)
        b = F.normalize(mean_pooled(reference, batch).float(), dim=-1)
        cos.append((a * b).sum(-1))
    c = torch.cat(cos)
    return EmbeddingResult(float(c.mean()), float(c.min()), int(c.numel()))


def texts_for_encoder(docs, max_texts: int = 256, min_chars: int = 40) -> list[str]:
    """Paragraphs (blank-line separated) of the documents, in order: sentence-like encoder inputs."""
    out: list[str] = []
    for d in docs:
        for para in d.text.split("\n\n"):
            para = para.strip()
            if len(para) >= min_chars:
                out.append(para[:2000])
                if len(out) >= max_texts:
                    return out
    if not out:
        raise DataError("no paragraph of at least 40 characters in the data for encoder evaluation")
    return out
