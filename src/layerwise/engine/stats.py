"""Per-linear input statistics accumulated by forward hooks.

Linears that receive the very same input tensor (q/k/v; gate/up) share one accumulator, so the
Gram matrix of an input is computed once however many linears read it. First and second moments
are float64 vectors; the Gram matrix is float32 (what SparseGPT and GPTQ factorize in), filled one
triangle at a time and mirrored when it is read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import LayerwiseError
from ..linalg import (damping_shift, fill_lower_from_upper, inverse_cholesky_, relative_error_from_factor,
                      syrk_)
from ..models.adapters import LinearRef, StopForward


@dataclass
class InputStats:
    columns: int
    gram: bool
    gram_limit: int | None = None           # accumulate H from at most this many tokens
    first_moment: bool = True               # Σx (FLAP's variance); pruning by Σx² alone skips it
    second_moment: bool = True              # Σx² (Wanda, OWL); Hessian methods read H alone and skip it
    factor_in_place: bool = False           # `inverse_factor` may consume H (the engine's accumulators)
    tokens: int = 0
    gram_tokens: int = 0
    sequences: int = 0
    sq: torch.Tensor | None = None          # Σ_t x_tj²           [in]
    s1: torch.Tensor | None = None          # Σ_t x_tj            [in]
    _H: torch.Tensor | None = None          # Σ_t x_t x_tᵀ        [in, in], upper block triangle until read
    _mirrored: bool = True
    _factor: tuple | None = None            # (percdamp, U, damping used, diagonal shift) of `inverse_factor`
    readers: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.second_moment:
            self.sq = torch.zeros(self.columns, dtype=torch.float64)
        if self.first_moment:
            self.s1 = torch.zeros(self.columns, dtype=torch.float64)
        if self.gram:
            self._H = torch.zeros(self.columns, self.columns)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        seqs = x.shape[0] if x.ndim == 3 else 1
        x = x.reshape(-1, x.shape[-1]).float()
        self.tokens += x.shape[0]
        self.sequences += seqs
        # Per-batch sums in float32 (a few thousand tokens) added into float64 accumulators: as
        # precise as it needs to be, and several times faster than float64 reductions on a CPU.
        if self.sq is not None:
            self.sq += x.pow(2).sum(0).double()
        if self.s1 is not None:
            self.s1 += x.sum(0).double()
        if self._H is not None:
            if self.gram_limit is not None:
                x = x[: max(0, self.gram_limit - self.gram_tokens)]
            if x.shape[0]:
                add_gram(self._H, x)
                self._mirrored = self.columns < SYMMETRIC_GRAM_MIN
                self.gram_tokens += x.shape[0]

    @property
    def H(self) -> torch.Tensor | None:
        """Σ x xᵀ over the calibration tokens (float32, both triangles)."""
        if self._H is None and self._factor is not None:
            raise LayerwiseError("the Gram matrix of this input was factored in place; read it before "
                                 "`inverse_factor`")
        if self._H is not None and not self._mirrored:
            fill_lower_from_upper(self._H)
            self._mirrored = True
        return self._H

    @property
    def mean_sq(self) -> torch.Tensor:
        """Mean of x_j² over tokens (Wanda's squared input-feature norm up to a constant)."""
        assert self.sq is not None, "second moments were not collected"
        return self.sq / max(1, self.tokens)

    @property
    def variance(self) -> torch.Tensor:
        """Per-column variance of the input over tokens (FLAP's fluctuation)."""
        assert self.s1 is not None, "first moments were not collected"
        m = self.s1 / max(1, self.tokens)
        return (self.mean_sq - m * m).clamp(min=0)

    @property
    def hessian(self) -> torch.Tensor:
        """H = (2/T) Σ x xᵀ, the Hessian of the layer-wise squared error (SparseGPT / GPTQ): a new
        float32 tensor the caller may overwrite."""
        H = self.H
        assert H is not None, "Gram statistics were not collected"
        return H * (2.0 / max(1, self.gram_tokens))

    def inverse_factor(self, percdamp: float) -> tuple[torch.Tensor, float]:
        """The damped inverse-Hessian factor SparseGPT and GPTQ sweep with (`inverse_cholesky_`), computed
        once per accumulator: q/k/v (gate/up) read the same one. Callers must not modify it.

        With `factor_in_place` (the engine's accumulators, read by one pass and dropped) it is computed
        in the Gram matrix's own memory — H and a factor side by side were the largest pair of tensors
        of a streamed run (2 × 95 MB for the 0.5B shape's down projection, 2 × 321 MB at 1.5B) — and
        reconstruction errors are read from the factor afterwards (`recon_error`). Otherwise H stays
        and the factor is computed in a copy."""
        if self._factor is not None and self._factor[0] == percdamp:
            return self._factor[1], self._factor[2]
        if self._factor is not None and self._H is None:
            raise LayerwiseError(f"the linears reading one input must share one damping (got {percdamp} "
                                 f"after {self._factor[0]})")
        if not self.factor_in_place:
            self._factor = None     # the old factor is freed before the new one is computed
            self._factor = (percdamp, *inverse_cholesky_(self.hessian, percdamp), None)
            return self._factor[1], self._factor[2]
        H = self.H
        assert H is not None, "Gram statistics were not collected"
        H.mul_(2.0 / max(1, self.gram_tokens))
        diag = H.diagonal().clone()
        self._H = None
        U, damp = inverse_cholesky_(H, percdamp)
        self._factor = (percdamp, U, damp, damping_shift(diag, damp))
        return U, damp

    def recon_error(self, W: torch.Tensor, W_new: torch.Tensor, max_rows: int = 128) -> float | None:
        """`relative_recon_error` of this input's Gram matrix, or of its inverse factor once H was
        factored in place; None without Gram statistics."""
        if self._H is not None:
            return relative_recon_error(W, W_new, self.H, max_rows)
        if self._factor is None:
            return None
        U, shift = self._factor[1], self._factor[3]
        W, W_new = _sample_rows(W, W_new, max_rows)
        # U factors the scaled Hessian (2/T)·H (+ the shift): the ratio is that of H
        q = relative_error_from_factor(torch.cat([W, W - W_new]), U, shift)
        den, num = float(q[: len(W)].sum()), float(q[len(W):].sum())
        return max(0.0, num) / den if den > 0 else 0.0


# Below this width a plain x.t() @ x is as fast as the block-triangular product.
SYMMETRIC_GRAM_MIN = 1024
GRAM_BLOCKS = 8


def add_gram(H: torch.Tensor, x: torch.Tensor) -> None:
    """H += xᵀx. Wide inputs (an MLP down projection's 4864 or 8960 columns) fill only the blocks on
    and above the diagonal — about 55% of the multiply-adds of the full product, which dominates the
    statistics pass; `linalg.fill_lower_from_upper` completes H once, when it is read. BLAS ssyrk
    (`linalg.syrk_`) fills the exact upper triangle faster where it applies."""
    n = H.shape[0]
    if n < SYMMETRIC_GRAM_MIN:
        H.addmm_(x.t(), x)
        return
    if syrk_(H, x):
        return
    b = -(-n // GRAM_BLOCKS)
    for i in range(0, n, b):
        H[i:i + b, i:].addmm_(x[:, i:i + b].t(), x[:, i:])


class StatsCollector:
    """Forward pre-hooks that accumulate `InputStats` per input. With `stop_early` (the caller does not
    need the block's output), every batch after the first ends the forward with `StopForward` as soon
    as the last linear (in the first batch's execution order) has been read: a down projection's own
    product and what follows it are never computed (0.55 s of each 0.5B-shape block's statistics pass).
    Its accumulators serve one pass's action, so `inverse_factor` may consume their Gram matrices."""

    def __init__(self, linears: list[LinearRef], gram: bool = True, gram_limit: int | None = None,
                 first_moment: bool = True, stop_early: bool = False, second_moment: bool = True):
        self.linears = linears
        self.stop_early = stop_early
        self._calls: list[str] = []
        self._stop_after: str | None = None
        self.first_moment = first_moment
        self.second_moment = second_moment
        self.gram = gram
        self.gram_limit = gram_limit
        self.stats: dict[str, InputStats] = {}
        self._owner: dict[str, str] = {}      # linear -> name of the linear whose accumulator it shares
        self._batch_seen: dict[tuple, tuple] = {}
        self._handles = []
        self.seconds = 0.0
        self._first_batch = True

    def _hook(self, ref: LinearRef):
        def fn(module, inputs):
            t0 = time.perf_counter()
            x = inputs[0]
            if self._first_batch:
                key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()))
                seen = self._batch_seen.get(key)
                owner = seen[1] if seen is not None else None
                if owner is None:
                    # Holding the tensor keeps its address from being reused by a later input
                    # of the same shape within this batch.
                    self._batch_seen[key] = (x, ref.name)
                    self._owner[ref.name] = ref.name
                    self.stats[ref.name] = InputStats(x.shape[-1], self.gram, self.gram_limit, self.first_moment,
                                                               second_moment=self.second_moment,
                                                               factor_in_place=True)
                else:
                    self._owner[ref.name] = owner
                    self.stats[ref.name] = self.stats[owner]
                self.stats[ref.name].readers.append(ref.name)
                self._calls.append(ref.name)
            if self._owner[ref.name] == ref.name:
                self.stats[ref.name].add(x)
            self.seconds += time.perf_counter() - t0
            if ref.name == self._stop_after:
                raise StopForward
        return fn

    def __enter__(self):
        for ref in self.linears:
            self._handles.append(ref.module.register_forward_pre_hook(self._hook(ref)))
        return self

    def end_batch(self) -> None:
        if self._first_batch:
            self._first_batch = False
            self._batch_seen.clear()
            # a linear called more than once per forward (shared weights) is never a safe place to stop
            if self.stop_early and self._calls and self._calls.count(self._calls[-1]) == 1:
                self._stop_after = self._calls[-1]

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()


def relative_recon_error(W: torch.Tensor, W_new: torch.Tensor, gram: torch.Tensor, max_rows: int = 128) -> float:
    """‖(W − Ŵ)Xᵀ‖² / ‖WXᵀ‖² from the Gram matrix Σ x xᵀ of the layer's calibration inputs, over at most
    `max_rows` evenly spaced output rows: the full product costs 2·rows·in² multiply-adds, as much as
    the factorization of a down projection, for a number that is only reported."""
    W, W_new = _sample_rows(W, W_new, max_rows)
    both = torch.cat([W, W - W_new.float()])     # one product with the Gram matrix for both terms
    q = ((both @ gram) * both).double().sum(1)
    den, num = float(q[: len(W)].sum()), float(q[len(W):].sum())
    return num / den if den > 0 else 0.0


def _sample_rows(W: torch.Tensor, W_new: torch.Tensor, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = W.shape[0]
    if r > max_rows:
        rows = torch.linspace(0, r - 1, max_rows).round().long()
        W, W_new = W[rows], W_new[rows]
    return W.float(), W_new.float()
