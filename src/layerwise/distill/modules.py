"""Trainable wrappers whose forward(ids) returns the training loss."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..engine.capture import capture_block_inputs
from ..models.adapters import get_adapter
from .losses import align_loss, kd_loss


def interval_key(s: int, e: int) -> str:
    return f"{s}-{e}"


class IntervalStudents(nn.Module):
    """Contiguous layer distillation (PPCL): one student per interval [s, e].

    The frozen teacher runs its blocks; at the start of each interval a student branches off the
    teacher's input h_s and is scored against the teacher's output of block e. With teacher forcing
    (PPCL) no student output re-enters the stream, so intervals train independently and any subset can
    be assembled afterwards. Without it (sequential training, the baseline PPCL argues against) each
    student sees the stream of the assembled model — earlier students' outputs, detached — so it
    learns to correct its predecessors' errors and only the full set fits together. The teacher stops
    after the last interval's end.

    A student is a copy of one block of its interval (`init`) or, with `students` given, any module
    called like a block (e.g. fitted linear stand-ins, `distill.standin`).
    """

    def __init__(self, teacher: nn.Module, intervals: list, init: str = "middle", mse_weight: float = 0.0,
                 teacher_forcing: bool = True, students: dict | None = None):
        super().__init__()
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.adapter = get_adapter(teacher)
        blocks = self.adapter.block_list()
        # intervals: (s, e) pairs or dicts {"start", "end", "keep"} (the block a student starts from)
        norm = [(int(x["start"]), int(x["end"]), x.get("keep")) if isinstance(x, dict) else (int(x[0]), int(x[1]),
                int(x[2]) if len(x) > 2 else None) for x in intervals]
        self.intervals = [(s, e) for s, e, _ in norm]
        made = {}
        for s, e, keep in norm:
            if students is not None and interval_key(s, e) in students:
                st = students[interval_key(s, e)]
            else:
                src = keep if keep is not None else {"middle": (s + e) // 2, "first": s, "last": e}.get(init, (s + e) // 2)
                st = copy.deepcopy(blocks[src])
                if init == "fresh":
                    for m in st.modules():
                        if hasattr(m, "reset_parameters"):
                            m.reset_parameters()
            for p in st.parameters():
                p.requires_grad_(True)
            made[interval_key(s, e)] = st
        self.students = nn.ModuleDict(made)
        self.mse_weight = mse_weight
        self.teacher_forcing = teacher_forcing

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher never leaves eval mode (no dropout)
        return self

    def training_batches(self, cfg):
        """Batches of a model that brings its own training data (see `distill.driver.train`)."""
        if self.adapter.training_batch(0, 1, cfg.seed) is None:
            return None
        return lambda step: self.adapter.training_batch(step, cfg.global_batch, cfg.seed)

    def forward(self, batch) -> torch.Tensor:
        (cap,) = capture_block_inputs(self.teacher, self.adapter, batch, batch_size=batch.shape[0])
        blocks = self.adapter.block_list()
        starts = {s: interval_key(s, e) for s, e in self.intervals}
        ends = {e: interval_key(s, e) for s, e in self.intervals}
        last = max(e for _, e in self.intervals)
        h = cap.hidden
        chained = h                     # the assembled model's stream (sequential training only)
        z = {}
        loss = torch.zeros((), device=h.device)
        for i in range(last + 1):
            if i in starts:
                k = starts[i]
                src = h if self.teacher_forcing else chained.detach()
                z[k] = self.adapter.call_block(self.students[k], src, cap.args, cap.kwargs)
            with torch.no_grad():
                h = self.adapter.call_block(blocks[i], h, cap.args, cap.kwargs)
                if not self.teacher_forcing and not any(s <= i <= e for s, e in self.intervals):
                    chained = self.adapter.call_block(blocks[i], chained, cap.args, cap.kwargs)
            if i in ends:
                k = ends[i]
                if not self.teacher_forcing:
                    chained = z[k]
                loss = loss + align_loss(z.pop(k), h, self.mse_weight)
        return loss


class LMFinetune(nn.Module):
    """Plain next-token fine-tuning of a whole model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, labels=ids, use_cache=False).loss


class LogitKD(nn.Module):
    """Distil a student from a frozen teacher's logits: α·T²·KL + (1 − α)·CE."""

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = 2.0, alpha: float = 1.0):
        super().__init__()
        self.student = student
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.t, self.alpha = temperature, alpha

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tl = self.teacher(input_ids=ids, use_cache=False).logits
        out = self.student(input_ids=ids, labels=ids if self.alpha < 1 else None, use_cache=False)
        loss = self.alpha * kd_loss(out.logits, tl, self.t)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * out.loss
        return loss
