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
