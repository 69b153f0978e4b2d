"""Plan v2: block and unit rows, replay of depth and width runs, version-1 files, bad plans."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from layerwise.cli import main
from layerwise.plan import Plan
from conftest import load_weights as weights

DEPTH = ["--remove", "1", "--select", "bi", "--nsamples", "8", "--protect", "1"]
WIDTH = ["--params", "0.7", "--adaptive", "--criterion", "taylor", "--nsamples", "8"]



def same(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, [ln for ln in err.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("depth") / "a"
    assert main(["depth", "zoo:llama-tiny", *DEPTH, "--finetune", "--steps", "2", "--global-batch", "2",
                 "--out", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def width_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("width") / "a"
    assert main(["width", "zoo:llama-tiny", *WIDTH, "--out", str(d)]) == 0
    return d


def test_depth_plan_has_typed_block_rows(depth_run):
    plan = Plan.load(depth_run / "plan.json")
    assert plan.to_dict()["version"] == 2 and len(plan.blocks) == 4
    assert len(plan.removed_blocks()) == 1 and plan.intervals()
    assert all("bi" in b.scores for b in plan.blocks)


def test_depth_replay_gives_identical_weights(depth_run, tmp_path, capsys):
    out = tmp_path / "b"
    code, err = run(["depth", "zoo:llama-tiny", "--nsamples", "8", "--protect", "1", "--finetune", "--steps", "2",
                     "--global-batch", "2", "--plan", depth_run / "plan.json", "--out", out], capsys)
    assert code == 0, err
    assert same(depth_run, out)


def test_hand_edited_depth_plan(depth_run, tmp_path, capsys):
    d = json.loads((depth_run / "plan.json").read_text())
    for b in d["blocks"]:
        b["interval"] = None
        b["action"] = "remove" if b["block"] == 2 else "keep"
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(d))
    code, err = run(["depth", "zoo:llama-tiny", "--nsamples", "8", "--protect", "1", "--plan", p, "--out",
                     tmp_path / "e"], capsys)
    assert code == 0, err
    assert Plan.load(tmp_path / "e" / "plan.json").removed_blocks() == [2]


def test_width_plan_has_unit_rows_and_replays(width_run, tmp_path, capsys):
    plan = Plan.load(width_run / "plan.json")
    assert {u.unit for u in plan.units} == {"kv_group", "mlp_channel"} and plan.stages == 1
    out = tmp_path / "b"
    code, err = run(["width", "zoo:llama-tiny", "--plan", width_run / "plan.json", "--out", out], capsys)
    assert code == 0, err
    assert same(width_run, out)


def test_version_1_plans_still_load(tmp_path):
    p = tmp_path / "v1.json"
    p.write_text(json.dumps({"version": 1, "meta": {}, "rows": [
        {"name": "model.layers.0.mlp.up_proj", "block": 0, "shape": [384, 128], "sparsity": 0.5}]}))
    plan = Plan.load(p)
    assert len(plan.rows) == 1 and plan.blocks == [] and plan.units == []


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(version=3), "version 3"),
    (lambda d: d["blocks"].pop(), "another model"),
    (lambda d: d["blocks"][0].update(action="drop"), "keep or remove"),
    (lambda d: d["blocks"][0].update(colour="red"), "blocks[0] has unknown field(s) colour"),
    (lambda d: [b.update(action="remove", interval=None) for b in d["blocks"]], "keep at least one"),
])
def test_bad_depth_plans(depth_run, edit, needle, tmp_path, capsys):
    d = json.loads((depth_run / "plan.json").read_text())
    edit(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    out = tmp_path / "out"
    code, err = run(["depth", "zoo:llama-tiny", "--plan", p, "--out", out], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["units"][0].update(unit="neuron"), "unit kind"),
    (lambda d: d["units"][1].update(removed=[10**6]), "indices must be in"),
    (lambda d: d["units"][0].update(total=99), "another model"),
    (lambda d: d["units"][0].update(block=40), "does not exist"),
    (lambda d: d.pop("units"), "no unit rows"),
])
def test_bad_width_plans(width_run, edit, needle, tmp_path, capsys):
    d = json.loads((width_run / "plan.json").read_text())
    edit(d)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    out = tmp_path / "out"
    code, err = run(["width", "zoo:llama-tiny", "--plan", p, "--out", out], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()
