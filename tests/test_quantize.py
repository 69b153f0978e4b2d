from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise import zoo
from layerwise.allocate.bits import allocate_bits
from layerwise.cli import main
from layerwise.engine.stats import InputStats
from layerwise.io.load import load_model
from layerwise.pipeline.quantize import quantize
from layerwise.plan import Plan, PlanRow
from layerwise.quant import QuantSpec, from_gptq, get_quantizer, pack_rows, to_gptq, unpack_rows
from tests.conftest import tiny_model

SMALL = dict(nsamples=8, seqlen=64, batch_size=4)


@given(bits=st.integers(2, 8), n=st.integers(1, 70), k=st.integers(1, 5), seed=st.integers(0, 1000))
@settings(max_examples=80, deadline=None)
def test_pack_unpack_roundtrip(bits, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 2 ** bits, (n, k), generator=g)
    assert torch.equal(unpack_rows(pack_rows(v, bits), bits, n), v)


def test_gptq_layout_for_4_bits_matches_the_reference_convention():
    # 8 values per int32, value j in bits 4j..4j+3 (the layout GPTQ kernels read).
    v = torch.arange(8).view(8, 1)
    word = int(pack_rows(v, 4)[0, 0]) & 0xFFFFFFFF
    assert word == sum(j << (4 * j) for j in range(8))


@pytest.fixture(scope="module")
def layer():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(128, 128, generator=g) / 12 + torch.eye(128)
    X = torch.randn(1024, 128, generator=g) @ A
    W = torch.randn(48, 128, generator=g) / 12
    s = InputStats(128, True)
    s.add(X)
    return X, W, s


@pytest.mark.parametrize("method", ["rtn", "gptq", "gptq-act"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group, sym", [(128, True), (32, False), (-1, True)])
def test_packed_weights_unpack_to_the_fake_quantized_ones(layer, method, bits, group, sym):
    X, W, s = layer
    q = get_quantizer("gptq", act_order=True) if method == "gptq-act" else get_quantizer(method)
    res = q.quantize(W, s, QuantSpec(bits, group, sym, min_zero=1))
    assert torch.equal(from_gptq(to_gptq(res), bits, 128, 48), res.dequantize())
    assert int(res.q.max()) <= 2 ** bits - 1


def test_error_falls_with_bits_and_gptq_beats_rtn(layer):
    X, W, s = layer

    def err(Wq):
        return float((X @ (W - Wq).T).norm() / (X @ W.T).norm())

    prev = None
    for bits in (2, 3, 4, 8):
        spec = QuantSpec(bits, 32, True, min_zero=1)
        e_rtn = err(get_quantizer("rtn").quantize(W, s, spec).dequantize())
        e_gptq = err(get_quantizer("gptq").quantize(W, s, spec).dequantize())
        assert e_gptq < e_rtn
        if prev is not None:
            assert e_rtn < prev
        prev = e_rtn


def _plan(blocks: int, per_block: list[int]) -> Plan:
    return Plan([PlanRow(name=f"b{b}.l{j}", block=b, shape=(1, n)) for b in range(blocks)
                 for j, n in enumerate(per_block)])


def test_two_level_formula():
    plan = _plan(32, [100])
    ranking = list(range(32))  # block 0 most important
    allocate_bits(plan, ranking, 3.25, 4, 2)
    low = sorted(r.block for r in plan.rows if r.bits == 2)
    assert low == list(range(20, 32))  # k = 12 least important blocks
    assert plan.mean_bits() == pytest.approx(3.25)


@given(target=st.floats(2.0, 4.0), seed=st.integers(0, 100))
@settings(max_examples=60, deadline=None)
def test_bits_never_exceed_the_target_and_come_close(target, seed):
    sizes = [16384, 8192, 8192, 16384, 49152, 49152, 49152]
    plan = _plan(12, sizes)
    ranking = list(torch.randperm(12, generator=torch.Generator().manual_seed(seed)).tolist())
    allocate_bits(plan, ranking, target, 4, 2)
    got = plan.mean_bits()
    assert got <= target + 1e-9
    assert target - got <= 2 * max(sizes) / plan.total_params + 1e-9
    # importance respected: a demoted block is never more important than a block kept whole at 4 bits
    pos = {b: i for i, b in enumerate(ranking)}
    full_high = {r.block for r in plan.rows} - {r.block for r in plan.rows if r.bits == 2}
    demoted = {r.block for r in plan.rows if r.bits == 2}
    assert all(pos[d] > pos[h] for d in demoted for h in full_high if all(
        x.bits == 2 for x in plan.rows if x.block == d))


@given(target=st.floats(2.0, 4.0), seed=st.integers(0, 100))
@settings(max_examples=60, deadline=None)
def test_fused_sets_get_one_width_and_the_budget_still_holds(target, seed):
    from layerwise.io.ct_pack import VLLM_FUSED

    leaves = {"q_proj": 16384, "k_proj": 4096, "v_proj": 4096, "o_proj": 16384, "gate_proj": 49152,
              "up_proj": 49152, "down_proj": 49152}
    plan = Plan([PlanRow(name=f"model.layers.{b}.x.{leaf}", block=b, shape=(1, n)) for b in range(6)
                 for leaf, n in leaves.items()])
    ranking = list(torch.randperm(6, generator=torch.Generator().manual_seed(seed)).tolist())
    allocate_bits(plan, ranking, target, 4, 2, fused=VLLM_FUSED)
    assert plan.mean_bits() <= target + 1e-9
    assert target - plan.mean_bits() <= 2 * (16384 + 8192 + 98304) / plan.total_params + 1e-9
    for b in range(6):
        width = {r.name.rsplit(".", 1)[1]: r.bits for r in plan.rows if r.block == b}
        for fused in VLLM_FUSED:
            assert len({width[leaf] for leaf in fused}) == 1, (b, width)


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_saved_packed_and_dequantized_reload_identically(tmp_path, quantizer):
    from transformers import AutoModelForCausalLM

    r = quantize(zoo.load("llama-tiny"), bits=3.0, high=4, low=2, order="lim", quantizer=quantizer,
                 out=tmp_path / "q", **SMALL)
    ids = torch.randint(0, 4096, (2, 48), generator=torch.Generator().manual_seed(1))
    ref = r.model(input_ids=ids).logits
    packed = load_model(str(tmp_path / "q")).model
    deq = AutoModelForCausalLM.from_pretrained(tmp_path / "q" / "dequantized").eval()
    assert torch.equal(packed(input_ids=ids).logits, ref)
    assert torch.equal(deq(input_ids=ids).logits, ref)
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "gptq" and cfg["bits"] == 4
    assert sum(1 for v in cfg["dynamic"].values() if v.get("bits") == 2) == sum(1 for x in r.plan.rows if x.bits == 2)
    man = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert man["plan"]["nominal_bits"] == pytest.approx(3.0)
    assert 3.0 < man["plan"]["effective_bits_quantized"] < 3.6
    assert man["plan"]["bytes_on_disk"] < man["plan"]["bytes_on_disk_dequantized"]


@pytest.mark.parametrize("group_size, fmt", [(128, "gptq"), (8, "compressed-tensors")])
def test_streamed_equals_in_memory_and_resumes(tmp_path, monkeypatch, group_size, fmt):
    """Both packed formats (llama-tiny's 344 MLP channels make groups of 128 ragged: GPTQ v1)."""
    src = str(zoo.path("llama-tiny"))
    kw = dict(bits=3.0, order="zd", quantizer="gptq", group_size=group_size, **SMALL)
    quantize(src, out=tmp_path / "s", **kw)
    quantize(src, out=tmp_path / "m", stream=False, **kw)
    monkeypatch.setenv("LAYERWISE_FAULT", "block:2:stop")
    with pytest.raises(KeyboardInterrupt):
        quantize(src, out=tmp_path / "r", **kw)
    monkeypatch.delenv("LAYERWISE_FAULT")
    quantize(src, out=tmp_path / "r", resume=True, **kw)
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["plan"]["format"] == fmt
    for f in sorted((tmp_path / "s").glob("model-*.safetensors")):
        a, b, c = (x.read_bytes() for x in (f, tmp_path / "m" / f.name, tmp_path / "r" / f.name))
        assert a == b == c, f.name


def test_orders():
    rankings = {}
    for order in ("lim", "zd", "reverse", "random", "3,2,1,0"):
        r = quantize(zoo.load("llama-tiny"), bits=3.0, order=order, **SMALL)
        rankings[order] = r.plan.meta["ranking"]
    assert rankings["reverse"] == rankings["lim"][::-1]
    assert rankings["3,2,1,0"] == [3, 2, 1, 0]
    r1 = quantize(zoo.load("llama-tiny"), bits=3.0, order="random", order_seed=1, **SMALL).plan.meta["ranking"]
    r2 = quantize(zoo.load("llama-tiny"), bits=3.0, order="random", order_seed=2, **SMALL).plan.meta["ranking"]
    assert sorted(r1) == [0, 1, 2, 3] and (r1 != r2 or r1 != rankings["random"])
    # LIM: the most important block keeps the high bit width
    r = quantize(zoo.load("llama-tiny"), bits=3.0, order="lim", **SMALL)
    top = r.plan.meta["ranking"][0]
    assert all(x.bits == 4 for x in r.plan.rows if x.block == top)


def test_gpt2_conv1d_quantized_roundtrip(tmp_path, zoo_tokenizer):
    m = tiny_model("gpt2")
    r = quantize(m, bits=3.0, order="lim", quantizer="gptq", tokenizer=zoo_tokenizer, out=tmp_path / "g", **SMALL)
    ids = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(2))
    assert torch.equal(load_model(str(tmp_path / "g")).model(input_ids=ids).logits, r.model(input_ids=ids).logits)


@pytest.mark.parametrize("args, needle", [
    (["--bits", "1"], "within 2-8"),
    (["--bits", "9", "--high", "8"], "within 2-8"),
    (["--high", "2", "--low", "4", "--bits", "3"], "--high (2) must be at least --low (4)"),
    (["--bits", "4.5"], "outside [--low 2, --high 4]"),
    (["--bits", "3", "--high", "9"], "--high must be an integer from 2 to 8"),
    (["--quantizer", "awq"], "unknown quantizer"),
    (["--order", "sideways"], "--order"),
    (["--group-size", "0"], "--group-size"),
])
def test_cli_bad_input(args, needle, capsys, tmp_path):
    out = tmp_path / "o"
    code = main(["quantize", "zoo:llama-tiny", "--out", str(out), "--nsamples", "4", "--seqlen", "32"] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
