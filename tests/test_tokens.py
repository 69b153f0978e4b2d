"""Token routing: the checks every token method must pass (spec 0.6), on a random GQA Llama."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from layerwise.cli import main
from layerwise.tokens import TOKEN_SELECTORS, TokenRouting
from layerwise.tokens.flops import forward_flops

SKIP = [0.0, 0.5, 0.3, 0.4]
FASTV = [0.0, 0.0, 0.5, 0.0]
METHODS = ["random", "static", "fastv", "tome", "ftp", "ftp-hidden", "mod"]


def llama(attn="sdpa", seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=100, max_position_embeddings=512, pad_token_id=0)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def selector(name, model):
    sel = TOKEN_SELECTORS.create(name)
    if sel.trainable:
        torch.manual_seed(1)
        sel.build(model)
        with torch.no_grad():      # a router that is not the identity of its initialisation
            for p in sel.router.parameters():
                p.add_(torch.randn_like(p) * 0.5)
    return sel


def schedule(name):
    return FASTV if TOKEN_SELECTORS.get(name).removes else SKIP


def ids(b=3, n=40, seed=0):
    return torch.randint(1, 100, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", METHODS)
def test_sparsity_zero_is_bit_identical(name):
    m, x = llama(), ids()
    with torch.no_grad():
        ref = m(input_ids=x).logits
        with TokenRouting(m, selector(name, m), [0.0] * 4):
            out = m(input_ids=x).logits
    assert torch.equal(out, ref)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("name", METHODS)
def test_mask_equals_gather(name, attn):
    m, x = llama(attn), ids(seed=3)
    sel = selector(name, m)
    with torch.no_grad():
        dense = m(input_ids=x).logits
        with TokenRouting(m, sel, schedule(name), mode="gather"):
            g = m(input_ids=x).logits
        with TokenRouting(m, sel, schedule(name), mode="mask"):
            k = m(input_ids=x).logits
    assert (g - k).abs().max() <= 1e-4
    assert (g - dense).abs().max() > 1e-3          # it did prune


def test_kept_tokens_see_their_unpruned_rotary_positions():
    m, x = llama(), ids(b=2)
    seen = {}
    attn = m.model.layers[1].self_attn
    h = attn.register_forward_pre_hook(lambda mod, a, kw: seen.__setitem__("cos", kw["position_embeddings"][0]),
                                       with_kwargs=True)
    with torch.no_grad():
        m(input_ids=x)
        dense_cos = seen["cos"].expand(2, -1, -1)
        with TokenRouting(m, selector("static", m), SKIP, record=True) as r:
            m(input_ids=x)
            keep = r.state.kept[1]
    h.remove()
    for b in range(2):
        pos = keep[b].nonzero().squeeze(1)
        assert seen["cos"].shape[1] == len(pos) < x.shape[1]
        assert torch.equal(seen["cos"][b], dense_cos[b, pos])


@pytest.mark.parametrize("name", ["static", "random"])
def test_a_future_token_never_changes_earlier_logits(name):
    """Selectors whose choice does not read token contents are causal end to end."""
    m, x = llama(), ids(b=1, n=48)
    y = x.clone()
    y[0, 30] = (y[0, 30] + 7) % 99 + 1
    with torch.no_grad(), TokenRouting(m, selector(name, m), SKIP):
        a, b = m(input_ids=x).logits, m(input_ids=y).logits
    assert torch.equal(a[0, :30], b[0, :30])
    assert not torch.equal(a[0, 30:], b[0, 30:])


@pytest.mark.parametrize("name", METHODS)
def test_left_padded_batch_equals_each_sample_alone(name):
    m = llama()
    sel = selector(name, m)
    a, b = ids(1, 30, seed=1), ids(1, 22, seed=2)
    batch = torch.zeros(2, 30, dtype=torch.long)
    batch[0], batch[1, 8:] = a[0], b[0]
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :8] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad(), TokenRouting(m, sel, schedule(name)):
        la, lb = m(input_ids=a).logits[0], m(input_ids=b).logits[0]
        both = m(input_ids=batch, attention_mask=mask, position_ids=pos).logits
    assert (both[0] - la).abs().max() <= 1e-4
    assert (both[1, 8:] - lb).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["static", "fastv", "ftp"])
def test_generate_with_cache_equals_the_no_cache_loop(name):
    m = llama()
    sel = selector(name, m)
    x = ids(1, 30, seed=4)
    with torch.no_grad(), TokenRouting(m, sel, schedule(name)) as r:
        a = m.generate(x, max_new_tokens=8, do_sample=False, use_cache=True, output_scores=True,
                       return_dict_in_generate=True)
        with r.frozen_prompt():
            b = m.generate(x, max_new_tokens=8, do_sample=False, use_cache=False, output_scores=True,
                           return_dict_in_generate=True)
    assert torch.equal(a.sequences, b.sequences)
    assert max(float((s - t).abs().max()) for s, t in zip(a.scores, b.scores)) <= 1e-4


@pytest.mark.parametrize("name", ["static", "fastv", "ftp"])
def test_analytic_flops_match_the_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    m, x = llama("eager"), ids(2, 128)
    sel = selector(name, m)
    rp = sum(p.numel() for p in sel.router.parameters()) if sel.trainable else 0
    drop = schedule(name)
    with torch.no_grad(), TokenRouting(m, sel, drop, record=True) as r:
        fc = FlopCounterMode(display=False)
        with fc:
            m(input_ids=x, use_cache=False)
        kept = [[int(v) for v in r.state.kept[i].sum(1)] if i in r.state.kept else [128, 128] for i in range(4)]
    analytic = forward_flops(m, kept, 128, att_feature=sel.needs_attention, router_params=rp,
                             pruned_sites=[i for i, d in enumerate(drop) if d > 0])
    assert abs(fc.get_total_flops() / analytic - 1) < 0.03


def test_bad_schedules_and_models_are_one_line_errors():
    from layerwise.errors import ConfigError

    m = llama()
    with pytest.raises(ConfigError, match="in \\[0, 1\\)"):
        TokenRouting(m, selector("static", m), [0, 1.0, 0, 0])
    with pytest.raises(ConfigError, match="4 blocks"):
        TokenRouting(m, selector("static", m), [0, 0.5])
    from conftest import tiny_model

    with pytest.raises(ConfigError, match="rotary attention"):
        TokenRouting(tiny_model("gpt2"), selector("fastv", m), [0.0, 0.5])


@pytest.mark.parametrize("args, needle", [
    (["--sparsity", "1.2"], "--sparsity"),
    (["--sparsity", "-0.1"], "--sparsity"),
    (["--method", "tome-x"], "unknown token selector"),
    (["--schedule", "best"], "--schedule"),
    (["--method", "fastv", "--site", "0"], "--site"),
    (["--processes", "3"], "--processes"),
    (["--processes", "0"], "--processes"),
])
def test_cli_bad_input(args, needle, tmp_path, capsys):
    code = main(["tokens", "zoo:llama-tiny", "--out", str(tmp_path / "o")] + args)
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_on_a_model_without_rotary_hooks(tiny_dirs, tmp_path, capsys):
    code = main(["tokens", str(tiny_dirs["gpt2"]), "--method", "static", "--schedule", "uniform",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "rotary attention" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_tokens_command_writes_a_model_that_reloads_routed_and_generates(tmp_path, capsys):
    import json

    from layerwise import load
    from layerwise.plan import Plan

    out = tmp_path / "ftp"
    code = main(["tokens", "zoo:filler-lm", "--method", "ftp", "--sparsity", "0.4", "--steps", "4",
                 "--population", "3", "--generations", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    for f in ("token_routing.json", "token_router.safetensors", "plan.json", "manifest.json", "report.md",
              "report_tokens.png", "model.safetensors"):
        assert (out / f).exists(), f
    plan = Plan.load(out / "plan.json")
    drop = [1 - t.keep_ratio for t in plan.tokens]
    assert len(drop) == 4 and drop[0] == 0 and abs(sum(drop) / 4 - 0.4) < 1e-9
    man = json.loads((out / "manifest.json").read_text())
    assert "identical" in man["checks"]["reload"]
    assert man["metrics"]["decode_speedup"] > 0 and man["metrics"]["prefill_speedup"] > 0
    lm = load(str(out))
    routing = lm.model._layerwise_tokens
    assert routing.selector.name == "ftp" and routing.drop == pytest.approx(drop, abs=1e-12)
    x = torch.randint(3, 60, (1, 40))
    with torch.no_grad():
        g = lm.model.generate(x, max_new_tokens=4, do_sample=False)
    assert g.shape == (1, 44)
    # the plan's token rows replay the schedule
    code = main(["tokens", "zoo:filler-lm", "--method", "static", "--plan", str(out / "plan.json"),
                 "--out", str(tmp_path / "replay")])
    assert code == 0, capsys.readouterr().err
    again = Plan.load(tmp_path / "replay" / "plan.json")
    assert [1 - t.keep_ratio for t in again.tokens] == pytest.approx(drop, abs=1e-12)


def test_a_router_for_another_model_is_a_load_error(tmp_path, capsys):
    import shutil

    from layerwise import load
    from layerwise.errors import ModelLoadError

    out = tmp_path / "mod"
    assert main(["tokens", "zoo:filler-lm", "--method", "mod", "--sparsity", "0.3", "--schedule", "uniform",
                 "--steps", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["tokens", "zoo:filler-lm", "--method", "ftp", "--sparsity", "0.3", "--schedule", "uniform",
                 "--steps", "2", "--out", str(other)]) == 0
    shutil.copy(other / "token_router.safetensors", out / "token_router.safetensors")
    with pytest.raises(ModelLoadError, match="router for another model"):
        load(str(out))


def test_ftp_with_the_last_query_feature_is_exact_and_counted():
    from torch.utils.flop_counter import FlopCounterMode

    m, x = llama("eager"), ids(2, 96)
    sel = TOKEN_SELECTORS.create("ftp", attention="last")
    sel.build(m)
    assert sel.needs_attention == "last"
    with torch.no_grad():
        with TokenRouting(m, sel, SKIP, mode="mask"):
            k = m(input_ids=x).logits
        with TokenRouting(m, sel, SKIP, record=True) as r:
            fc = FlopCounterMode(display=False)
            with fc:
                g = m(input_ids=x, use_cache=False).logits
            kept = [[int(v) for v in r.state.kept[i].sum(1)] if i in r.state.kept else [96, 96] for i in range(4)]
    assert (g - k).abs().max() <= 1e-4
    analytic = forward_flops(m, kept, 96, att_feature="last", router_params=sel.router_params_per_token(),
                             pruned_sites=[1, 2, 3])
    assert abs(fc.get_total_flops() / analytic - 1) < 0.03


def test_schedule_search_resumes_to_the_same_result(tmp_path):
    from layerwise.tokens.search import ga_schedule

    target = torch.linspace(0, 0.6, 6).tolist()

    def fitness(d):
        return -sum((a - b) ** 2 for a, b in zip(d, target))

    full, hist = ga_schedule(fitness, 6, 0.3, population=5, generations=6, seed=3)
    calls = {"n": 0}

    def dies(d):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return fitness(d)

    state = tmp_path / "search.json"
    with pytest.raises(KeyboardInterrupt):
        ga_schedule(dies, 6, 0.3, population=5, generations=6, seed=3, state_file=state)
    assert state.exists()
    again, hist2 = ga_schedule(fitness, 6, 0.3, population=5, generations=6, seed=3, state_file=state)
    assert again == full and hist2 == hist
    from layerwise.errors import ConfigError

    with pytest.raises(ConfigError, match="other settings"):
        ga_schedule(fitness, 6, 0.3, population=5, generations=7, seed=3, state_file=state)


def test_router_training_resumes_to_the_same_router(tmp_path):
    from layerwise.tokens.train import RouterTrainConfig, train_router

    m = llama()
    cfg = RouterTrainConfig(steps=4, checkpoint_every=2)

    def batch_at(step):
        return ids(4, 24, seed=100 + step)

    def fresh():
        sel = TOKEN_SELECTORS.create("ftp")
        torch.manual_seed(5)
        sel.build(m)
        return sel

    a = fresh()
    curve = train_router(m, a, SKIP, batch_at, cfg)

    def dies(step):
        if step == 3:
            raise KeyboardInterrupt
        return batch_at(step)

    b = fresh()
    with pytest.raises(KeyboardInterrupt):
        train_router(m, b, SKIP, dies, cfg, work_dir=tmp_path)
    c = fresh()
    again = train_router(m, c, SKIP, batch_at, cfg, work_dir=tmp_path)
    assert [r["loss"] for r in again] == [r["loss"] for r in curve]
    for p, q in zip(a.router.parameters(), c.router.parameters()):
        assert torch.equal(p, q)


def test_two_process_router_training_matches_one_process(tmp_path):
    """accelerate with 2 CPU processes (half of every batch each, gradients averaged) computes the loss and
    the router of one process on the whole batch."""
    import json

    from layerwise import zoo
    from layerwise.pipeline.tokens_run import launch
    from layerwise.tokens.train import STATE

    curves, routers = {}, {}
    for n in (1, 2):
        work = tmp_path / f"w{n}"
        job = {"model": str(zoo.path("filler-lm")), "selector": {"name": "ftp"}, "drop": [0.0, 0.4, 0.4, 0.4],
               "train": {"steps": 3, "checkpoint_every": 3}, "data": {"seqlen": 64, "batch": 4, "seed": 0},
               "work_dir": str(work)}
        launch(job, work, n)
        state = torch.load(work / STATE, weights_only=False)
        assert state["processes"] == n
        curves[n], routers[n] = [r["loss"] for r in state["curve"]], state["router"]
    assert json.loads((tmp_path / "w2" / "router_job.json").read_text())["drop"][1] == 0.4
    assert curves[1] == pytest.approx(curves[2], rel=1e-4)
    for k in routers[1]:
        assert torch.allclose(routers[1][k], routers[2][k], atol=1e-5), k
