"""GGUF export: exact block packing, every kind of result, the file read back by gguf and llama.cpp."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise.cli import main
from layerwise.export.ggml_blocks import Codes, dequantize, exact_type, pack_exact
from layerwise.quant.base import QuantSpec, find_params, quantize_col


def codes_of(w: torch.Tensor, bits: int, group: int, sym: bool, act_order: bool = False) -> Codes:
    spec = QuantSpec(bits, group, sym, min_zero=1)
    cols = w.shape[1]
    g = spec.group(cols)
    g_idx = torch.arange(cols) // g
    if act_order:      # columns visited in another order: the group of a column is not col // g
        g_idx = g_idx[torch.randperm(cols, generator=torch.Generator().manual_seed(0))]
    S, Z = [], []
    for j in range(spec.groups(cols)):
        s, z = find_params(w[:, g_idx == j], spec)
        S.append(s)
        Z.append(z)
    S, Z = torch.stack(S, 1), torch.stack(Z, 1)
    q = quantize_col(w, S[:, g_idx], Z[:, g_idx], spec.maxq).long()
    return Codes(q, S, Z, g_idx, bits)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), group=st.sampled_from([32, 64, 128, -1]), sym=st.booleans(),
       rows=st.integers(1, 5), blocks=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_block_packing_is_exact_under_ggufs_own_dequantizer(bits, group, sym, rows, blocks, seed):
    cols = 32 * blocks
    if group > 0 and cols % group:
        group = 32
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.1
    c = codes_of(w, bits, group, sym)
    t = exact_type(c)
    mid = bool((c.zeros == 2 ** (bits - 1)).all())      # an asymmetric grid may land on the midpoint
    if not mid and bits == 8:
        assert t is None
        return
    assert t == ("Q4_0" if mid and bits <= 4 else "Q5_0" if mid and bits == 5 else "Q8_0")
    back = dequantize(pack_exact(c, t), t)
    assert np.array_equal(back.reshape(rows, cols), c.dequantize().numpy())


def test_act_order_and_ragged_rows_are_not_exact():
    w = torch.randn(4, 128)
    assert exact_type(codes_of(w, 4, 32, True, act_order=True)) is None
    assert exact_type(codes_of(torch.randn(4, 80), 4, -1, True)) is None


def read_gguf(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    fields = {}
    for k, f in r.fields.items():
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.types) > 1 \
                and f.types[1] != gguf.GGUFValueType.STRING:
            fields[k] = [int(f.parts[i][0]) for i in f.data]
        elif f.types and f.types[0] in (gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32):
            fields[k] = int(f.parts[f.data[0]][0])
        elif f.types and f.types[0] == gguf.GGUFValueType.STRING:
            fields[k] = bytes(f.parts[f.data[0]]).decode()
    return r, fields


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A 4-bit group-32 RTN result, a mixed 8/4-bit GPTQ result (group 128) and a per-layer width result."""
    root = tmp_path_factory.mktemp("results")
    base = ["--nsamples", "8", "--seqlen", "64"]
    assert main(["quantize", "zoo:llama-12l", "--bits", "4", "--high", "4", "--low", "4", "--group-size", "32",
                 "--out", str(root / "q4")] + base) == 0
    assert main(["quantize", "zoo:llama-12l", "--bits", "6", "--high", "8", "--low", "4", "--order", "lim",
                 "--quantizer", "gptq", "--out", str(root / "mixed")] + base) == 0
    assert main(["width", "zoo:llama-12l", "--keep-params", "0.7", "--adaptive", "--nsamples", "8",
                 "--out", str(root / "width")]) == 0
    assert main(["depth", "zoo:llama-12l", "--remove", "2", "--select", "bi", "--nsamples", "8",
                 "--out", str(root / "depth")]) == 0
    return root


@pytest.mark.parametrize("name", ["q4", "mixed"])
def test_quantized_codes_are_exact_in_the_file(results, tmp_path, name):
    from layerwise import load
    from layerwise.export import export

    out = tmp_path / f"{name}.gguf"
    res = export(str(results / name), "gguf", out, float_type="f32")
    quant = [r for r in res.records if r.source == "codes"]
    assert len(quant) == 84 and all(r.exact and r.max_abs_error == 0 for r in quant)
    types = {r.type for r in quant}
    assert types == ({"Q4_0"} if name == "q4" else {"Q4_0", "Q8_0"})
    # independently: gguf's reader + dequantizer against the layerwise-loaded model, q/k un-permuted
    reader, fields = read_gguf(out)
    model = load(str(results / name)).model
    t = {x.name: x for x in reader.tensors}["blk.3.ffn_down.weight"]
    back = dequantize(np.asarray(t.data), t.tensor_type.name).reshape(128, 384)
    assert np.array_equal(back, model.model.layers[3].mlp.down_proj.weight.detach().numpy())
    report = json.loads(out.with_suffix(".gguf.json").read_text())
    assert report["exact_codes"] == 84 and report["requantized"] == []


def test_width_and_depth_results_carry_their_shapes(results, tmp_path):
    from layerwise import load
    from layerwise.export import export

    m = load(str(results / "width")).model
    res = export(str(results / "width"), "gguf", tmp_path / "w.gguf", float_type="f32")
    assert all(r.exact for r in res.records)
    _, f = read_gguf(tmp_path / "w.gguf")
    ff = [layer.mlp.down_proj.in_features for layer in m.model.layers]
    kv = [layer.self_attn.k_proj.out_features // 32 for layer in m.model.layers]
    assert len(set(ff)) > 1 and f["general.architecture"] == "deci"    # llama.cpp's per-block-width Llama
    assert f["deci.feed_forward_length"] == ff
    assert f["deci.attention.head_count_kv"] == (kv if len(set(kv)) > 1 else kv[0])
    export(str(results / "depth"), "gguf", tmp_path / "d.gguf")
    _, f = read_gguf(tmp_path / "d.gguf")
    assert f["llama.block_count"] == 10 and f["tokenizer.ggml.pre"] == "gpt-2"


def test_ragged_and_act_order_results_are_reported_not_silently_exact(tmp_path):
    """llama-tiny's MLP (344 channels) cannot be blocked; act-order codes are requantized, both reported."""
    from layerwise.export import export

    q = tmp_path / "q"
    assert main(["quantize", "zoo:llama-tiny", "--bits", "4", "--high", "4", "--low", "4", "--quantizer", "gptq",
                 "--act-order", "--group-size", "32", "--nsamples", "8", "--seqlen", "64", "--out", str(q)]) == 0
    res = export(str(q), "gguf", tmp_path / "q.gguf")
    down = [r for r in res.records if "down_proj" in r.name]
    assert down and all(r.type == "F16" and "multiple of 32" in r.note for r in down)
    others = [r for r in res.records if r.source == "codes" and "down_proj" not in r.name]
    assert others and all(r.type == "Q4_0" and not r.exact and r.max_abs_error > 0 for r in others)


@pytest.mark.parametrize("args, needle", [
    (["--format", "onnx"], "unknown export format"),
    (["--float-type", "q3_k"], "--float-type"),
    (["--out", "OUT/x.onnx"], ".gguf"),
])
def test_cli_bad_input(args, needle, tmp_path, capsys):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    code = main(["export", "zoo:llama-tiny"] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_unsupported_models_and_outputs_are_one_line_errors(tiny_dirs, tmp_path, capsys):
    from conftest import tree_hash

    before = tree_hash(tiny_dirs["llama"])
    code = main(["export", str(tiny_dirs["gpt2"]), "--out", str(tmp_path / "g.gguf")])
    assert code == 2 and "not 'gpt2'" in capsys.readouterr().err
    code = main(["export", str(tiny_dirs["llama"]), "--out", str(tiny_dirs["llama"] / "m.gguf")])
    assert code == 2 and "inside the model" in capsys.readouterr().err
    assert tree_hash(tiny_dirs["llama"]) == before
    (tmp_path / "x.gguf").write_text("keep me")
    code = main(["export", str(tiny_dirs["llama"]), "--out", str(tmp_path / "x.gguf")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x.gguf").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_a_token_routed_model_is_refused(tmp_path, capsys):
    out = tmp_path / "routed"
    assert main(["tokens", "zoo:filler-lm", "--method", "static", "--schedule", "uniform", "--sparsity", "0.3",
                 "--out", str(out)]) == 0
    code = main(["export", str(out), "--out", str(tmp_path / "r.gguf")])
    assert code == 2 and "token-routed" in capsys.readouterr().err
    assert not (tmp_path / "r.gguf").exists()


# --- llama.cpp itself (llama-cpp-python is part of the dev install) ---------------------------------------

def _have_llamacpp() -> bool:
    from layerwise.export.llamacpp import available

    return available()


needs_llamacpp = pytest.mark.skipif(not _have_llamacpp(), reason="llama-cpp-python is not installed")


@needs_llamacpp
@pytest.mark.parametrize("name, tol", [("dense", 1e-3), ("q4", 3e-2), ("mixed", 3e-2), ("width", 1e-3),
                                       ("depth", 1e-3)])
def test_llamacpp_computes_the_same_logits(results, tmp_path, name, tol):
    """The weights are identical; what differs is arithmetic: float32 accumulation order, and for Q4_0 /
    Q8_0 llama.cpp's CPU kernels, which round the activations to 8-bit blocks before each dot product."""
    from layerwise import load
    from layerwise.export import export
    from layerwise.export.llamacpp import compare

    src = "zoo:llama-12l" if name == "dense" else str(results / name)
    out = tmp_path / f"{name}.gguf"
    export(src, "gguf", out, float_type="f32")
    model = load(src).model
    ids = torch.randint(1, 4096, (2, 48), generator=torch.Generator().manual_seed(0))
    r = compare(model, out, ids)
    assert r["max_abs_diff"] <= tol * max(1.0, r["max_abs_logit"]), r
    assert r["top1_agreement"] >= 0.97 and r["flip_margin"] <= 2 * r["max_abs_diff"], r


@needs_llamacpp
def test_a_corrupt_gguf_is_a_one_line_error(tmp_path):
    from layerwise.errors import ConfigError
    from layerwise.export.llamacpp import LlamaCpp

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ConfigError, match="cannot load"):
        LlamaCpp(bad)


# --- compressed-tensors -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_248(results, tmp_path_factory):
    """A hand-edited plan: blocks 0-3 at 8 bits, 4-7 at 4, 8-11 at 2 (group 32, RTN)."""
    from layerwise.plan import Plan

    tmp_path = tmp_path_factory.mktemp("q248")
    plan = Plan.load(results / "q4" / "plan.json")
    for r in plan.rows:
        r.bits = 8 if r.block < 4 else 4 if r.block < 8 else 2
    plan.save(tmp_path / "plan248.json")
    out = tmp_path / "q248"
    assert main(["quantize", "zoo:llama-12l", "--plan", str(tmp_path / "plan248.json"), "--nsamples", "8",
                 "--seqlen", "64", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name, runtime", [("q4", "vllm"), ("mixed", "vllm"), ("248", "transformers")])
def test_compressed_tensors_reload_in_transformers_is_exact(results, mixed_248, tmp_path, name, runtime):
    from transformers import AutoModelForCausalLM

    from layerwise import load

    src = mixed_248 if name == "248" else results / name
    out = tmp_path / f"{name}-ct"
    assert main(["export", str(src), "--format", "compressed-tensors", "--runtime", runtime, "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    bits = sorted({g["weights"]["num_bits"] for g in cfg["config_groups"].values()})
    assert bits == {"q4": [4], "mixed": [4, 8], "248": [2, 4, 8]}[name]
    stock = AutoModelForCausalLM.from_pretrained(out).eval()
    ours = load(str(src)).model
    theirs = dict(stock.named_parameters())
    for n, p in ours.named_parameters():
        if n in theirs:          # the float tensors; quantized linears are held compressed and checked by logits
            assert torch.equal(p, theirs[n]), n
    x = torch.randint(0, 4096, (2, 40))
    with torch.no_grad():
        assert torch.equal(ours(input_ids=x).logits, stock(input_ids=x).logits)


def test_compressed_tensors_refuses_what_vllm_cannot_run(mixed_248, tmp_path, capsys):
    src = mixed_248
    code = main(["export", str(src), "--format", "compressed-tensors", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert code == 2 and "2 bits" in err and "--runtime transformers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()
    code = main(["export", "zoo:llama-tiny", "--format", "compressed-tensors", "--out", str(tmp_path / "d")])
    assert code == 2 and "not a quantized result" in capsys.readouterr().err


def test_fused_sets_need_one_width_for_vllm(results, tmp_path, capsys):
    from layerwise.plan import Plan

    plan = Plan.load(results / "q4" / "plan.json")
    for r in plan.rows:
        r.bits = 8 if r.name.endswith("k_proj") else 4
    plan.save(tmp_path / "p.json")
    src = tmp_path / "qk8"
    assert main(["quantize", "zoo:llama-12l", "--plan", str(tmp_path / "p.json"), "--nsamples", "8",
                 "--seqlen", "64", "--out", str(src)]) == 0
    code = main(["export", str(src), "--format", "compressed-tensors", "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert code == 2 and "fused by vLLM" in err, err
    assert main(["export", str(src), "--format", "compressed-tensors", "--runtime", "transformers",
                 "--out", str(tmp_path / "t")]) == 0


@pytest.mark.parametrize("args, needle", [
    (["--target", "gguf", "--high", "4", "--low", "2"], "--high/--low 2"),
    (["--target", "gguf", "--high", "8", "--low", "4", "--group-size", "100"], "multiple of 32"),
    (["--target", "compressed-tensors", "--bits", "6", "--high", "8", "--low", "5"], "4/8-bit grids"),
    (["--target", "gguf", "--high", "4", "--low", "4", "--asym"], "symmetric"),
    (["--target", "onnx"], "--target must be one of"),
])
def test_quantize_target_refuses_grids_the_runtime_cannot_hold(args, needle, tmp_path, capsys):
    code = main(["quantize", "zoo:llama-tiny", "--out", str(tmp_path / "o")] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


# --- K-quants for 2/3/4/5/6-bit codes -----------------------------------------------------------------------------

@pytest.mark.parametrize("bits, s", [(2, 15 * 2**-6), (3, 31 * 2**-6), (6, 127 * 2**-10)])
def test_k_quant_layout_keeps_the_codes(bits, s):
    """With sub-block scales the K-quant grid holds exactly, the bytes decode to exactly the codes' weights."""
    from layerwise.export.ggml_blocks import k_fits, pack_k

    q = torch.randint(0, 2 ** bits, (3, 512), generator=torch.Generator().manual_seed(bits))
    c = Codes(q, torch.full((3, 16), s), torch.full((3, 16), 2.0 ** (bits - 1)), torch.arange(512) // 32, bits)
    assert k_fits(c)
    t, b = pack_k(c)
    assert t == {2: "Q2_K", 3: "Q3_K", 6: "Q6_K"}[bits] and b.shape == (3, 2 * {2: 84, 3: 110, 6: 210}[bits])
    assert np.array_equal(dequantize(b, t).reshape(3, 512), c.dequantize().numpy())


@pytest.mark.parametrize("bits", [2, 3, 6])
def test_k_quant_error_is_only_scale_rounding(bits):
    from layerwise.export.ggml_blocks import pack_k

    w = torch.randn(6, 768, generator=torch.Generator().manual_seed(0)) * 0.05
    c = codes_of(w, bits, 32, True)
    t, b = pack_k(c)
    ref = c.dequantize().numpy()
    back = dequantize(b, t).reshape(ref.shape)
    assert np.abs(back - ref).max() <= 0.06 * np.abs(ref).max()
    assert np.array_equal(np.sign(back), np.sign(ref))               # every code keeps its side of zero


@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("sym", [True, False])
def test_q4k_q5k_layout_keeps_the_codes(bits, sym):
    """Sub-block scales d·sc and mins dmin·m that six bits hold exactly (one sub-block of each super-block at
    the maximum 63): the bytes decode, by gguf's own dequantizer, to exactly the codes' weights."""
    from layerwise.export.ggml_blocks import k_fits, pack_k

    g = torch.Generator().manual_seed(bits + 10 * sym)
    r, c = 3, 512
    q = torch.randint(0, 2 ** bits, (r, c), generator=g)
    sc = torch.randint(1, 64, (r, c // 32), generator=g).float()
    sc[:, ::8] = 63
    scales = sc * 2**-10
    # symmetric z = 2^(b−1), or a zero point of 1: either way m = sc and dmin = z·d exactly
    z = torch.full_like(sc, 2.0 ** (bits - 1) if sym else 1.0)
    cd = Codes(q, scales, z, torch.arange(c) // 32, bits)
    assert k_fits(cd)
    t, b = pack_k(cd)
    assert t == f"Q{bits}_K" and b.shape == (r, 2 * {4: 144, 5: 176}[bits])
    assert np.array_equal(dequantize(b, t).reshape(r, c), cd.dequantize().numpy())


@pytest.mark.parametrize("bits", [4, 5])
def test_q4k_q5k_error_is_only_scale_rounding_on_asymmetric_gptq_grids(bits):
    from layerwise.export.ggml_blocks import exact_type, pack_k

    w = torch.randn(6, 768, generator=torch.Generator().manual_seed(0)) * 0.05
    c = codes_of(w, bits, 32, False)
    assert exact_type(c) == "Q8_0"                  # exact, but 8.5 bits per weight; Q4_K/Q5_K: 4.5/5.5
    t, b = pack_k(c)
    ref = c.dequantize().numpy()
    back = dequantize(b, t).reshape(ref.shape)
    assert np.abs(back - ref).max() <= 0.03 * np.abs(ref).max()


def _wide_llama(path):
    """A random 2-block Llama whose linears hold whole 256-weight K-quant super-blocks, with the zoo tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from layerwise import zoo

    tok = zoo.load_tokenizer("llama-tiny")
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                                     max_position_embeddings=256))
    m.save_pretrained(path)
    tok.save_pretrained(path)
    return tok


def test_asymmetric_4_bit_result_exports_as_q4k(tmp_path):
    from layerwise.export import export

    _wide_llama(tmp_path / "m")
    assert main(["quantize", str(tmp_path / "m"), "--bits", "4", "--high", "4", "--low", "4", "--asym",
                 "--group-size", "32", "--nsamples", "4", "--seqlen", "32", "--out", str(tmp_path / "q")]) == 0
    exact = export(str(tmp_path / "q"), "gguf", tmp_path / "exact.gguf")
    small = export(str(tmp_path / "q"), "gguf", tmp_path / "k.gguf", k_quants=True)
    k = [r for r in small.records if r.source == "codes"]
    assert {r.type for r in exact.records if r.source == "codes"} == {"Q8_0"}
    assert {r.type for r in k} == {"Q4_K"} and all(0 < r.max_abs_error < 0.02 for r in k)
    assert exact.bytes - small.bytes == sum((272 - 144) * r.shape[0] * r.shape[1] // 256 for r in k)  # per 256 w.


@needs_llamacpp
def test_k_quant_export_runs_in_llamacpp(tmp_path):
    from layerwise import load
    from layerwise.export import export
    from layerwise.export.llamacpp import compare

    tok = _wide_llama(tmp_path / "m")
    assert main(["quantize", str(tmp_path / "m"), "--bits", "2.5", "--high", "3", "--low", "2", "--order",
                 "0,1", "--group-size", "32", "--nsamples", "4", "--seqlen", "32", "--out", str(tmp_path / "q")]) == 0
    exact = export(str(tmp_path / "q"), "gguf", tmp_path / "exact.gguf")
    small = export(str(tmp_path / "q"), "gguf", tmp_path / "k.gguf", k_quants=True)
    kinds = {r.type for r in small.records if r.source == "codes"}
    assert kinds == {"Q2_K", "Q3_K"} and {r.type for r in exact.records if r.source == "codes"} == {"Q4_0"}
    per_256 = {"Q2_K": 84, "Q3_K": 110, "Q4_0": 144}                  # bytes per 256 weights
    size = lambda res: sum(per_256[r.type] * r.shape[0] * r.shape[1] // 256  # noqa: E731
                           for r in res.records if r.source == "codes")
    assert size(small) < 0.7 * size(exact) and small.bytes < exact.bytes
    errs = [r.max_abs_error for r in small.records if r.source == "codes"]
    assert all(0 < e < 0.02 for e in errs)
    r = compare(load(str(tmp_path / "q")).model, tmp_path / "k.gguf",
                torch.randint(1, len(tok), (1, 32), generator=torch.Generator().manual_seed(0)))
    assert r["top1_agreement"] >= 0.9, r
    assert main(["quantize", str(tmp_path / "m"), "--bits", "6", "--high", "6", "--low", "6", "--group-size", "32",
                 "--nsamples", "4", "--seqlen", "32", "--out", str(tmp_path / "q6")]) == 0
    six = export(str(tmp_path / "q6"), "gguf", tmp_path / "k6.gguf", k_quants=True)
    assert {r.type for r in six.records if r.source == "codes"} == {"Q6_K"}
    r = compare(load(str(tmp_path / "q6")).model, tmp_path / "k6.gguf",
                torch.randint(1, len(tok), (1, 32), generator=torch.Generator().manual_seed(0)))
    assert r["top1_agreement"] >= 0.9, r


@needs_llamacpp
@pytest.mark.parametrize("arch, tied", [("qwen2", True), ("qwen2", False), ("mistral", False)])
def test_other_families_match_llamacpp(tmp_path, arch, tied):
    """Qwen2 (q/k/v biases, no q/k permutation, tied head) and Mistral, random weights, through llama.cpp."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from layerwise import load, zoo
    from layerwise.export import export
    from layerwise.export.llamacpp import compare

    tok = zoo.load_tokenizer("llama-tiny")
    common = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256, tie_word_embeddings=tied)
    cfg, cls = ((Qwen2Config(**common), Qwen2ForCausalLM) if arch == "qwen2"
                else (MistralConfig(sliding_window=None, **common), MistralForCausalLM))
    torch.manual_seed(0)
    m = cls(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)                       # biases that matter, not zeros
    m.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    g = export(str(tmp_path / "m"), "gguf", tmp_path / "m.gguf", float_type="f32")
    assert ("output.weight" in {r.gguf for r in g.records}) == (not tied)
    r = compare(load(str(tmp_path / "m")).model, tmp_path / "m.gguf",
                torch.randint(1, len(tok), (2, 40), generator=torch.Generator().manual_seed(1)))
    assert r["max_abs_diff"] <= 1e-3 * max(1.0, r["max_abs_logit"]) and r["top1_agreement"] >= 0.97, r


def test_gguf_target_predicts_the_files_quantized_bytes(tmp_path):
    """Under --target gguf a nominal-bit budget is a file-size budget: the bytes quantize predicts are the
    bytes the quantized tensors take in the exported file."""
    out = tmp_path / "q5"
    assert main(["quantize", "zoo:llama-12l", "--bits", "5", "--high", "8", "--low", "4", "--group-size", "32",
                 "--target", "gguf", "--nsamples", "8", "--seqlen", "64", "--out", str(out)]) == 0
    predicted = json.loads((out / "manifest.json").read_text())["plan"]["gguf_bytes_quantized"]
    from layerwise.export import export

    export(str(out), "gguf", tmp_path / "q5.gguf")
    reader, _ = read_gguf(tmp_path / "q5.gguf")
    quant = [t for t in reader.tensors if t.tensor_type.name in ("Q4_0", "Q5_0", "Q8_0")]
    assert len(quant) == 84 and {t.tensor_type.name for t in quant} == {"Q4_0", "Q8_0"}
    assert sum(int(t.n_bytes) for t in quant) == predicted
    # and it is the size of uniform 5 bits (Q5_0) on the same linears: b + 0.5 bits per weight for each type
    params = sum(int(t.n_elements) for t in quant)
    assert predicted == params * 5.5 / 8
