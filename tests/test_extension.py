"""Adding a method is one class: registered here, at test time, it works from the CLI and a recipe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field

from layerwise.allocate import ALLOCATORS, Allocator
from layerwise.cli import main
from layerwise.distill.objectives import HEALERS, Heal
from layerwise.prune import PRUNERS, PruneOutput, Pruner
from layerwise.prune.masks import lowest_in_matrix
from layerwise.registry import MethodConfig


class ColumnNorm(Pruner):
    """Prune the weights with the smallest |W| · (1 + column index parity), a deliberately odd criterion."""

    name = "test-colnorm"
    description = "test criterion"
    needs = frozenset({"calibration"})

    class Config(MethodConfig):
        bias: float = Field(1.0, ge=0)

    def prune(self, weight, stats, budget):
        score = weight.abs() * (self.config.bias + stats.mean_sq.sqrt().float().view(1, -1))
        mask = lowest_in_matrix(score, budget.planned_zeros(tuple(weight.shape)))
        return PruneOutput(weight.masked_fill(mask, 0.0), {})


class FrontLoaded(Allocator):
    """Earlier blocks pruned less, later more (linear ramp around the target)."""

    name = "test-ramp"
    description = "test allocator"

    def ratios(self, target, block_params, scores):
        n = len(block_params)
        return target + 0.1 * (np.arange(n) - (n - 1) / 2) / max(1, n - 1)


@pytest.fixture
def registered():
    PRUNERS.register(ColumnNorm)
    ALLOCATORS.register(FrontLoaded)
    yield
    PRUNERS.unregister(ColumnNorm.name)
    ALLOCATORS.unregister(FrontLoaded.name)


def _sparsities(out) -> list[float]:
    plan = json.loads((out / "plan.json").read_text())
    return [r["sparsity"] for r in plan["rows"]]


def test_cli_uses_methods_registered_at_run_time(registered, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "zoo:llama-tiny", "--method", "test-colnorm", "--allocation", "test-ramp",
                 "--sparsity", "0.5", "--nsamples", "8", "--seqlen", "64", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    sp = _sparsities(out)
    assert sp[0] < sp[-1]
    plan = json.loads((out / "plan.json").read_text())
    assert {r["method"] for r in plan["rows"]} == {"test-colnorm"}
    assert abs(plan["meta"]["measured_sparsity"] - 0.5) < 1e-3


def test_help_lists_registered_methods(registered, capsys):
    main(["prune", "--help"])
    out = capsys.readouterr().out
    assert "test-colnorm" in out and "test-ramp" in out


def test_recipe_uses_methods_registered_at_run_time(registered, tmp_path):
    from layerwise import compress

    rec = {"calibration": {"nsamples": 8, "seqlen": 64},
           "stages": [{"prune": {"method": "test-colnorm", "sparsity": 0.4, "allocation": "test-ramp"}}]}
    r = compress("zoo:llama-tiny", rec, out=tmp_path / "out")
    assert r.out is not None and _sparsities(tmp_path / "out")[0] < 0.4


def test_config_errors_name_the_option(registered):
    from layerwise.errors import ConfigError
    from layerwise.prune import get_pruner

    with pytest.raises(ConfigError, match="option 'bias'"):
        get_pruner("test-colnorm", bias=-1)
    with pytest.raises(ConfigError, match="option 'nope'"):
        get_pruner("test-colnorm", nope=1)
    assert get_pruner("test-colnorm", bias=2).config_dict() == {"name": "test-colnorm", "version": 1, "bias": 2.0}


def test_unregistered_after_the_test():
    assert "test-colnorm" not in PRUNERS and "test-ramp" not in ALLOCATORS
    assert torch is not None and yaml is not None


class HiddenMatch(Heal):
    """Heal a width-pruned student by matching the teacher's last hidden state (MSE), a new objective."""

    name = "test-hidden"
    description = "test healing objective"

    def module(self, teacher, student, intervals):
        for p in student.parameters():
            p.requires_grad_(True)
        return _HiddenMSE(student, teacher)

    def healed(self, module, teacher, intervals):
        return module.student.eval()


class _HiddenMSE(torch.nn.Module):
    def __init__(self, student, teacher):
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, ids):
        with torch.no_grad():
            t = self.teacher(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        s = self.student(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        return torch.nn.functional.mse_loss(s, t)


def test_new_healing_objective_runs_from_cli_and_recipe(tmp_path, capsys):
    from layerwise.cli.common import refresh_choices

    HEALERS.register(HiddenMatch)
    try:
        refresh_choices()
        args = ["width", "zoo:llama-tiny", "--params", "0.8", "--nsamples", "4", "--tokens", "1024",
                "--global-batch", "2", "--heal", "test-hidden", "--out", str(tmp_path / "cli")]
        assert main(args) == 0, capsys.readouterr().err
        curve = json.loads((tmp_path / "cli" / "training_curve.json").read_text())
        assert len(curve) >= 1 and all(np.isfinite(r["loss"]) for r in curve)
        meta = json.loads((tmp_path / "cli" / "plan.json").read_text())["meta"]
        assert meta["heal"]["name"] == "test-hidden"
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"stages": [{"width": {"params": 0.8, "tokens": 1024, "global_batch": 2,
                                                                "heal": "test-hidden"}}],
                                          "calibration": {"nsamples": 4}}))
        assert main(["run", str(recipe), "zoo:llama-tiny", "--out", str(tmp_path / "rec")]) == 0, \
            capsys.readouterr().err
    finally:
        HEALERS.unregister(HiddenMatch.name)


def test_bad_healing_options_name_the_field(tmp_path, capsys):
    code = main(["depth", "zoo:llama-tiny", "--nsamples", "4", "--heal", "kd", "--heal-option", "temperature=-1",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "temperature" in err and len(err.strip().splitlines()) == 1, err
    code = main(["width", "zoo:llama-tiny", "--tokens", "100", "--heal", "distill", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "width pruning heals with one of" in err, err
    assert not (tmp_path / "o").exists()
