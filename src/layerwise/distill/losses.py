"""Distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def align_loss(student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 0.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-token cosine alignment, mean over tokens of ‖ŝ − t̂‖² = 2 − 2cos (PPCL), plus an optional
    normalized MSE term that also constrains the residual-stream norm (cosine alone does not)."""
    s = student.float()
    t = teacher.float().detach()
    sn = s / (s.norm(dim=-1, keepdim=True) + eps)
    tn = t / (t.norm(dim=-1, keepdim=True) + eps)
    loss = (sn - tn).pow(2).sum(-1).mean()
    if mse_weight:
        loss = loss + mse_weight * (s - t).pow(2).mean() / t.pow(2).mean().clamp(min=eps)
    return loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), mean over tokens."""
    T = temperature
    s = F.log_softmax(student_logits.float() / T, -1)
    t = F.log_softmax(teacher_logits.float().detach() / T, -1)
    return (T * T) * (t.exp() * (t - s)).sum(-1).mean()
