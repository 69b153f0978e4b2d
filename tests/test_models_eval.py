from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import layerwise
from layerwise.data import eval_windows
from layerwise.errors import DataError, ModelLoadError
from layerwise.eval import agreement, evaluate, perplexity
from layerwise.io.load import load_model

ARCHS = ["llama", "qwen2", "mistral", "gpt2", "bert"]


@pytest.mark.parametrize("arch", ARCHS)
def test_loader_and_eval_on_tiny_random_models(tiny_dirs, arch):
    lm = load_model(str(tiny_dirs[arch]))
    assert lm.tokenizer is not None
    rep = evaluate(lm, data="stdlib", max_windows=4, seqlen=64, reference=str(tiny_dirs[arch]))
    assert rep.parameters > 0 and rep.bytes_on_disk > 0
    assert rep.speed.prefill_tokens_per_s > 0
    if arch == "bert":
        assert rep.kind == "encoder" and rep.perplexity is None
        assert rep.embedding.cosine_mean == pytest.approx(1.0, abs=1e-5)
        assert rep.speed.decode_tokens_per_s is None
    else:
        assert rep.kind == "causal-lm"
        # A random model is close to uniform over the vocabulary.
        assert 0.3 * 4096 < rep.perplexity.perplexity < 3 * 4096
        assert rep.agreement.top1_agreement == 1.0 and abs(rep.agreement.kl_divergence) < 1e-6
        assert rep.speed.decode_tokens_per_s > 0
    d = rep.to_dict()
    assert d["model"] == str(tiny_dirs[arch])


def test_perplexity_matches_a_plain_loop(tiny_dirs, zoo_tokenizer):
    model = load_model(str(tiny_dirs["llama"])).model
    w = eval_windows("stdlib", zoo_tokenizer, seqlen=32, max_windows=6)
    res = perplexity(model, w, batch_size=4)
    nll, n = 0.0, 0
    with torch.no_grad():
        for row in w:
            logits = model(input_ids=row[None]).logits[0]
            for t in range(1, row.numel()):
                nll -= float(F.log_softmax(logits[t - 1].double(), -1)[row[t]])
                n += 1
    assert res.tokens == n == 6 * 31
    assert res.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_agreement_detects_a_different_model(tiny_dirs, zoo_tokenizer):
    from tests.conftest import tiny_model

    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    w = eval_windows("stdlib", zoo_tokenizer, seqlen=32, max_windows=4)
    r = agreement(a, b, w)
    assert r.top1_agreement < 0.5 and r.kl_divergence > 0


def test_tokenizer_vocab_mismatch_is_refused(tiny_dirs, zoo_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(DataError, match="vocabulary"):
        evaluate(small, tokenizer=zoo_tokenizer, max_windows=2, seqlen=32, speed=False)


def test_bad_model_inputs(tmp_path, tiny_dirs):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="unknown zoo model"):
        load_model("zoo:nope")
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_model("surely-not-a-model-xyz")
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_dirs["llama"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(str(empty))
    no_config = tmp_path / "noconfig"
    no_config.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(no_config))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((tiny_dirs["llama"] / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="corrupt safetensors header"):
        load_model(str(corrupt))


def test_public_api_load():
    lm = layerwise.load("zoo:llama-tiny")
    assert lm.is_causal_lm and lm.card["name"] == "llama-tiny"
