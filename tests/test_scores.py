from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise import zoo
from layerwise.engine import InMemoryStore
from layerwise.scores.analyze import analyze_store
from layerwise.scores.base import SCORES, importance
from layerwise.scores.esd import alpha, esd, farms_alpha, farms_windows, fit_power_law, fit_power_law_loop
from layerwise.scores.weights import zd
from tests.conftest import tiny_model


def gaussian(r, c, seed):
    return torch.randn(r, c, generator=torch.Generator().manual_seed(seed)) / c ** 0.5


def test_farms_removes_the_aspect_ratio_bias():
    """Plain α of i.i.d. Gaussian matrices grows with the aspect ratio; FARMS α does not."""
    shapes = [(512, 512), (1024, 256), (2048, 128)]
    plain = [np.mean([alpha(gaussian(r, c, s), xmin="mid").alpha for s in range(2)]) for r, c in shapes]
    farms = [np.mean([farms_alpha(gaussian(r, c, s), m=128, q=1.0, k=8, xmin="mid").alpha for s in range(2)])
             for r, c in shapes]
    assert max(plain) / min(plain) > 2.0                    # e.g. 2.1 vs 6.0
    assert max(farms) / min(farms) < 1.10                   # within 10%
    assert plain[0] == pytest.approx(farms[0], rel=0.05)    # square: both estimate the same thing


def test_farms_windows_have_fixed_shape_and_stay_inside():
    for shape in [(384, 128), (128, 384), (64, 128), (1000, 999)]:
        wins = farms_windows(shape, m=64, q=1.0, k=8)
        assert {(h, w) for *_, h, w in wins} == {(64, 64)}
        assert all(0 <= a and a + h <= shape[0] and 0 <= b and b + w <= shape[1] for a, b, h, w in wins)


@given(seed=st.integers(0, 10_000), r=st.integers(8, 120), c=st.integers(8, 120), spikes=st.integers(0, 4),
       rule=st.sampled_from(["peak", "search", "mid"]))
@settings(max_examples=60, deadline=None)
def test_fast_fit_equals_the_plain_loop(seed, r, c, spikes, rule):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(r, c, generator=g)
    if spikes:
        W += torch.randn(r, spikes, generator=g) @ torch.randn(spikes, c, generator=g) * 3
    e = esd(W)
    a, b = fit_power_law(e, xmin=rule), fit_power_law_loop(e, xmin=rule)
    assert (np.isnan(a.alpha) and np.isnan(b.alpha)) or (a.alpha == b.alpha and a.xmin == b.xmin)


def test_directions_are_defined_once():
    assert {n: s.higher_is_important for n, s in SCORES.items()} == {
        "lim": True, "bi": True, "zd": False, "alpha": False, "farms": False, "owl": True, "zeroth_order": True}
    assert list(importance("alpha", [2.0, 3.0])) == [-2.0, -3.0]


def test_zd_and_alpha_rank_heavy_tailed_weights_as_more_important():
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(256, 256, generator=g)
    heavy = torch.distributions.StudentT(2.5).sample((256, 256))
    # Heavy tails inflate σ, so fewer weights pass 1σ: lower ZD (= more important).
    assert zd([heavy]) < zd([normal])
    assert importance("zd", [zd([normal]), zd([heavy])]).argmax() == 1
    # A matrix with power-law singular values has a heavier ESD tail (lower α) than noise.
    U, _, V = torch.linalg.svd(torch.randn(256, 256, generator=g))
    spiky = U @ torch.diag(torch.arange(1, 257).float() ** -1.0) @ V
    assert alpha(spiky).alpha < alpha(normal).alpha
    assert importance("alpha", [alpha(normal).alpha, alpha(spiky).alpha]).argmax() == 1


def _samples(n=8, L=32, seed=0):
    return torch.randint(0, 4096, (n, L), generator=torch.Generator().manual_seed(seed))


def test_lim_and_bi_see_an_identity_block():
    m = tiny_model("llama")
    with torch.no_grad():  # block 1 adds nothing to the residual stream: output == input
        m.model.layers[1].self_attn.o_proj.weight.zero_()
        m.model.layers[1].mlp.down_proj.weight.zero_()
    an = analyze_store(InMemoryStore(m), _samples(), ["lim", "bi"])
    assert an.block_scores["bi"][1] == pytest.approx(0.0, abs=1e-9)
    assert an.block_scores["lim"][1] == pytest.approx(-1.0, abs=1e-9)
    assert an.block_scores["bi"][0] > 0.01


def test_owl_sees_injected_outlier_channels():
    m = tiny_model("llama")
    base = analyze_store(InMemoryStore(m), _samples(), ["owl"]).block_scores["owl"]
    with torch.no_grad():
        m.model.layers[1].input_layernorm.weight[:3] *= 30
        m.model.layers[1].post_attention_layernorm.weight[:3] *= 30
    boosted = analyze_store(InMemoryStore(m), _samples(), ["owl"]).block_scores["owl"]
    assert boosted[1] > 3 * base[1] and boosted[1] > boosted[0]


def test_zeroth_order_leaves_weights_bit_identical_and_tracks_gradients():
    lm = zoo.load("llama-tiny")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    samples = _samples(32, 64, 3)
    an = analyze_store(InMemoryStore(lm.model), samples, ["zeroth_order"], zo_samples=32)
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # First-order reference: per-tensor Σ_batches ‖∇L‖ on the same batches.
    refs = {r.name: r for r in __import__("layerwise").models.adapters.get_adapter(lm.model).all_linears()}
    fo = {n: 0.0 for n in refs}
    for b in range(0, 32, 8):
        lm.model.zero_grad()
        ids = samples[b:b + 8]
        lm.model(input_ids=ids, labels=ids).loss.backward()
        for n, r in refs.items():
            fo[n] += float(r.module.weight.grad.norm())
    zo = an.linear_scores["zeroth_order"]
    names = sorted(fo)
    rho = np.corrcoef(np.argsort(np.argsort([zo[n] for n in names])),
                      np.argsort(np.argsort([fo[n] for n in names])))[0, 1]
    assert rho > 0.7
