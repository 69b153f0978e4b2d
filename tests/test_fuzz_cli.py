"""Fuzzing every option of every command against the CLI contract.

For each drawn command line: exit 0 or 2; on error exactly one `error:` line, last on stderr, and no
traceback; no output directory unless the run succeeded; no partial, backup or lock left behind;
the source model unchanged, byte for byte. The options come from the CLI itself, so a new option
is fuzzed without touching this file. Values that would start legitimately long work (a billion
training steps) are kept small; everything else is drawn from hostile values.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from layerwise.cli import app, main
from conftest import tree_hash

NUMBERS = ["-1", "0", "1", "2", "0.5", "0.99", "1.5", "1e9", "nan", "inf", "-inf", "abc", "", "1e-300", "3:4"]
# Amounts of work: only small valid values, or invalid ones (a valid huge value is a long run, not a bug).
WORK = ["-1", "0", "1", "2", "3", "nan", "inf", "abc", "", "1e9x"]
WORK_OPTIONS = {"nsamples", "seqlen", "steps", "tokens", "global_batch", "batch_size", "zo_samples", "max_windows",
                "max_len", "farms_windows", "farms_rows", "processes", "windows", "repeats", "seconds"}
STRINGS = ["", "xyz", "lim", "lim,zd", "all", "zoo:nope", "re:(", "2:4", "3:2", "0:0", "a:b", "4:8", "uniform", "owl",
           "alpha", "farms", "ecoflap", "taylor", "wanda", "gptq", "rtn", "ppcl", "bi", "random", "last", "reverse",
           "3,0,1", "0,0", "9,9,9", "peak", "mid", "search", "25%", "inf%", "-5%", "1", "-1", "nan", "200%", "stdlib",
           "text:/no/such/file", "hf:", "bogus:x", "pruned", "dense"]
SKIP = {("zoo", "train"), ("demo",)}          # minutes of training by design; covered by their own tests



def commands():
    import typer.main

    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for n, c in cmd.commands.items():
                walk(c, path + [n])
        elif tuple(path) not in SKIP:
            out.append((tuple(path), cmd.params))

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = commands()


def path_values(ctx: dict) -> list:
    return [str(ctx["fresh"].parent / "no" / "such" / "x"), "/sys/layerwise-x", str(ctx["src"]), str(ctx["src"] / "inside"), str(ctx["src"].parent),
            str(ctx["file"]), str(ctx["fresh"]), str(ctx["fresh"]), str(ctx["badjson"]), "", "zoo:llama-tiny"]


def value_for(name: str, draw, ctx: dict):
    if name in ("out", "work_dir", "plan", "tokenizer", "job", "data_file"):
        return draw(st.sampled_from(path_values(ctx)))
    if name in WORK_OPTIONS:
        return draw(st.sampled_from(WORK))
    pool = st.sampled_from(NUMBERS) | st.sampled_from(STRINGS) | st.floats(allow_nan=True).map(repr) \
        | st.integers(-10, 10**6).map(str)
    return draw(pool)


def model_value(draw, ctx: dict) -> str:
    return draw(st.sampled_from([str(ctx["src"])] * 6 + ["zoo:nope", "/no/such", str(ctx["file"]), "",
                                                          "surely-unknown-model-xyz", str(ctx["badjson"])]))


def draw_args(path, params, draw, ctx) -> list[str]:
    args = list(path)
    for p in params:
        if p.param_type_name == "argument":
            args.append(model_value(draw, ctx) if p.name == "model" else value_for(p.name, draw, ctx))
            continue
        flag = p.opts[0]
        if getattr(p, "is_flag", False):
            if draw(st.booleans()):
                args.append(flag)
            continue
        if p.name in ("nsamples", "seqlen") and not draw(st.integers(0, 3)) == 0:
            args += [flag, {"nsamples": "4", "seqlen": "32"}[p.name]]   # keep valid runs fast
            continue
        if p.name == "out" and draw(st.integers(0, 2)) > 0:
            args += [flag, str(ctx["fresh"])]
            continue
        if draw(st.integers(0, 3)) == 0:
            args += [flag, value_for(p.name, draw, ctx)]
    return args


@pytest.fixture(scope="module")
def fuzz_root(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "models" / "src"
    shutil.copytree(tiny_dirs["llama"], src)
    shutil.copytree(tiny_dirs["llama"], root / "pristine")
    (root / "plain.txt").write_text("not a model")
    (root / "bad.json").write_text("{ not json")
    return root


def check_contract(args, code, err, ctx, before):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code in (0, 2), (args, code, err[-2000:])
    assert not any("Traceback" in ln for ln in lines), (args, err[-2000:])
    if code == 2 and lines and lines[-1].startswith("error:"):
        assert sum(ln.startswith("error:") for ln in lines) == 1, (args, lines)
    elif code == 2:  # usage errors from option parsing print the same single line
        raise AssertionError((args, lines))
    if code != 0:
        assert not ctx["fresh"].exists() or not any(ctx["fresh"].iterdir()), (args, "output left behind")
        assert not (ctx["fresh"].parent / "no").exists(), (args, "created the parents of a missing path")
    for parent in (ctx["fresh"].parent, ctx["src"].parent):
        left = [p.name for p in parent.iterdir() if p.name.endswith((".partial", ".backup", ".lock"))]
        assert not left, (args, left)
    if not (code == 0 and "--overwrite-source" in args):   # the one way a user asks to replace the source
        assert tree_hash(ctx["src"]) == before, (args, "source changed")


def _fuzz(path, params, fuzz_root, data, capsys):
    work = Path(tempfile.mkdtemp(dir=fuzz_root))
    ctx = {"src": fuzz_root / "models" / "src", "file": fuzz_root / "plain.txt", "badjson": fuzz_root / "bad.json",
           "fresh": work / "fresh"}
    before = tree_hash(ctx["src"])
    args = draw_args(path, params, data.draw, ctx)
    cwd = os.getcwd()
    os.chdir(work)          # outputs with a default name (export's ./NAME-F16.gguf) land in the scratch dir
    try:
        code = main(args)
        _, err = capsys.readouterr()
        check_contract(args, code, err, ctx, before)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
        if tree_hash(ctx["src"]) != before:
            shutil.rmtree(ctx["src"])
            shutil.copytree(fuzz_root / "pristine", ctx["src"])


@pytest.mark.parametrize("path, params", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
@settings(max_examples=15, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_cli_contract(path, params, fuzz_root, data, capsys):
    _fuzz(path, params, fuzz_root, data, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("path, params", COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
@settings(max_examples=300, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_cli_contract_long(path, params, fuzz_root, data, capsys):
    _fuzz(path, params, fuzz_root, data, capsys)
