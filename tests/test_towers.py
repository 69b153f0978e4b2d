"""Multi-tower models (CLIP's image and text towers, LLaVA's vision encoder and decoder): one block
numbering across towers, the engine run tower by tower against a hook-based reference, zeroth-order
scores over a whole forward, save → load and resume."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from layerwise.cli import main
from layerwise.data import captions as cap
from layerwise.errors import DataError
from layerwise.models.adapters import get_adapter
from layerwise.models.adapters.towers import JointAdapter, engine_adapter, multi_tower_dir
from layerwise.models.inputs import ModelInputs
from layerwise.pipeline.prune import prune
from layerwise.scores.zeroth_order import zeroth_order_scores

SMALL = dict(nsamples=16, batch_size=8, calib="digits")


def clip(seed=0, vision_layers=2, text_layers=3):
    torch.manual_seed(seed)
    text = dict(vocab_size=len(cap.VOCAB), max_position_embeddings=cap.LENGTH, pad_token_id=cap.PAD,
                bos_token_id=cap.BOS, eos_token_id=cap.EOS, hidden_size=32, intermediate_size=64,
                num_hidden_layers=text_layers, num_attention_heads=2)
    vision = dict(image_size=16, patch_size=4, num_channels=1, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=vision_layers, num_attention_heads=2)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def saved_clip(tmp_path, **kw):
    from layerwise.zoo.clip import tokenizer

    d = tmp_path / "clip"
    clip(**kw).save_pretrained(d)
    tokenizer().save_pretrained(d)
    return d


def pairs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ModelInputs(input_ids=cap.training_captions(torch.randint(0, 10, (n,), generator=g), g),
                       pixel_values=torch.randn(n, 1, 16, 16, generator=g))


def test_model_inputs_slice_together_and_check_sizes():
    x = pairs(6)
    assert x.shape[0] == len(x) == 6 and x[2:5].shape[0] == 3
    assert torch.equal(x[2:5].as_dict()["pixel_values"], x.as_dict()["pixel_values"][2:5])
    with pytest.raises(DataError, match="disagree"):
        ModelInputs(input_ids=torch.zeros(3, 4), pixel_values=torch.zeros(2, 1, 16, 16))


def test_joint_adapter_numbers_blocks_across_towers():
    m = clip()
    a = engine_adapter(m)
    assert isinstance(a, JointAdapter) and [t.tower_name for t in a.towers()] == ["vision", "text"]
    assert a.num_blocks == 5 and [t.block_offset for t in a.towers()] == [0, 2]
    lins = a.all_linears()
    assert len({r.name for r in lins}) == len(lins) == 30
    assert sorted({r.block for r in lins}) == list(range(5))
    assert all(r.name.startswith("vision_model.") for r in lins if r.block < 2)
    assert all(r.name.startswith(f"text_model.encoder.layers.{r.block - 2}.") for r in lins if r.block >= 2)
    assert a.block_prefix(3) == "text_model.encoder.layers.1"
    # The primary adapter (what token and width stages use) stays the image tower's.
    assert not isinstance(get_adapter(m), JointAdapter) and get_adapter(m).num_blocks == 2


def _wanda_reference(model, samples, sparsity):
    """Wanda from the dense model's own activations (forward hooks, whole model, every linear at once):
    what a dense-propagation run over the towers must reproduce."""
    a = engine_adapter(model)
    sq: dict[str, torch.Tensor] = {}
    hooks = []
    for r in a.all_linears():
        def hook(mod, inp, out, name=r.name):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            sq[name] = sq.get(name, 0) + (x ** 2).sum(0)
        hooks.append(r.module.register_forward_hook(hook))
    with torch.no_grad():
        for i in range(0, samples.shape[0], 8):
            a.run_model(model, samples[i:i + 8])
    for h in hooks:
        h.remove()
    masks = {}
    for r in a.all_linears():
        W = r.weight.detach().double()
        score = W.abs() * sq[r.name].sqrt()[None, :]
        k = int(W.shape[1] * sparsity)
        idx = score.argsort(dim=1)[:, :k]
        m = torch.ones_like(W, dtype=torch.bool)
        m.scatter_(1, idx, False)
        masks[r.name] = m
    return masks


def test_dense_propagation_over_towers_equals_the_hook_reference():
    from layerwise.pipeline.source import calibration_inputs

    m = clip(seed=3)
    samples = calibration_inputs("digits", None, 16, 2, 0, "clip", engine_adapter(m))
    ref = _wanda_reference(m, samples, 0.5)
    r = prune(m, method="wanda", sparsity=0.5, propagate="dense", **SMALL)
    a = engine_adapter(r.model)
    assert len(r.plan.rows) == 30
    for lin in a.all_linears():
        assert torch.equal(lin.weight != 0, ref[lin.name]), lin.name


def test_clip_calibration_loss_is_the_multi_positive_training_loss():
    """The zoo's calibration pairs carry their digit: ECoFLaP's objective is then the loss the model is
    trained with (same-digit pairs are positives), not CLIP's one-positive loss; without labels it
    falls back to the model's own."""
    from layerwise.pipeline.source import calibration_inputs
    from layerwise.zoo.clip import contrastive_loss

    m = clip(seed=2)
    ad = get_adapter(m)
    x = calibration_inputs("digits", None, 12, 2, 0, "clip", engine_adapter(m))
    d = x.as_dict()
    assert "labels" in d and len(set(d["labels"].tolist())) < 12       # repeated digits: several positives
    with torch.no_grad():
        ours = ad.calibration_loss(m, x)
        trained = contrastive_loss(m, d["pixel_values"], d["input_ids"], d["labels"])
        plain = ad.calibration_loss(m, ModelInputs(input_ids=d["input_ids"], pixel_values=d["pixel_values"]))
        stock = m(input_ids=d["input_ids"], pixel_values=d["pixel_values"], return_loss=True).loss
    assert torch.equal(ours, trained) and torch.equal(plain, stock) and not torch.equal(ours, plain)


def test_zeroth_order_over_a_whole_forward_restores_weights_and_is_seeded():
    m = clip(seed=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    lins = engine_adapter(m).all_linears()
    s1 = zeroth_order_scores(m, lins, pairs(8), n_samples=8, batch_size=4, seed=0)
    s2 = zeroth_order_scores(m, lins, pairs(8), n_samples=8, batch_size=4, seed=0)
    assert s1 == s2 and all(v > 0 for v in s1.values()) and len(s1) == 30
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("allocation", ["uniform", "owl", "ecoflap"])
def test_allocation_across_towers_meets_the_budget_and_reloads(tmp_path, allocation):
    d = saved_clip(tmp_path)
    assert multi_tower_dir(d)
    r = prune(str(d), method="wanda", sparsity=0.6, allocation=allocation, out=tmp_path / "out", **SMALL)
    assert r.plan.measured_sparsity() == pytest.approx(0.6, abs=2e-3)
    assert {row.name.split(".")[0] for row in r.plan.rows} == {"vision_model", "text_model"}
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "identical" in man["checks"]["reload"]
    assert not list((tmp_path / "out").glob("engine_state*"))
    if allocation == "ecoflap":
        per_block = {row.block: row.sparsity for row in r.plan.rows}
        assert len(set(round(v, 6) for v in per_block.values())) > 1


def test_resume_inside_the_second_tower_equals_uninterrupted(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    d = saved_clip(tmp_path)
    kw = dict(method="sparsegpt", sparsity=0.5, **SMALL)
    prune(str(d), out=tmp_path / "full", **kw)
    monkeypatch.setenv("LAYERWISE_FAULT", "block:3:stop")      # vision (2 blocks) done, text block 0 done
    with pytest.raises(KeyboardInterrupt):
        prune(str(d), out=tmp_path / "resumed", **kw)
    monkeypatch.delenv("LAYERWISE_FAULT")
    prune(str(d), out=tmp_path / "resumed", resume=True, **kw)

    def weights(p):
        out = {}
        for f in sorted(p.glob("model-*.safetensors")):
            out.update(load_file(f))
        return out

    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_llava_prunes_both_towers_and_the_decoder_sees_the_pruned_encoder():
    from layerwise import zoo
    from layerwise.zoo import vlm
    from layerwise.zoo.specs import SPECS

    lm = zoo.load("llava-quadrants")
    r = prune(lm, method="wanda", sparsity=0.5, **SMALL)
    names = {row.name.split(".layers")[0] for row in r.plan.rows}
    assert names == {"model.vision_tower.encoder", "model.language_model"}
    assert r.plan.measured_sparsity() == pytest.approx(0.5)
    assert vlm.accuracy(r.model, SPECS["llava-quadrants"], "test", 128)["accuracy"] > 0.7


def test_cli_refuses_a_text_corpus_for_a_dual_encoder(tmp_path, capsys):
    d = saved_clip(tmp_path)
    code = main(["prune", str(d), "--method", "wanda", "--sparsity", "0.5", "--calib", "wikitext",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "calibrate on 'digits'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_eval_reports_zero_shot_accuracy_of_a_pruned_dual_encoder(tmp_path):
    from layerwise.eval.evaluate import evaluate

    d = saved_clip(tmp_path)
    prune(str(d), method="wanda", sparsity=0.5, out=tmp_path / "out", **SMALL)
    rep = evaluate(str(tmp_path / "out"), data="digits", split="test")
    assert rep.kind == "zero-shot" and 0 <= rep.extra["accuracy"] <= 1 and rep.extra["images"] > 900
    assert dict(rep.rows())["zero-shot accuracy"].endswith("held-out prompts)")


def test_mixed_precision_quantization_and_analysis_span_both_towers(tmp_path):
    from layerwise.pipeline.analyze import analyze
    from layerwise.pipeline.quantize import quantize

    d = saved_clip(tmp_path)
    an = analyze(str(d), scores="lim,bi,zd", calib="digits", nsamples=16)
    assert len(an.block_scores["lim"]) == 5 and all(v == v for v in an.block_scores["lim"])
    q = quantize(str(d), bits=3, high=4, low=2, order="lim", quantizer="gptq", group_size=32, calib="digits",
                 nsamples=16, out=tmp_path / "q")
    bits = {r.name.split(".")[0]: r.bits for r in q.plan.rows}
    assert set(bits) == {"vision_model", "text_model"} and q.plan.mean_bits() == pytest.approx(3.0, abs=0.05)
    man = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert "identical" in man["checks"]["reload"]
