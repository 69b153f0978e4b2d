"""Recipes, the fused driver, and methods registered from outside the package."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from layerwise.cli import main
from conftest import load_weights as weights

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SMALL = {"corpus": "stdlib", "nsamples": 8, "seqlen": 64, "seed": 0, "batch_size": 4}



def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def small(recipe: Path, tmp_path: Path) -> Path:
    """The shipped recipe with a small calibration and at most 2 training steps (for llama-tiny)."""
    d = yaml.safe_load(recipe.read_text())
    d["calibration"] = SMALL
    for st in d["stages"]:
        (kind, opts), = st.items()
        if "steps" in opts:
            opts["steps"] = 2
        if kind == "quantize" and "group_size" in opts:
            opts["group_size"] = 64
        if kind == "search":
            opts.update(epochs=1, tokens=min(opts.get("tokens", 0), 4096), search_windows=8, search_seqlen=32)
    p = tmp_path / recipe.name
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_shipped_recipes_run(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["run", small(recipe, tmp_path), "zoo:llama-tiny", "--out", out], capsys)
    assert code == 0, err
    assert (out / "manifest.json").exists()
    from layerwise.io.load import load_model

    m = load_model(str(out)).model
    with torch.no_grad():
        assert torch.isfinite(m(input_ids=torch.arange(16).view(1, -1)).logits).all()


def test_fused_prune_quantize_equals_two_commands(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cal = ["--nsamples", "8", "--seqlen", "64", "--batch-size", "4"]
    assert run(["prune", "zoo:llama-tiny", "--method", "sparsegpt", "--sparsity", "0.5", *cal, "--out", a],
               capsys)[0] == 0
    assert run(["quantize", a, "--quantizer", "gptq", "--bits", "4", "--high", "4", "--low", "4", "--group-size",
                "64", *cal, "--out", b], capsys)[0] == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"calibration": SMALL, "stages": [
        {"prune": {"method": "sparsegpt", "sparsity": 0.5}},
        {"quantize": {"quantizer": "gptq", "bits": 4, "high": 4, "low": 4, "group_size": 64}}]}))
    code, out, err = run(["run", recipe, "zoo:llama-tiny", "--out", c], capsys)
    assert code == 0 and "fused" in out, err
    wb, wc = weights(b), weights(c)
    assert wb.keys() == wc.keys() and all(torch.equal(wb[k], wc[k]) for k in wb)
    deq = weights(c / "dequantized")
    w = deq["model.layers.0.mlp.down_proj.weight"]
    assert float((w == 0).float().mean()) >= 0.5        # GPTQ kept the pruning mask


def test_unfused_recipe_gives_the_same_weights(tmp_path):
    from layerwise import compress

    rec = {"calibration": SMALL, "stages": [{"prune": {"method": "wanda", "sparsity": 0.5}},
                                            {"quantize": {"quantizer": "rtn", "bits": 4, "high": 4, "low": 4,
                                                          "group_size": 64}}]}
    f = compress("zoo:llama-tiny", rec, out=tmp_path / "f")
    u = compress("zoo:llama-tiny", rec, out=tmp_path / "u", fuse=False)
    assert [s["fused"] for s in f.steps] == [True] and [s["fused"] for s in u.steps] == [False, False]
    wf, wu = weights(tmp_path / "f"), weights(tmp_path / "u")
    assert all(torch.equal(wf[k], wu[k]) for k in wf)


def test_three_blockwise_stages_share_one_sweep(tmp_path):
    """Magnitude 30% (OWL-allocated), then SparseGPT 2:4 on what is left, then 4-bit RTN: one sweep with
    three activation streams, the same weights as three sweeps one after the other."""
    from layerwise import compress

    rec = {"calibration": SMALL, "stages": [
        {"prune": {"method": "magnitude", "sparsity": 0.3, "allocation": "owl"}},
        {"prune": {"method": "sparsegpt", "nm": "2:4"}},
        {"quantize": {"quantizer": "rtn", "bits": 4, "high": 4, "low": 4, "group_size": 64}}]}
    f = compress("zoo:llama-tiny", rec, out=tmp_path / "f")
    u = compress("zoo:llama-tiny", rec, out=tmp_path / "u", fuse=False)
    assert [s["stages"] for s in f.steps] == [["prune", "prune", "quantize"]]
    assert len(u.steps) == 3
    wf, wu = weights(tmp_path / "f"), weights(tmp_path / "u")
    assert wf.keys() == wu.keys() and all(torch.equal(wf[k], wu[k]) for k in wf)


def test_allocation_after_a_fused_stage_is_not_fused(tmp_path):
    from layerwise.driver import schedule
    from layerwise.recipe import load_recipe

    r = load_recipe({"stages": [{"prune": {"sparsity": 0.3}}, {"prune": {"sparsity": 0.5, "allocation": "owl"}},
                                {"quantize": {"bits": 3.5, "order": "lim"}}]})
    assert [[s.kind for s in step] for step in schedule(r)] == [["prune"], ["prune"], ["quantize"]]


@pytest.mark.parametrize("body, needle", [
    ({"stages": [{"prune": {"method": "obs"}}]}, "stages[0].prune.method: unknown pruning method 'obs'"),
    ({"stages": [{"prune": {"sparsity": 1.5}}]}, "stages[0].prune.sparsity"),
    ({"stages": [{"prune": {"sparsty": 0.5}}]}, "stages[0].prune.sparsty"),
    ({"stages": [{"quantize": {"bits": 9}}]}, "stages[0].quantize.bits"),
    ({"stages": [{"shrink": {}}]}, "unknown stage 'shrink'"),
    ({"stages": []}, "non-empty list"),
    ({"calibration": {"nsamples": 0}, "stages": [{"prune": {}}]}, "calibration.nsamples"),
    ({"stages": [{"depth": {"select": "worst"}}]}, "stages[0].depth.select"),
    ({"stages": [{"width": {"criterion": "random"}}]}, "stages[0].width.criterion"),
    ({"steps": []}, "unknown field(s) steps"),
    ({"stages": [{"search": {"flops": 0}}]}, "stages[0].search.flops"),
    ({"stages": [{"search": {"method": "darts"}}]}, "stages[0].search.method: unknown shape search method"),
])
def test_bad_recipes_name_the_field(body, needle, tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(body))
    out = tmp_path / "out"
    code, _, err = run(["run", p, "zoo:llama-tiny", "--out", out], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_broken_yaml_and_missing_recipe(tmp_path, capsys):
    p = tmp_path / "broken.yaml"
    p.write_text("stages: [prune: {method: wanda")
    code, _, err = run(["run", p, "zoo:llama-tiny"], capsys)
    assert code == 2 and len(err) == 1 and "not valid YAML" in err[0]
    code, _, err = run(["run", tmp_path / "nope.yaml", "zoo:llama-tiny"], capsys)
    assert code == 2 and len(err) == 1 and "does not exist" in err[0]
