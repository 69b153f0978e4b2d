from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwise import zoo
from layerwise.allocate import ALLOCATORS, allocate, fit_budget
from layerwise.cli import main
from layerwise.errors import ConfigError
from layerwise.pipeline.prune import prune
from layerwise.plan import Plan, PlanRow

SMALL = dict(nsamples=8, seqlen=64, batch_size=4)


def make_plan(block_sizes: list[list[int]]) -> Plan:
    rows = []
    for b, sizes in enumerate(block_sizes):
        for j, n in enumerate(sizes):
            rows.append(PlanRow(name=f"b{b}.l{j}", block=b, shape=(1, n)))
    return Plan(rows)


blocks_st = st.lists(st.lists(st.integers(20, 400), min_size=1, max_size=4), min_size=1, max_size=8)


@given(sizes=blocks_st, data=st.data(), name=st.sampled_from(sorted(ALLOCATORS)),
       target=st.floats(0.0, 0.85))
@settings(max_examples=150, deadline=None)
def test_allocators_meet_the_budget_within_bounds(sizes, data, name, target):
    nb = len(sizes)
    scores = {k: data.draw(st.lists(st.floats(0.01, 10), min_size=nb, max_size=nb))
              for k in ("owl", "alpha", "farms", "zeroth_order")}
    plan = make_plan(sizes)
    allocate(name, plan, scores, target, max_sparsity=0.95)
    total = sum(r.params for r in plan.rows)
    zeros = sum(r.zeros_planned for r in plan.rows)
    assert zeros == int(np.floor(target * total + 0.5))          # exact global count
    assert all(0 <= r.sparsity <= 0.95 + 1e-12 for r in plan.rows)  # every ratio in range, < 1
    assert abs(plan.mean_sparsity() - target) <= len(plan.rows) / total  # within one weight per layer


@given(sizes=blocks_st, data=st.data(), name=st.sampled_from(["owl", "alpha", "farms", "ecoflap"]))
@settings(max_examples=60, deadline=None)
def test_allocations_are_monotone_in_the_target(sizes, data, name):
    nb = len(sizes)
    scores = {k: data.draw(st.lists(st.floats(0.01, 10), min_size=nb, max_size=nb))
              for k in ("owl", "alpha", "farms", "zeroth_order")}
    prev = None
    for t in (0.2, 0.4, 0.6, 0.8):
        plan = make_plan(sizes)
        allocate(name, plan, scores, t, max_sparsity=0.95)
        z = np.array([r.zeros_planned for r in plan.rows])
        if prev is not None:
            assert np.all(z >= prev - 1)  # up to one weight of rounding per layer
        prev = z


def test_tiny_layers_stay_within_one_weight_per_layer():
    counts = fit_budget([1, 1, 1], [0.6, 0.6, 0.6], 0.6, hi=0.95)
    assert counts.sum() == 0  # 1.8 requested, caps allow 0: within one weight per layer


def test_fit_budget_water_fills_clipped_layers():
    counts = fit_budget([100, 100, 100], [0.9, 0.5, 0.1], 0.7, hi=0.8)
    assert counts.sum() == 210 and counts.max() <= 80


def test_reference_shapes_of_the_maps():
    plan = make_plan([[100]] * 4)
    allocate("owl", plan, {"owl": [1.0, 2.0, 3.0, 4.0]}, 0.5, owl_lambda=0.08)
    sp = [r.sparsity for r in plan.rows]
    assert sp[0] == pytest.approx(0.58, abs=0.011) and sp[3] == pytest.approx(0.42, abs=0.011)
    plan = make_plan([[100]] * 4)
    allocate("alpha", plan, {"alpha": [2.0, 3.0, 4.0, 5.0]}, 0.5, epsilon=0.2)
    sp = [r.sparsity for r in plan.rows]
    assert sp == sorted(sp) and sp[0] == pytest.approx(0.4, abs=0.011) and sp[3] == pytest.approx(0.6, abs=0.011)
    plan = make_plan([[100]] * 4)
    allocate("ecoflap", plan, {"zeroth_order": [4.0, 3.0, 2.0, 1.0]}, 0.5, p_max=0.6)
    sp = [r.sparsity for r in plan.rows]
    assert max(sp) <= 0.6 and sp == sorted(sp)


def test_infeasible_requests_are_refused_with_a_reason():
    with pytest.raises(ConfigError, match="exceeds --max-sparsity"):
        allocate("owl", make_plan([[10]] * 2), {"owl": [1, 2]}, 0.9, max_sparsity=0.8)
    with pytest.raises(ConfigError, match="below the target"):
        allocate("ecoflap", make_plan([[10]] * 2), {"zeroth_order": [1, 2]}, 0.6, p_max=0.5)
    with pytest.raises(ConfigError, match="needs the 'alpha' score"):
        allocate("alpha", make_plan([[10]] * 2), {}, 0.5)
    with pytest.raises(ConfigError, match="unknown allocation"):
        allocate("magic", make_plan([[10]]), {}, 0.5)


@pytest.mark.parametrize("allocation", ["owl", "alpha", "farms", "ecoflap"])
def test_prune_with_each_allocation(allocation):
    r = prune(zoo.load("llama-tiny"), method="wanda", sparsity=0.6, allocation=allocation, **SMALL)
    total = r.plan.total_params
    assert sum(row.zeros for row in r.plan.rows) == int(np.floor(0.6 * total + 0.5))
    assert all(row.zeros == row.zeros_planned for row in r.plan.rows)
    per_block = {row.block: row.sparsity for row in r.plan.rows}
    assert len(set(np.round(list(per_block.values()), 3))) > 1  # not uniform
    assert all(row.scores for row in r.plan.rows)


def test_streamed_allocation_writes_and_replays(tmp_path):
    src = str(zoo.path("llama-tiny"))
    r = prune(src, method="sparsegpt", sparsity=0.5, allocation="farms", out=tmp_path / "a", **SMALL)
    plan = json.loads((tmp_path / "a" / "plan.json").read_text())
    assert plan["meta"]["allocation"] == "farms"
    r2 = prune(src, plan=str(tmp_path / "a" / "plan.json"), out=tmp_path / "b", **SMALL)
    assert [x.zeros for x in r2.plan.rows] == [x.zeros for x in r.plan.rows]


@pytest.mark.parametrize("args, needle", [
    (["prune", "zoo:llama-tiny", "--allocation", "owl", "--nm", "2:4"], "unstructured"),
    (["prune", "zoo:llama-tiny", "--allocation", "magic"], "unknown allocation"),
    (["prune", "zoo:llama-tiny", "--allocation", "owl", "--sparsity", "0.9", "--max-sparsity", "0.8"],
     "exceeds --max-sparsity"),
    (["analyze", "zoo:llama-tiny", "--scores", "lim,nonsense"], "unknown score"),
    (["analyze", "zoo:llama-tiny", "--xmin", "left"], "--xmin"),
])
def test_cli_errors(args, needle, capsys, tmp_path):
    code = main(args + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_analyze_report(tmp_path, capsys):
    out = tmp_path / "an"
    assert main(["analyze", "zoo:llama-tiny", "--scores", "lim,bi,zd,alpha,farms,owl", "--nsamples", "8",
                 "--seqlen", "64", "--out", str(out)]) == 0
    for f in ("analysis.json", "report.md", "report.html", "scores.png", "esd_alpha.png", "esd_farms.png"):
        assert (out / f).stat().st_size > 0, f
    d = json.loads((out / "analysis.json").read_text())
    assert d["directions"]["alpha"] == "lower = more important"
    assert len(d["block_scores"]["farms"]) == 4
    # the analysis is also a Plan: every linear and block with its scores, no budgets yet
    from layerwise.plan import Plan

    plan = Plan.load(out / "plan.json")
    assert plan.meta["kind"] == "analysis" and len(plan.blocks) == 4
    assert [b.scores["farms"] for b in plan.blocks] == pytest.approx(d["block_scores"]["farms"])
    assert all("alpha" in r.scores and "farms" in r.scores and r.sparsity == 0 for r in plan.rows)
    capsys.readouterr()
    code = main(["prune", "zoo:llama-tiny", "--plan", str(out / "plan.json"), "--nsamples", "4",
                 "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and "is an analysis" in err and not (tmp_path / "p").exists(), err
