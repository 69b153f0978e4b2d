"""CoViPAL: a plug-in pruning module (PPM) that scores the vision tokens of a vision-language model from
the hidden states entering decoder block l_p — vision and text together, so the question decides
which patches matter — and keeps the top share; the others are removed for every later block.

PPM: Linear(d → 128) + a type embedding (vision / text) + a learned embedding of each vision token's
patch index, one bidirectional transformer layer over all real tokens (`text=False`: over the vision
tokens only, the query-agnostic ablation), Linear(128 → 1) → one score per token.

Training, the model frozen (spec 6.2):
- stage 1, attention-guided: the label of vision token k is the attention the text tokens after the
  image give it at a deeper guidance block l_g (hooked q/k, rotary applied, only those query rows);
  loss KL(label ‖ softmax(scores over vision tokens)) + β·BCE(sigmoid(score), k in the label's top share).
- stage 2, end-to-end: retention ρ_k = sigmoid((z_k − τ)/T) on the scores standardised per image, τ
  per image by bisection so mean ρ = keep; log ρ_k is added to the attention logits of vision key k in
  every block from l_p on (keys only: at inference a removed token is no longer a key); loss
  KL(p_dense ‖ p_soft) at the last position. T anneals 5× over the stage and the learning rate is a
  third of stage 1's. Measured on zoo:llava-quadrants (block 1, keep 0.25, two draws): stage 1 alone
  0.49 answer accuracy; stage 2 on raw scores lowered recall and did not help; standardised 0.60;
  annealed 0.74.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..console import progress_bar
from ..errors import ConfigError


class PPM(nn.Module):
    def __init__(self, d_model: int, n_vision: int, dim: int = 128, layers: int = 1, heads: int = 4,
                 text: bool = True):
        super().__init__()
        self.text = text
        self.n_vision = n_vision
        self.inp = nn.Linear(d_model, dim)
        self.kind = nn.Embedding(2, dim)
        self.pos = nn.Parameter(torch.zeros(n_vision, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, 1)

    def forward(self, hidden: torch.Tensor, vision: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Scores [B, N] (only the vision positions are meaningful)."""
        if int(vision.sum(1).max()) > self.n_vision:
            raise ConfigError(f"the pruning module was built for {self.n_vision} vision tokens per image; the input "
                              f"has {int(vision.sum(1).max())}")
        x = self.inp(hidden.float()) + self.kind(vision.long())
        idx = (vision.long().cumsum(1) - 1).clamp(0, self.n_vision - 1)
        x = x + self.pos[idx] * vision[..., None]
        pad = ~real if self.text else ~(real & vision)
        return self.out(self.enc(x, src_key_padding_mask=pad)).squeeze(-1)


@dataclass
class Batch:
    inputs: dict                  # forward kwargs of the model (input_ids, pixel_values)
    vision: torch.Tensor          # [B, N] vision tokens
    queries: torch.Tensor         # [B, N] the text tokens after the image (the label's queries)


def make_batch(model, inputs: dict) -> Batch:
    from ..models.adapters import get_adapter

    ids = inputs["input_ids"]
    vision = get_adapter(model).vision_tokens(ids)
    last_vision = (vision.long() * torch.arange(ids.shape[1])).max(dim=1).values
    queries = torch.arange(ids.shape[1])[None, :] > last_vision[:, None]
    return Batch(inputs, vision, queries)


class _Capture:
    """Hooks: the hidden state entering block l_p; q, k and rotary tables of block l_g."""

    def __init__(self, model, site: int, guide: int | None):
        from ..models.adapters import get_adapter

        self.adapter = get_adapter(model)
        blocks = self.adapter.block_list()
        self.data: dict = {}
        self.hooks = [blocks[site].register_forward_pre_hook(self._site, with_kwargs=True)]
        if guide is not None:
            attn = self.adapter.attention(guide)
            self.hooks += [blocks[guide].register_forward_pre_hook(self._guide, with_kwargs=True),
                           attn.q_proj.register_forward_hook(lambda m, a, o: self.data.__setitem__("q", o)),
                           attn.k_proj.register_forward_hook(lambda m, a, o: self.data.__setitem__("k", o))]

    def _site(self, module, args, kwargs):
        self.data["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach()

    def _guide(self, module, args, kwargs):
        self.data["rope"] = kwargs["position_embeddings"]

    def remove(self):
        for h in self.hooks:
            h.remove()


def attention_labels(adapter, data: dict, b: Batch) -> torch.Tensor:
    """[B, N] attention the text queries after the image give each token at the guidance block."""
    from .attention import attention_received

    lay = adapter.attention_layout()
    cos, sin = data["rope"]
    n = b.vision.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()[None]
    allowed = causal & b.queries[:, :, None]
    return attention_received(data["q"], data["k"], cos, sin, adapter.apply_rotary, lay["heads"], lay["kv_heads"],
                              allowed)


def retention(scores: torch.Tensor, vision: torch.Tensor, keep: float, temperature: float) -> torch.Tensor:
    """ρ over the vision tokens (1 elsewhere): sigmoid((S − τ)/T), τ per sample so mean ρ = keep."""
    s = scores.masked_fill(~vision, 0.0)
    lo = s.masked_fill(~vision, float("inf")).min(1).values - 20 * temperature
    hi = s.masked_fill(~vision, float("-inf")).max(1).values + 20 * temperature
    nv = vision.sum(1).float()
    with torch.no_grad():
        for _ in range(40):
            mid = (lo + hi) / 2
            m = (torch.sigmoid((s - mid[:, None]) / temperature) * vision).sum(1) / nv
            lo = torch.where(m > keep, mid, lo)
            hi = torch.where(m > keep, hi, mid)
    rho = torch.sigmoid((s - ((lo + hi) / 2)[:, None]) / temperature)
    return torch.where(vision, rho, torch.ones_like(rho))


def _standardise(scores: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    w = vision.float()
    n = w.sum(1, keepdim=True)
    mean = (scores * w).sum(1, keepdim=True) / n
    std = ((((scores - mean) * w) ** 2).sum(1, keepdim=True) / n).sqrt().clamp_min(1e-6)
    return (scores - mean) / std


class _KeyBias:
    """Adds log ρ to the attention logits of every key in blocks from `site` on (a 4-D additive mask)."""

    def __init__(self, model, site: int, log_rho: torch.Tensor):
        from ..models.adapters import get_adapter

        blocks = get_adapter(model).block_list()
        n = log_rho.shape[1]
        causal = torch.full((n, n), float("-inf")).triu(1)
        self.mask = causal[None, None] + log_rho[:, None, None, :]
        self.hooks = [blocks[i].register_forward_pre_hook(self._hook, with_kwargs=True)
                      for i in range(site, len(blocks))]

    def _hook(self, module, args, kwargs):
        return args, {**kwargs, "attention_mask": self.mask.to(args[0].dtype if args else torch.float32)}

    def remove(self):
        for h in self.hooks:
            h.remove()


def train_ppm(model, ppm: PPM, site: int, keep: float, batch_at, *, guide: int, stage1_steps: int,
              stage2_steps: int, lr: float = 1e-3, beta: float = 0.5, temperature: float = 0.5) -> list[dict]:
    """Stage 1 then stage 2 (spec 6.2); the model's weights never change. Returns the loss curve."""
    from ..models.adapters import get_adapter

    adapter = get_adapter(model)
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        return _train(model, adapter, ppm, site, keep, batch_at, guide, stage1_steps, stage2_steps, lr, beta,
                      temperature)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def _train(model, adapter, ppm, site, keep, batch_at, guide, stage1_steps, stage2_steps, lr, beta, temperature,
           stage2_lr=1 / 3):
    opt = torch.optim.AdamW(ppm.parameters(), lr=lr, weight_decay=0.0)
    total, curve = stage1_steps + stage2_steps, []
    ppm.train()
    with progress_bar() as prog:
        task = prog.add_task("train CoViPAL module", total=total, info="")
        for step in range(total):
            stage = 1 if step < stage1_steps else 2
            for g in opt.param_groups:      # stage 2 fine-tunes stage 1 at a third of its rate
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total)) * (1.0 if stage == 1 else stage2_lr)
            b = make_batch(model, batch_at(step))
            cap = _Capture(model, site, guide if stage == 1 else None)
            try:
                with torch.no_grad():
                    dense = model(**b.inputs, use_cache=False).logits[:, -1].float()
            finally:
                cap.remove()
            real = torch.ones_like(b.vision)
            scores = ppm(cap.data["hidden"], b.vision, real)
            if stage == 1:
                lab = attention_labels(adapter, cap.data, b).masked_fill(~b.vision, 0.0)
                y = lab / lab.sum(1, keepdim=True).clamp_min(1e-12)
                logp = F.log_softmax(scores.masked_fill(~b.vision, float("-inf")), dim=1)
                kl = (y * (y.clamp_min(1e-12).log() - logp)).masked_fill(~b.vision, 0.0).sum(1).mean()
                k = max(1, round(keep * int(b.vision.sum(1)[0])))
                top = torch.zeros_like(b.vision).scatter(1, y.topk(k, dim=1).indices, True)
                bce = F.binary_cross_entropy_with_logits(scores[b.vision], top[b.vision].float())
                loss = kl + beta * bce
            else:
                # scores standardised per image over its vision tokens, so T means the same at every scale
                z = _standardise(scores, b.vision)
                # the temperature anneals 5x over stage 2: soft retention approaches the hard top-k of inference
                t = temperature * 0.2 ** ((step - stage1_steps) / max(1, stage2_steps - 1))
                rho = retention(z, b.vision, keep, t)
                bias = _KeyBias(model, site, rho.clamp_min(1e-6).log())
                try:
                    soft = model(**b.inputs, use_cache=False).logits[:, -1].float()
                finally:
                    bias.remove()
                pd = F.log_softmax(dense, -1)
                loss = (pd.exp() * (pd - F.log_softmax(soft, -1))).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append({"step": step + 1, "stage": stage, "loss": float(loss.detach())})
            prog.update(task, advance=1, info=f"stage {stage} loss {float(loss.detach()):.4f}")
    ppm.eval()
    return curve
