from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F

from layerwise.cli import main
from layerwise.distill import TrainConfig, align_loss, train
from layerwise.distill.modules import IntervalStudents
from layerwise.engine import capture_block_inputs
from layerwise.errors import ConfigError
from layerwise.models.adapters import get_adapter
from layerwise.pipeline.depth import collect_states, depth
from layerwise.prune.depth import assemble, parse_remove, remove_blocks, runs_to_intervals, select_blocks
from layerwise.scores.probes import cka, depth_map, ridge_fit, select_intervals
from tests.conftest import tiny_model


def ids(n=2, L=24, seed=0):
    return torch.randint(0, 4096, (n, L), generator=torch.Generator().manual_seed(seed))


def big_tiny(arch="llama", layers=6):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(vocab_size=4096, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=layers, num_attention_heads=4,
                                            num_key_value_heads=2)).eval()
    return LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=layers, num_attention_heads=4,
                                        num_key_value_heads=2)).eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_removal_equals_skipping_blocks_and_reloads(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    m = big_tiny(arch)
    x = ids()
    adapter = get_adapter(m)
    (b,) = capture_block_inputs(m, adapter, x, batch_size=2)
    h = b.hidden
    with torch.no_grad():
        for i, block in enumerate(adapter.block_list()):
            if i not in (1, 2, 4):
                h = adapter.call_block(block, h, b.args, b.kwargs)
        expected = m.lm_head(m.model.norm(h))
    remove_blocks(m, {1, 2, 4})
    assert m.config.num_hidden_layers == 3 and len(m.model.layers) == 3
    assert [blk.self_attn.layer_idx for blk in m.model.layers] == [0, 1, 2]
    if arch == "qwen2":
        assert len(m.config.layer_types) == 3
    with torch.no_grad():
        got = m(input_ids=x).logits
    assert torch.allclose(got, expected, atol=1e-5)
    m.save_pretrained(tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(back(input_ids=x).logits, got)
        # KV-cache decoding after renumbering matches a full forward
        out = back(input_ids=x[:, :-1], use_cache=True)
        step = back(input_ids=x[:, -1:], cache=out.cache, use_cache=True).logits[:, -1]
        assert torch.allclose(step, got[:, -1], atol=1e-4)


def test_gpt2_removal_rewrites_n_layer():
    m = tiny_model("gpt2")
    remove_blocks(m, {0})
    assert m.config.n_layer == 1 and len(m.transformer.h) == 1


def test_interval_bookkeeping():
    assert parse_remove("25%", 12) == 3 and parse_remove("2", 12) == 2 and parse_remove(4, 12) == 4
    for bad in ("0", "100%", "12", "x"):
        with pytest.raises(ConfigError):
            parse_remove(bad, 12)
    assert runs_to_intervals([3, 4, 7], 12) == [{"start": 2, "end": 4, "keep": 2}, {"start": 6, "end": 7, "keep": 6}]
    assert runs_to_intervals([0, 1], 12) == [{"start": 0, "end": 2, "keep": 2}]
    assert select_blocks("last", 2, 6) == [4, 5]
    assert select_blocks("bi", 2, 4, bi=[0.5, 0.1, 0.3, 0.05]) == [1, 3]
    r = select_blocks("random", 3, 12, seed=1)
    assert len(set(r)) == 3 and r == select_blocks("random", 3, 12, seed=1)
    m = big_tiny()
    blocks = list(m.model.layers)
    assemble(m, [{"start": 1, "end": 3}])       # keeps the middle block (2), removes 1 and 3
    assert list(m.model.layers) == [blocks[0], blocks[2], blocks[4], blocks[5]]


def test_ridge_recovers_a_planted_map_and_cka_bounds():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 16, generator=g, dtype=torch.float64)
    W = torch.randn(8, 16, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    Wf, bf = ridge_fit(X, X @ W.T + b, eps=1e-9)
    assert torch.allclose(Wf, W, atol=1e-6) and torch.allclose(bf, b, atol=1e-6)
    assert cka(X, X) == pytest.approx(1.0) and 0 <= cka(X, torch.randn(2000, 5, generator=g)) < 0.1


def test_depth_map_finds_a_planted_redundant_run():
    m = big_tiny(layers=8)
    with torch.no_grad():  # blocks 3-4 add (almost) nothing: an identity-like run
        for i in (3, 4):
            m.model.layers[i].self_attn.o_proj.weight.mul_(1e-3)
            m.model.layers[i].mlp.down_proj.weight.mul_(1e-3)
    states, bi = collect_states(m, ids(8, 32), probe_tokens=200)
    dm = depth_map(states, bi, max_len=2, protect_head=1, protect_tail=1)
    best = select_intervals(dm, 1)[0]
    assert {best["start"], best["end"]} <= {2, 3, 4, 5}
    assert bi[3] < 0.01 and bi[4] < 0.01


def test_align_loss_is_two_minus_two_cos():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    assert align_loss(a, b) == pytest.approx(float((2 - 2 * F.cosine_similarity(a, b, dim=-1)).mean()), rel=1e-5)


def test_students_train_alone_and_resume_exactly(tmp_path, monkeypatch, zoo_tokenizer):
    def run(work, stop=None):
        teacher = big_tiny()
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        module = IntervalStudents(teacher, [(1, 2), (3, 4)])
        cfg = TrainConfig(steps=6, global_batch=4, seqlen=32, lr=1e-3, checkpoint_every=1, warmup=1)
        if stop:
            monkeypatch.setenv("LAYERWISE_FAULT", f"step:{stop}:stop")
            with pytest.raises(KeyboardInterrupt):
                train(module, cfg, zoo_tokenizer, work)
            monkeypatch.delenv("LAYERWISE_FAULT")
            teacher = big_tiny()
            module = IntervalStudents(teacher, [(1, 2), (3, 4)])
        curve = train(module, cfg, zoo_tokenizer, work)
        assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # teacher untouched
        return module, curve

    a, ca = run(tmp_path / "a")
    b, cb = run(tmp_path / "b", stop=3)
    assert [r["loss"] for r in ca] == [r["loss"] for r in cb]
    assert ca[-1]["loss"] < ca[0]["loss"]
    for k in a.students:
        for (n, p), (_, q) in zip(a.students[k].named_parameters(), b.students[k].named_parameters()):
            assert torch.equal(p, q), n


def test_two_process_accelerate_matches_one_process(tmp_path, zoo_tokenizer):
    src = tmp_path / "teacher"
    big_tiny().save_pretrained(src)
    zoo_tokenizer.save_pretrained(src)
    curves = {}
    for nproc in (1, 2):
        job = {"kind": "intervals", "teacher": str(src), "intervals": [[1, 2], [3, 4]], "cpu": True,
               "work_dir": str(tmp_path / f"w{nproc}"),
               "train": {"steps": 4, "global_batch": 4, "seqlen": 32, "lr": 1e-3, "warmup": 1, "checkpoint_every": 4}}
        (tmp_path / f"job{nproc}.json").write_text(json.dumps(job))
        from layerwise.distill.run import launch_command

        cmd = launch_command(tmp_path / f"job{nproc}.json", nproc)
        env = {**os.environ, "LAYERWISE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        curves[nproc] = [x["loss"] for x in json.loads((tmp_path / f"w{nproc}" / "curve.json").read_text())["curve"]]
        assert json.loads((tmp_path / f"w{nproc}" / "curve.json").read_text())["processes"] == nproc
    assert curves[1] == pytest.approx(curves[2], rel=1e-4)


def test_depth_pipeline_family_and_reload(tmp_path):
    from transformers import AutoModelForCausalLM

    r = depth("zoo:llama-tiny", remove=1, select="ppcl", protect=1, max_len=1, heal="distill", steps=3,
              global_batch=4, train_seqlen=32, nsamples=8, seqlen=64, probe_tokens=300, family=True,
              out=tmp_path / "d")
    assert len(r.removed) == 1 and (tmp_path / "d" / "plan.json").exists()
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "d")
    assert back.config.num_hidden_layers == 3
    assert (tmp_path / "d" / "plugins" / "plugins.json").exists()
    import layerwise

    ids = torch.randint(0, 256, (2, 16))
    dense = layerwise.load(str(tmp_path / "d"), depth=4).model
    teacher = layerwise.load("zoo:llama-tiny").model
    assert torch.equal(dense(ids).logits, teacher(ids).logits)
    assert torch.equal(layerwise.load(str(tmp_path / "d"), depth=3).model(ids).logits, back(ids).logits)


@pytest.mark.parametrize("args, needle", [
    (["--remove", "0"], "--remove"),
    (["--remove", "100%"], "--remove"),
    (["--select", "worst"], "unknown depth selector"),
    (["--select", "bi", "--family"], "--family"),
    (["--distill", "--finetune"], "choose one"),
])
def test_cli_bad_input(args, needle, tmp_path, capsys):
    code = main(["depth", "zoo:llama-tiny", "--out", str(tmp_path / "o"), "--nsamples", "4"] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
