from __future__ import annotations

import subprocess
import sys

import pytest
from pathlib import Path

from layerwise.cli import main


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, needle", [
    (["eval", "zoo:nope"], "unknown zoo model"),
    (["eval", "./definitely/missing"], "does not exist"),
    (["eval", "surely-unknown-model-xyz"], "unknown model"),
    (["eval", "zoo:llama-tiny", "--data", "text:/no/such/file"], "does not exist"),
    (["eval", "zoo:llama-tiny", "--data", "bogus:x"], "unknown corpus"),
    (["eval", "zoo:llama-tiny", "--seqlen", "1"], "--seqlen"),
    (["eval", "zoo:llama-tiny", "--seqlen", "5000"], "exceeds"),
    (["zoo", "info", "nope"], "unknown zoo model"),
    (["zoo", "train", "nope", "--out", "x"], "unknown zoo model"),
    (["eval"], "Missing argument"),
    (["frobnicate"], "No such command"),
])
def test_errors_are_one_line_with_exit_code_2(args, needle, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and needle in lines[0]


def test_empty_corpus_and_dir_without_weights(tmp_path, tiny_dirs, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, _, err = run(["eval", "zoo:llama-tiny", "--data", f"text:{tmp_path / 'empty.txt'}"], capsys)
    assert code == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    d = tmp_path / "noweights"
    d.mkdir()
    (d / "config.json").write_text((tiny_dirs["llama"] / "config.json").read_text())
    code, _, err = run(["eval", str(d)], capsys)
    assert code == 2 and "no weights" in err and len(err.strip().splitlines()) == 1


def test_version_help_and_examples(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("layerwise ")
    for cmd in (["eval"], ["zoo", "list"], ["zoo", "info"], ["zoo", "train"], ["demo"]):
        code, out, _ = run(cmd + ["--help"], capsys)
        assert code == 0 and "Example: layerwise" in out, cmd


def test_zoo_list_and_eval_json(capsys):
    code, out, _ = run(["zoo", "list", "--json"], capsys)
    assert code == 0 and "llama-12l" in out and "llama-tiny" in out
    import json

    code, out, _ = run(["eval", "zoo:llama-tiny", "--max-windows", "3", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["perplexity"]["windows"] == 3 and d["speed"]["decode_tokens_per_s"] > 0


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "layerwise", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("layerwise")


def test_demo_runs_every_stage_end_to_end(tmp_path):
    from layerwise.demo import run_demo

    r = run_demo("zoo:llama-tiny", out=str(tmp_path / "demo"), max_windows=8, nsamples=8, seqlen=64,
                 heal_steps=2, speed_repeats=1)
    assert set(r) == {"dense", "wanda 50%", "sparsegpt 50%", "gptq 3.25 bits", "depth -2 blocks", "width 70%",
                      "dense bf16", "gguf"}
    g = r.pop("gguf")
    # llama-tiny's MLP has 344 channels: its down_proj rows cannot hold 32-blocks and go to F16
    # (F16 holds a 2-bit grid of fp16 scales exactly, so some of those are exact too)
    assert g["quantized"] == 28 and g["exact"] >= 24 and Path(g["file"]).exists()
    for name, v in r.items():
        assert v["perplexity"] > 1 and v["speed"]["prefill"] > 0, name
        if v.get("out"):
            assert (tmp_path / "demo" / v["out"].split("/")[-1] / "manifest.json").exists()
    # the quantized checkpoint is packed, so it is smaller on disk than the float32 ones
    assert r["gptq 3.25 bits"]["mb_on_disk"] < r["wanda 50%"]["mb_on_disk"]
