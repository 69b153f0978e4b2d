from __future__ import annotations

import pytest
import torch

from layerwise import zoo
from layerwise.eval import evaluate


@pytest.mark.parametrize("name", ["llama-tiny", "llama-12l"])
def test_shipped_card_is_complete(name):
    card = zoo.info(name)
    for key in ("corpus", "tokenizer", "config", "training", "eval", "curve", "parameters"):
        assert key in card, key
    t = card["training"]
    for key in ("seed", "steps", "tokens_seen", "wall_time_s", "python", "torch"):
        assert key in t
    assert card["corpus"]["python"] and card["corpus"]["train"]["sha256"]
    assert (zoo.path(name) / "curve.png").stat().st_size > 1000
    assert (zoo.path(name) / "model.safetensors").exists()


def test_shipped_sizes():
    tiny = zoo.info("llama-tiny")
    assert tiny["parameters"] <= 2_000_000 and tiny["config"]["num_hidden_layers"] >= 4
    big = zoo.info("llama-12l")
    assert big["config"]["num_hidden_layers"] >= 12
    assert big["config"]["num_key_value_heads"] < big["config"]["num_attention_heads"]
    total = sum(f.stat().st_size for n in zoo.shipped() for f in zoo.path(n).iterdir())
    assert total <= 60 * 2**20          # the package stays well under 100 MB


@pytest.mark.parametrize("name", ["llama-tiny", "llama-12l"])
def test_card_perplexity_reproduces(name):
    card = zoo.info(name)
    from layerwise.data import load_corpus

    if load_corpus("stdlib").split_info()["validation"]["sha256"] != card["corpus"]["validation"]["sha256"]:
        pytest.skip("this Python's standard library differs from the card's corpus")
    rep = evaluate(zoo.load(name), data="stdlib", seqlen=card["eval"]["seqlen"], speed=False, batch_size=16)
    assert rep.perplexity.windows == card["eval"]["windows"]
    assert rep.perplexity.perplexity == pytest.approx(card["eval"]["perplexity"], rel=0.01)


def test_training_is_deterministic_and_resumes(tmp_path, monkeypatch):
    from layerwise.zoo import specs
    from layerwise.zoo.train import train

    micro = specs.ZooSpec(name="micro-test", description="test", architecture="llama",
                          config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128),
                          seqlen=32, batch_size=4, steps=6, warmup=2, eval_every=3, checkpoint_every=2,
                          eval_windows=4, vocab_size=512)
    monkeypatch.setitem(specs.SPECS, "micro-test", micro)
    a = train("micro-test", tmp_path / "a", work_dir=tmp_path / "wa", threads=1)
    assert train("micro-test", tmp_path / "b", work_dir=tmp_path / "wb", threads=1, stop_after=3) is None
    assert not (tmp_path / "b").exists()  # an interrupted run writes no output
    b = train("micro-test", tmp_path / "b", work_dir=tmp_path / "wb", threads=1)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    import json

    ca, cb = (json.loads((p / "card.json").read_text()) for p in (a, b))
    assert [c["val_loss"] for c in ca["curve"]] == [c["val_loss"] for c in cb["curve"]]
    assert ca["training"]["tokens_seen"] == 6 * 4 * 32
