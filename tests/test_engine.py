from __future__ import annotations

import pytest
import torch

from layerwise.engine import InMemoryStore, LazyStore, capture_block_inputs, run_sequential
from layerwise.models.adapters import get_adapter
from tests.conftest import tiny_model

ARCHS = ["llama", "qwen2", "mistral", "gpt2", "bert"]


def _ids(n=4, L=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4096, (n, L), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_block_by_block_equals_full_forward(arch):
    """Captured side inputs replayed block by block reproduce the model's own hidden states."""
    model = tiny_model(arch)
    adapter = get_adapter(model)
    ids = _ids()
    seen = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
             for b in adapter.block_list()]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    (batch,) = capture_block_inputs(model, adapter, ids, batch_size=4)
    h = batch.hidden
    with torch.no_grad():
        for i, block in enumerate(adapter.block_list()):
            h = adapter.call_block(block, h, batch.args, batch.kwargs)
            assert torch.equal(h, seen[i]), f"block {i}"


def test_gqa_layout_and_linears():
    model = tiny_model("llama")
    a = get_adapter(model)
    assert a.attention_layout() == {"heads": 4, "kv_heads": 2, "head_dim": 16}
    names = [r.local for r in a.linears(0)]
    assert names == ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    g = get_adapter(tiny_model("gpt2"))
    ref = g.linears(0)[0]
    assert ref.transposed and ref.shape == (3 * 64, 64)  # c_attn: out = 3·hidden, in = hidden


def test_statistics_are_shared_by_linears_reading_the_same_input():
    model = tiny_model("llama")
    store = InMemoryStore(model)
    seen = {}

    def action(work):
        seen.update({k: id(v) for k, v in work.stats.items()})
        # Σ x² over tokens must equal the Gram diagonal.
        for st in work.stats.values():
            assert torch.allclose(st.sq.float(), torch.diag(st.H), rtol=1e-5)
        return []

    run_sequential(store, _ids(8), action, batch_size=3)
    p = "model.layers.1."
    groups = {seen[p + "self_attn.q_proj"], seen[p + "self_attn.o_proj"], seen[p + "mlp.gate_proj"],
              seen[p + "mlp.down_proj"]}
    assert len(groups) == 4
    assert seen[p + "self_attn.q_proj"] == seen[p + "self_attn.k_proj"] == seen[p + "self_attn.v_proj"]
    assert seen[p + "mlp.gate_proj"] == seen[p + "mlp.up_proj"]


def test_noop_action_leaves_logits_identical():
    model = tiny_model("llama")
    ids = _ids()
    before = model(input_ids=ids).logits
    run_sequential(InMemoryStore(model), _ids(6, seed=1), lambda w: [], batch_size=2)
    assert torch.equal(before, model(input_ids=ids).logits)


def test_dense_and_pruned_propagation_differ():
    from layerwise.pipeline.prune import prune

    outs = {}
    for prop in ("pruned", "dense"):
        m = tiny_model("llama")
        from layerwise import zoo

        r = prune(m, method="wanda", sparsity=0.6, tokenizer=zoo.load_tokenizer("llama-tiny"), nsamples=8,
                  seqlen=32, propagate=prop)
        outs[prop] = r.model.model.layers[1].mlp.down_proj.weight.clone()
    assert not torch.equal(outs["pruned"], outs["dense"])


def test_lazy_store_streams_blocks(tiny_dirs, tmp_path):
    store = LazyStore(tiny_dirs["llama"], tmp_path)
    blocks = store.adapter.block_list()
    assert all(p.is_meta for b in blocks for p in b.parameters())
    assert not store.model.model.embed_tokens.weight.is_meta
    b0 = store.load_block(0)
    assert not any(p.is_meta for p in b0.parameters())
    store.release_block(0)
    assert all(p.is_meta for p in b0.parameters())
    assert (tmp_path / store.writer.shard_name(0)).exists()


@pytest.mark.parametrize("n,syrk", [(96, False), (1100, False), (1100, True)])
def test_gram_accumulated_by_triangle_blocks_equals_the_full_product(n, syrk, monkeypatch):
    """Wide inputs fill the (block-)upper triangle only, by torch products or BLAS ssyrk; reading H
    mirrors it, over several batches, also after H was read once (later batches touch the upper part
    only)."""
    from layerwise import _blas, linalg
    from layerwise.engine.stats import InputStats

    monkeypatch.setattr(_blas, "SPIN_BOUNDED", syrk)
    calls = []
    real = linalg.syrk_
    monkeypatch.setattr("layerwise.engine.stats.syrk_", lambda H, x: calls.append(real(H, x)) or calls[-1])

    g = torch.Generator().manual_seed(n)
    xs = [torch.randn(2, 40, n, generator=g) for _ in range(3)]
    st = InputStats(n, True)
    st.add(xs[0])
    first = st.H.clone()
    for x in xs[1:]:
        st.add(x)
    X = torch.cat([x.reshape(-1, n) for x in xs]).double()
    X0 = xs[0].reshape(-1, n).double()
    assert torch.allclose(first.double(), X0.T @ X0, rtol=1e-5, atol=1e-3)
    assert torch.allclose(st.H.double(), X.T @ X, rtol=1e-5, atol=1e-3)
    assert torch.equal(st.H, st.H.T) and st.gram_tokens == 240
    assert torch.allclose(st.hessian.double(), X.T @ X * (2 / 240), rtol=1e-5, atol=1e-5)
    assert calls == ([syrk] * 3 if n >= 1024 else [])


@pytest.mark.parametrize("n,dead", [(64, False), (300, True), (1100, False)])
def test_recon_error_from_the_in_place_factor_equals_the_gram_formula(n, dead):
    """Once SparseGPT/GPTQ factor H in its own memory, reconstruction errors come from the factor
    (d H dᵀ = ‖d U⁻¹‖² − Σ s_j d_j²), equal to the direct formula on H; H itself is then gone."""
    from layerwise.engine.stats import InputStats, relative_recon_error
    from layerwise.errors import LayerwiseError

    g = torch.Generator().manual_seed(n)
    x = torch.randn(4 * n, n, generator=g) * torch.linspace(0.1, 3, n)
    if dead:
        x[:, 7] = 0.0
    st = InputStats(n, True, factor_in_place=True)
    st.add(x)
    W = torch.randn(200, n, generator=g)
    news = [W + noise * torch.randn(200, n, generator=g) for noise in (1e-3, 0.3)]
    wants = [relative_recon_error(W, Wn, st.H) for Wn in news]
    assert [st.recon_error(W, Wn) for Wn in news] == wants       # H still there: the direct formula
    st.inverse_factor(0.01)
    for Wn, want in zip(news, wants):
        assert abs(st.recon_error(W, Wn) - want) <= 1e-3 * want
    assert st.recon_error(W, W) == 0.0
    with pytest.raises(LayerwiseError, match="factored in place"):
        st.H
    with pytest.raises(LayerwiseError, match="share one damping"):
        st.inverse_factor(0.1)
    kept = InputStats(n, True)          # a user's accumulator keeps H and factors a copy
    kept.add(x)
    U, _ = kept.inverse_factor(0.01)
    assert kept.recon_error(W, news[0]) == wants[0] and U.data_ptr() != kept.H.data_ptr()
    U2, damp = kept.inverse_factor(0.1)                 # another damping: a new factor from the kept H
    assert damp == 0.1 and not torch.equal(U, U2)
