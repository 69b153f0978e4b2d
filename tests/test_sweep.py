"""The compiled OBS sweep steps are bit-identical to the one-column-at-a-time torch loops."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from layerwise import sweep
from layerwise.sweep import prune_columns, prune_columns_torch, quantize_columns, quantize_columns_torch


@pytest.fixture(autouse=True)
def compiled_at_every_size(monkeypatch):
    monkeypatch.setattr(sweep, "KERNEL_MIN_WEIGHTS", 0)
    assert sweep._compile(), "numba kernels did not build"


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int32), b.view(torch.int32))   # signed zeros included


def _factor(n: int, gen: torch.Generator) -> torch.Tensor:
    A = torch.randn(n, 2 * n + 1, generator=gen)
    H = A @ A.t() / n + 0.1 * torch.eye(n)
    return torch.linalg.cholesky(torch.linalg.inv(H), upper=True).contiguous()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), r=st.integers(1, 70), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_prune_columns_matches_reference(n, r, seed, data):
    gen = torch.Generator().manual_seed(seed)
    t0 = data.draw(st.integers(0, n - 1))
    t1 = data.draw(st.integers(t0, n))
    U = _factor(n, gen)
    W = torch.randn(n, r, generator=gen)
    mask = torch.rand(n, r, generator=gen) < 0.5
    W1, W2 = W.clone(), W.clone()
    E1, E2 = torch.zeros(n, r), torch.zeros(n, r)
    prune_columns(W1, U, E1, mask, t0, t1)
    prune_columns_torch(W2, U, E2, mask, t0, t1)
    assert _same_bits(W1, W2) and _same_bits(E1, E2)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), r=st.integers(1, 70), bits=st.integers(2, 8), masked=st.booleans(),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_quantize_columns_matches_reference(n, r, bits, masked, seed, data):
    gen = torch.Generator().manual_seed(seed)
    t0 = data.draw(st.integers(0, n - 1))
    t1 = data.draw(st.integers(t0, n))
    U = _factor(n, gen)
    W = torch.randn(n, r, generator=gen)
    maxq = (1 << bits) - 1
    scale = (torch.rand(r, generator=gen) * 0.5 + 0.01).half().float()
    zero = torch.randint(0, maxq + 1, (r,), generator=gen).float()
    keep0 = (torch.rand(n, r, generator=gen) < 0.3) if masked else None
    W1, W2 = W.clone(), W.clone()
    E1, E2, Q1, Q2 = (torch.zeros(n, r) for _ in range(4))
    quantize_columns(W1, U, E1, Q1, scale, zero, maxq, keep0, t0, t1)
    quantize_columns_torch(W2, U, E2, Q2, scale, zero, maxq, keep0, t0, t1)
    assert _same_bits(W1, W2) and _same_bits(E1, E2) and _same_bits(Q1, Q2)
    assert bool(((Q1[t0:t1] >= 0) & (Q1[t0:t1] <= maxq)).all())


def test_small_blocks_and_a_missing_numba_take_the_torch_loops(monkeypatch):
    monkeypatch.setattr(sweep, "KERNEL_MIN_WEIGHTS", 1 << 16)
    monkeypatch.setattr(sweep, "_kernels", None)        # numba not loaded yet
    assert sweep._kernel(torch.zeros(128, 511), 0) is None and sweep._kernels is None
    assert sweep._kernel(torch.zeros(128, 512), 0) is not None
    assert sweep._kernel(torch.zeros(2, 2), 0) is not None   # loaded: every block uses it
    monkeypatch.setattr(sweep, "_kernels", False)       # numba could not load or compile
    assert sweep._kernel(torch.zeros(128, 4096), 1) is None
    W = torch.randn(8, 3)
    E, M = torch.zeros(8, 3), torch.rand(8, 3) < 0.5
    prune_columns(W, torch.eye(8), E, M)
    assert bool((W[M] == 0).all())
