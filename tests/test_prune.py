from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise import zoo
from layerwise.cli import main
from layerwise.engine.stats import InputStats
from layerwise.errors import ConfigError, LayerwiseError
from layerwise.linalg import fill_lower_from_upper, _reverse_, inverse_cholesky_, largest_remainder
from layerwise.models.adapters import get_adapter
from layerwise.pipeline.prune import prune
from layerwise.plan import Plan
from layerwise.prune import Budget, get_pruner, parse_nm, valid_nm
from layerwise.prune.masks import lowest_in_matrix, lowest_per_row, nm_mask, row_counts
from tests.conftest import tiny_model

METHODS = ["magnitude", "wanda", "sparsegpt"]
SMALL = dict(nsamples=8, seqlen=64, batch_size=4)


# --- masks and solvers on synthetic layers --------------------------------------------------------

@given(r=st.integers(1, 12), c=st.integers(1, 40), frac=st.floats(0, 0.999), seed=st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_exact_count_selection(r, c, frac, seed):
    g = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 3, (r, c), generator=g).float()  # many ties on purpose
    k = int(frac * r * c)
    m = lowest_in_matrix(score, k)
    assert int(m.sum()) == k
    assert torch.equal(m, lowest_in_matrix(score.clone(), k))
    kr = row_counts(r, k)
    mr = lowest_per_row(score, kr)
    assert torch.equal(mr.sum(1), kr) and int(mr.sum()) == k


@given(n=st.integers(1, 7), extra=st.integers(1, 4), groups=st.integers(1, 6), rows=st.integers(1, 6))
@settings(max_examples=40, deadline=None)
def test_nm_masks_are_valid(n, extra, groups, rows):
    m = n + extra
    score = torch.rand(rows, groups * m)
    mask = nm_mask(score, n, m)
    w = torch.ones_like(score).masked_fill(mask, 0)
    assert valid_nm(w, n, m) and int(mask.sum()) == rows * groups * (m - n)


@given(total=st.integers(0, 10_000), weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=20))
def test_largest_remainder_is_exact(total, weights):
    parts = largest_remainder(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)


@pytest.fixture(scope="module")
def outlier_layer():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(128, 128, generator=g) / 12 + torch.eye(128)
    X = torch.randn(2048, 128, generator=g) @ A
    X[:, :3] *= 20
    W = torch.randn(64, 128, generator=g) / 12
    s = InputStats(128, True)
    s.add(X)
    return X, W, s


@pytest.mark.parametrize("p", [0.5, 0.7])
def test_reconstruction_error_order(outlier_layer, p):
    X, W, s = outlier_layer
    err = {}
    for m in METHODS:
        out = get_pruner(m).prune(W, s, Budget(p)).weight
        assert int((out == 0).sum()) == Budget(p).planned_zeros(W.shape)
        err[m] = float((X @ (W - out).T).norm() / (X @ W.T).norm())
    assert err["sparsegpt"] < err["wanda"] < err["magnitude"]


def test_sparsegpt_zero_sparsity_is_a_noop(outlier_layer):
    _, W, s = outlier_layer
    assert torch.equal(get_pruner("sparsegpt").prune(W, s, Budget(0.0)).weight, W)


def test_cholesky_retries_with_more_damping():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 32, generator=g)  # rank 10 < 32
    H = X.T @ X
    H = H - 0.05 * float(torch.diag(H).mean()) * torch.eye(32)  # indefinite: 1% damping is not enough
    U, damp = inverse_cholesky_(H.clone(), 0.01)
    assert damp == pytest.approx(0.1) and torch.isfinite(U).all()
    with pytest.raises(LayerwiseError, match="not positive definite"):
        inverse_cholesky_(-torch.eye(8), 0.01)


def test_inverse_cholesky_factor_matches_float64_reference():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(400, 96, generator=g) * torch.rand(96, generator=g) * 5
    H = X.T @ X * (2 / 400)
    H[5, :] = H[:, 5] = 0                      # a dead input
    U, damp = inverse_cholesky_(H.clone(), 0.01)
    R = H.double().clone()
    R[5, 5] = 1
    R += 0.01 * float(torch.diag(R).mean()) * torch.eye(96, dtype=torch.float64)
    ref = torch.linalg.cholesky(torch.linalg.inv(R), upper=True)
    assert damp == 0.01 and U.dtype == torch.float32
    assert torch.allclose(U.double(), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 90), st.sampled_from([0.0, 0.03, 0.2]), st.integers(0, 2 ** 31 - 1))
def test_inplace_inverse_factor_matches_the_three_step_reference(n, rank, shift, seed):
    """The in-place factor (one Cholesky of the reversed H, one triangular inverse) equals Cholesky →
    inverse → Cholesky at the damping the reference needs, on full-rank, rank-deficient and indefinite
    H with dead inputs, retries included (shifts kept away from a damping level: a nearly singular
    damped H is as inaccurate in float32 either way)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(rank, n, generator=g, dtype=torch.float64)
    H = X.T @ X
    H[:, n // 3] = H[n // 3, :] = 0
    H -= shift * float(H.diagonal().mean()) * torch.eye(n, dtype=torch.float64)
    H = H.float().double()      # the reference starts from the same float32 matrix
    U, damp = inverse_cholesky_(H.float(), 0.01)
    R = H.clone()
    R.diagonal()[R.diagonal() == 0] = 1
    R += damp * float(R.diagonal().mean()) * torch.eye(n, dtype=torch.float64)
    ref = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(R)), upper=True)
    assert torch.equal(U, U.triu())
    assert torch.allclose(U.double(), ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))
    if damp > 0.01:   # the retry was needed: the reference fails one step lower
        R2 = H.clone()
        R2.diagonal()[R2.diagonal() == 0] = 1
        R2 += damp / 10 * float(R2.diagonal().mean()) * torch.eye(n, dtype=torch.float64)
        assert int(torch.linalg.cholesky_ex(R2.float())[1]) != 0


@given(st.integers(1, 40), st.integers(1, 50), st.integers(1, 17))
def test_reverse_and_triangle_restore_are_exact(n, chunk, rchunk):
    A = torch.randn(n, n)
    S = A + A.T
    B = S.clone()
    _reverse_(B, chunk)
    assert torch.equal(B, S.flip(0, 1))
    B = S.clone()
    B.tril_(-1).mul_(7).add_(S.triu())     # garbage below the diagonal, H above
    fill_lower_from_upper(B, rchunk)
    assert torch.equal(B, S)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 3), st.data())
def test_lowest_in_matrix_equals_the_first_k_of_a_stable_sort(r, c, levels, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10**6)))
    # few distinct values (ties, zeros of an earlier mask) or continuous ones
    score = torch.randint(0, levels + 1, (r, c), generator=g).float() if levels else torch.randn(r, c, generator=g)
    k = data.draw(st.integers(0, r * c))
    ref = torch.zeros(r * c, dtype=torch.bool)
    ref[torch.argsort(score.reshape(-1), stable=True)[:k]] = True
    assert torch.equal(lowest_in_matrix(score, k), ref.view(r, c))


# --- whole models ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tok():
    return zoo.load_tokenizer("llama-tiny")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", [None, "2:4", "4:8"])
def test_exact_zeros_and_valid_nm_on_a_trained_model(method, pattern, tok):
    lm = zoo.load("llama-tiny")
    r = prune(lm, method=method, sparsity=0.5, nm=pattern, **SMALL)
    refs = {x.name: x for x in get_adapter(r.model).all_linears()}
    for row in r.plan.rows:
        w = refs[row.name].weight
        assert int((w == 0).sum()) == row.zeros == row.zeros_planned, row.name
        if pattern:
            n, m = parse_nm(pattern)
            assert valid_nm(w, n, m)
    assert r.plan.measured_sparsity() == pytest.approx(0.5, abs=1e-9)
    assert "lm_head" not in {x.name for x in r.plan.rows}


@pytest.mark.parametrize("arch", ["gpt2", "bert", "qwen2", "mistral"])
def test_other_architectures_prune(arch, tok):
    m = tiny_model(arch)
    r = prune(m, method="sparsegpt", sparsity=0.5, nm="2:4", tokenizer=tok, **SMALL)
    for ref in get_adapter(r.model).all_linears():
        assert valid_nm(ref.weight, 2, 4), ref.name  # N:M runs along the input dim, Conv1D included


def test_same_seed_same_masks_and_other_seed_differs(tok):
    masks = []
    for seed in (0, 0, 1):
        r = prune(zoo.load("llama-tiny"), method="wanda", sparsity=0.5, seed=seed, **SMALL)
        masks.append(torch.cat([(x.weight == 0).flatten() for x in get_adapter(r.model).all_linears()]))
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_saved_and_reloaded_logits_identical(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    lm = zoo.load("llama-tiny")
    r = prune(lm, method="sparsegpt", sparsity=0.6, out=tmp_path / "out", **SMALL)
    ids = torch.randint(0, 4096, (2, 40), generator=torch.Generator().manual_seed(5))
    a = r.model(input_ids=ids).logits
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()(input_ids=ids).logits
    assert torch.equal(a, b)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "identical" in man["checks"]["reload"]
    for f in ("plan.json", "report.md", "report_layers.png", "tokenizer.json", "config.json"):
        assert (tmp_path / "out" / f).exists(), f
    assert not list(tmp_path.glob(".*partial"))


def test_streamed_equals_in_memory_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    src = str(zoo.path("llama-tiny"))
    kw = dict(method="sparsegpt", sparsity=0.5, **SMALL)
    prune(src, out=tmp_path / "stream", **kw)
    prune(src, out=tmp_path / "mem", stream=False, **kw)
    monkeypatch.setenv("LAYERWISE_FAULT", "block:2:stop")
    with pytest.raises(KeyboardInterrupt):
        prune(src, out=tmp_path / "resumed", **kw)
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.partial").exists()
    monkeypatch.delenv("LAYERWISE_FAULT")
    r = prune(src, out=tmp_path / "resumed", resume=True, **kw)
    assert r.plan.measured_sparsity() == pytest.approx(0.5)
    from safetensors.torch import load_file

    def weights(d):
        out = {}
        for f in sorted(d.glob("model-*.safetensors")):
            out.update(load_file(f))
        return out

    a, b, c = weights(tmp_path / "stream"), weights(tmp_path / "mem"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    plan = json.loads((tmp_path / "resumed" / "plan.json").read_text())
    assert all(r["zeros"] == r["zeros_planned"] for r in plan["rows"])
    for d in ("stream", "resumed"):   # the probe's activations survive the checkpoint
        man = json.loads((tmp_path / d / "manifest.json").read_text())
        assert man["checks"]["reload"].startswith("streamed reload"), man["checks"]["reload"]


def test_streamed_write_that_changes_a_weight_is_caught_by_the_probe(tmp_path, monkeypatch):
    """The streamed check reloads the written blocks and runs the 64-token probe through them: one
    weight written differently from what the engine computed with fails the run, and nothing is written."""
    from layerwise.engine import store as store_mod

    write = store_mod.ShardWriter.write

    def corrupt(self, index, tensors):
        if index == 1:
            tensors = dict(tensors)
            k = next(k for k in tensors if k.endswith("mlp.down_proj.weight"))
            tensors[k] = tensors[k].clone()
            tensors[k][0, 0] += 1e-3
        return write(self, index, tensors)

    monkeypatch.setattr(store_mod.ShardWriter, "write", corrupt)
    with pytest.raises(LayerwiseError, match="does not reproduce"):
        prune(str(zoo.path("llama-tiny")), method="wanda", sparsity=0.5, out=tmp_path / "out", **SMALL)
    assert not (tmp_path / "out").exists()


def test_plan_replay_with_a_hand_edit(tmp_path, tok):
    prune(zoo.load("llama-tiny"), method="wanda", sparsity=0.5, out=tmp_path / "a", **SMALL)
    plan = json.loads((tmp_path / "a" / "plan.json").read_text())
    target = "model.layers.2.mlp.up_proj"
    for row in plan["rows"]:
        if row["name"] == target:
            row["sparsity"] = 0.3
            row["method"] = "magnitude"
    (tmp_path / "edited.json").write_text(json.dumps(plan))
    r2 = prune(zoo.load("llama-tiny"), plan=str(tmp_path / "edited.json"), **SMALL)
    row = r2.plan.by_name()[target]
    assert row.method == "magnitude" and row.zeros == round(0.3 * row.params)
    w = dict((x.name, x.weight) for x in get_adapter(r2.model).all_linears())[target]
    assert int((w == 0).sum()) == row.zeros


def test_target_selection(tok):
    r = prune(zoo.load("llama-tiny"), method="magnitude", sparsity=0.5, targets=[r"re:mlp\.(gate|up)_proj"],
              **SMALL)
    assert {x.name.rsplit(".", 1)[-1] for x in r.plan.rows} == {"gate_proj", "up_proj"}
    q = get_adapter(r.model).linears(0)[0]
    assert int((q.weight == 0).sum()) == 0
    with pytest.raises(ConfigError, match="matches no linear"):
        prune(zoo.load("llama-tiny"), targets=["nonexistent_proj"], **SMALL)
    with pytest.raises(ConfigError, match="regular expression"):
        prune(zoo.load("llama-tiny"), targets=["re:("], **SMALL)


def test_plan_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")
    (tmp_path / "p.json").write_text(json.dumps({"rows": [{"name": "model.layers.0.mlp.up_proj",
                                                           "block": 0, "shape": [344, 128], "sparsity": 1.5}]}))
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        prune(zoo.load("llama-tiny"), plan=str(tmp_path / "p.json"), **SMALL)
    (tmp_path / "q.json").write_text(json.dumps({"rows": [{"name": "model.layers.9.mlp.up_proj",
                                                           "block": 9, "shape": [344, 128]}]}))
    with pytest.raises(ConfigError, match="names no linear"):
        prune(zoo.load("llama-tiny"), plan=str(tmp_path / "q.json"), **SMALL)


# --- bad input through the CLI: one line, exit 2, no output directory ---------------------------

@pytest.fixture
def nan_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("nan") / "m"
    lm = zoo.load("llama-tiny")
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


@pytest.mark.parametrize("extra, needle", [
    (["--sparsity", "1.0"], "[0, 1)"),
    (["--sparsity", "-0.1"], "[0, 1)"),
    (["--nm", "4:4"], "1 <= N < M"),
    (["--nm", "5:4"], "1 <= N < M"),
    (["--nm", "two:four"], "N:M"),
    (["--method", "obs"], "unknown pruning method"),
    (["--targets", "no_such_proj"], "matches no linear"),
    (["--plan", "/no/such/plan.json"], "does not exist"),
    (["--calib", "text:/no/such/dir"], "does not exist"),
])
def test_cli_bad_input(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    code = main(["prune", "zoo:llama-tiny", "--out", str(out), "--nsamples", "4", "--seqlen", "32"] + extra)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_cli_nan_activations(tmp_path, capsys, nan_model):
    out = tmp_path / "out"
    code = main(["prune", str(nan_model), "--out", str(out), "--nsamples", "4", "--seqlen", "32"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_cli_prune_end_to_end(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["prune", "zoo:llama-tiny", "--method", "wanda", "--nm", "2:4", "--out", str(out),
                 "--nsamples", "8", "--seqlen", "64"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "measured 0.5000" in stdout and "solve" in stdout
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] is None or "prune" in man["command"]
    assert man["options"]["nm"] == "2:4" and man["seed"] == 0
    assert {"forward_s", "stats_s", "solve_s"} <= set(man["timings"])
    code = main(["prune", "zoo:llama-tiny", "--out", str(out), "--nsamples", "4", "--seqlen", "32"])
    assert code == 2 and "already exists" in capsys.readouterr().err


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 3), st.data())
def test_lowest_per_row_equals_a_stable_sort_per_row(r, c, levels, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10**6)))
    score = torch.randint(0, levels + 1, (r, c), generator=g).float() if levels else torch.randn(r, c, generator=g)
    if data.draw(st.booleans()):
        score[0, 0] = float("nan")
    k_row = row_counts(r, data.draw(st.integers(0, r * c)))
    order = torch.argsort(score, dim=1, stable=True)
    ref = torch.zeros(r, c, dtype=torch.bool)
    for i in range(r):
        ref[i, order[i, : int(k_row[i])]] = True
    assert torch.equal(lowest_per_row(score, k_row), ref)


def test_default_calibration_batch_holds_at_most_2048_tokens():
    from layerwise.pipeline.blockwise import default_batch

    assert [default_batch(n) for n in (64, 256, 512, 1024, 4096)] == [8, 8, 4, 2, 1]
