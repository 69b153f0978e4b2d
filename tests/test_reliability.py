"""The user's data is never touched and every failure is one line (exit 2), nothing half-written.

Covers every command that writes: overlapping output paths, corrupt checkpoints, unwritable
locations, injected disk faults (process file-size limit and ENOSPC), concurrent writers, and
signals (SIGKILL/SIGTERM/SIGINT) at deterministic points of the computation, then `--resume`.
"""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerwise.cli import main
from conftest import tree_hash, load_weights as weights

FAST = {
    "prune": ["--nsamples", "4", "--seqlen", "32"],
    "quantize": ["--bits", "4", "--group-size", "32", "--nsamples", "4", "--seqlen", "32"],
    "depth": ["--remove", "1", "--select", "bi", "--nsamples", "4"],
    "width": ["--params", "0.7", "--nsamples", "4"],
    "analyze": ["--scores", "lim,zd", "--nsamples", "4", "--seqlen", "32"],
}
WRITERS = tuple(FAST)
MODEL_WRITERS = ("prune", "quantize", "depth", "width")



def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in Path(parent).iterdir()
                  if p.name.startswith(".") and p.name.endswith((".partial", ".backup", ".lock")))


def run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [ln for ln in err.splitlines() if ln.strip()]


def assert_one_line_error(code, err, needle=None, strict=True):
    """Exit 2 and one error line. `strict`: nothing else on stderr (failures before any work);
    otherwise progress lines of the work done so far may precede the error, which comes last."""
    assert code == 2, err
    assert not any("Traceback" in ln for ln in err), err
    assert err and err[-1].startswith("error:") and sum(ln.startswith("error:") for ln in err) == 1, err
    if strict:
        assert len(err) == 1, err
    if needle is not None:
        assert needle in err[-1], err


@pytest.fixture
def src(tmp_path, tiny_dirs):
    d = tmp_path / "models" / "src"
    shutil.copytree(tiny_dirs["llama"], d)
    return d


def cmd(name, model, out, *extra):
    return [name, str(model), *FAST[name], "--out", str(out), *extra]


# --- overlapping outputs -------------------------------------------------------------------------

@pytest.mark.parametrize("command", WRITERS)
@pytest.mark.parametrize("kind", ["equal", "inside", "contains", "symlink", "symlinked-source"])
def test_output_overlapping_the_source_is_refused(command, kind, src, tmp_path, capsys):
    before = tree_hash(src)
    model = src
    if kind == "equal":
        out = src
    elif kind == "inside":
        out = src / "pruned"
    elif kind == "contains":
        out = src.parent
    elif kind == "symlink":
        out = tmp_path / "link"
        out.symlink_to(src)
    else:
        model = tmp_path / "model-link"
        model.symlink_to(src)
        out = src
    code, _, err = run(cmd(command, model, out, "--overwrite"), capsys)
    assert_one_line_error(code, err)
    assert "choose another directory" in err[0]
    assert tree_hash(src) == before
    assert leftovers(src.parent) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["prune", "quantize", "analyze"])
def test_output_over_other_inputs_is_refused(command, src, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text " * 2000)
    before = tree_hash(corpus)
    code, _, err = run(cmd(command, src, corpus / "out", "--calib", f"text:{corpus}"), capsys)
    assert_one_line_error(code, err, "calibration corpus")
    assert tree_hash(corpus) == before


def test_overwrite_source_replaces_the_model_in_place_after_verifying(src, capsys):
    code, _, err = run(cmd("prune", src, src, "--overwrite-source", "--sparsity", "0.5"), capsys)
    assert code == 0, err
    assert (src / "plan.json").exists() and (src / "manifest.json").exists()
    assert leftovers(src.parent) == []
    from layerwise.io.load import load_model

    m = load_model(str(src)).model
    w = m.model.layers[0].mlp.down_proj.weight
    assert abs(float((w == 0).float().mean()) - 0.5) < 0.01


def test_overwrite_source_is_not_an_option_of_analyze(src, capsys):
    code, _, err = run(cmd("analyze", src, src, "--overwrite-source"), capsys)
    assert_one_line_error(code, err, "--overwrite-source")


# --- corrupt inputs ------------------------------------------------------------------------------

def _truncate(d: Path):
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "model.safetensors"


def _bad_header(d: Path):
    f = d / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[8:16] = b"{{{{{{{{"
    f.write_bytes(bytes(b))
    return "model.safetensors"


def _huge_header_length(d: Path):
    f = d / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[0:8] = (2**62).to_bytes(8, "little")
    f.write_bytes(bytes(b))
    return "model.safetensors"


def _trailing(d: Path):
    with open(d / "model.safetensors", "ab") as f:
        f.write(b"\0" * 100)
    return "model.safetensors"


def _bad_config(d: Path):
    (d / "config.json").write_text('{"model_type": "llama", ')
    return "config.json"


def _shape_mismatch(d: Path):
    c = json.loads((d / "config.json").read_text())
    c["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(c))
    return "config.json"


def _bad_tokenizer(d: Path):
    (d / "tokenizer.json").write_text("not json")
    return "tokenizer"


CORRUPTIONS = {"truncated": _truncate, "bad-header": _bad_header, "huge-header": _huge_header_length,
               "trailing-bytes": _trailing, "bad-config": _bad_config, "shape-mismatch": _shape_mismatch,
               "bad-tokenizer": _bad_tokenizer}


@pytest.mark.parametrize("command", WRITERS + ("eval",))
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoint_is_one_line_naming_the_file(command, corruption, src, tmp_path, capsys):
    needle = CORRUPTIONS[corruption](src)
    before = tree_hash(src)
    out = tmp_path / "out"
    args = ["eval", str(src), "--max-windows", "2"] if command == "eval" else cmd(command, src, out)
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, needle)
    assert not out.exists() and leftovers(tmp_path) == []
    assert tree_hash(src) == before


# --- unwritable locations and disk faults ----------------------------------------------------------

@pytest.mark.parametrize("command", WRITERS + ("zoo train",))
def test_unwritable_output_location(command, src, capsys):
    """Fails at once, before any work (zoo train would otherwise train for an hour first)."""
    probe = Path("/sys/layerwise-probe")
    try:
        probe.mkdir()
        probe.rmdir()
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    args = ["zoo", "train", "llama-tiny", "--out", "/sys/layerwise-out"] if command == "zoo train" else \
        cmd(command, src, "/sys/layerwise-out")
    code, _, err = run(args, capsys)
    assert_one_line_error(code, err, "/sys")


@pytest.mark.parametrize("command", WRITERS)
def test_no_space_left_while_writing(command, src, tmp_path, capsys, monkeypatch):
    """ENOSPC from whichever library writes (safetensors for weights, json for analysis)."""
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    import safetensors.torch

    import layerwise.io as lio

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    monkeypatch.setattr(lio, "write_json", full)
    before = tree_hash(src)
    out = tmp_path / "out"
    code, _, err = run(cmd(command, src, out), capsys)
    assert_one_line_error(code, err, "no space left", strict=False)
    assert not out.exists() and leftovers(tmp_path) == []
    assert tree_hash(src) == before


def _subprocess(args, env=None, fsize: int | None = None, timeout=600):
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    e = {**os.environ, "LAYERWISE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "layerwise", *map(str, args)], capture_output=True, text=True,
                          env=e, preexec_fn=limit, timeout=timeout)


@pytest.mark.parametrize("command", WRITERS)
def test_file_size_limit_while_writing(command, src, tmp_path):
    """A real kernel fault (EFBIG from RLIMIT_FSIZE) in a child process, for every writing command."""
    from layerwise.data.tokens import calibration_samples
    from layerwise.io.load import load_model

    calibration_samples("stdlib", load_model(str(src)).tokenizer, 4, 32, 0)  # token cache written beforehand
    before = tree_hash(src)
    out = tmp_path / "out"
    r = _subprocess(cmd(command, src, out), fsize=16 * 1024)
    assert_one_line_error(r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()], "too large",
                          strict=False)
    assert not out.exists() and leftovers(tmp_path) == []
    assert tree_hash(src) == before


# --- concurrency --------------------------------------------------------------------------------

HOLD = ("import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n")


def test_second_writer_of_the_same_output_fails_readers_are_not_blocked(src, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / ".out.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run(cmd("prune", src, out), capsys)
        assert_one_line_error(code, err, "another layerwise run is writing")
        assert not out.exists()
        # the same source, another output: reading is never locked
        code, _, err = run(cmd("prune", src, tmp_path / "other"), capsys)
        assert code == 0, err
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    code, _, err = run(cmd("prune", src, out), capsys)
    assert code == 0, err
    assert leftovers(tmp_path) == []


def test_two_real_runs_on_one_output(src, tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "layerwise", *cmd("prune", src, out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "LAYERWISE_NO_PROGRESS": "1"}) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(e for c, e in results if c == 2).strip().splitlines()
    assert len(loser) == 1 and ("another layerwise run" in loser[0] or "already exists" in loser[0]), loser
    assert (out / "model.safetensors.index.json").exists() and leftovers(tmp_path) == []


# --- signals and resume ---------------------------------------------------------------------------


def same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


SIGNAL_CODES = {"KILL": -9, "TERM": 143, "INT": 130}
RUNS = {  # what each command runs, where the fault fires, and how it continues
    "prune": (FAST["prune"], "block:1", ["--resume"]),
    "quantize": (FAST["quantize"], "block:1", ["--resume"]),
    "depth": (FAST["depth"] + ["--finetune", "--steps", "3", "--global-batch", "2"], "step:1", []),
    "width": (FAST["width"] + ["--tokens", str(3 * 2 * 256), "--global-batch", "2"], "step:1", []),
    "analyze": (FAST["analyze"], "block:1", []),
}


def _signal_case(command, sig, src, tmp_path):
    args, where, again = RUNS[command]
    before = tree_hash(src)
    ref = tmp_path / "ref"
    r = _subprocess([command, src, *args, "--out", ref])
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    r = _subprocess([command, src, *args, "--out", out], env={"LAYERWISE_FAULT": f"{where}:{sig}"})
    assert r.returncode == SIGNAL_CODES[sig], r.stderr[-3000:]
    if sig != "KILL":
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not out.exists()
    assert tree_hash(src) == before
    if command in ("prune", "quantize") and sig != "KILL":
        assert (tmp_path / ".out.partial").exists() and "--resume" in r.stderr
    r = _subprocess([command, src, *args, "--out", out, *again])
    assert r.returncode == 0, r.stderr[-3000:]
    assert leftovers(tmp_path) == []
    if command == "analyze":
        a, b = (json.loads((d / "analysis.json").read_text()) for d in (ref, out))
        assert a["block_scores"] == b["block_scores"]
    else:
        same_weights(ref, out)
    assert tree_hash(src) == before


@pytest.mark.parametrize("command, sig", [("prune", "KILL"), ("quantize", "TERM"), ("depth", "INT"),
                                          ("width", "KILL"), ("analyze", "TERM")])
def test_signal_then_rerun_gives_identical_result(command, sig, src, tmp_path):
    _signal_case(command, sig, src, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("command", WRITERS)
@pytest.mark.parametrize("sig", ["KILL", "TERM", "INT"])
def test_every_signal_for_every_command(command, sig, src, tmp_path):
    _signal_case(command, sig, src, tmp_path)


def test_help_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m layerwise prune --help | head -3", shell=True, capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in r.stderr and "Error" not in r.stderr, r.stderr
    assert "Usage" in r.stdout


@pytest.mark.parametrize("value", ["inf%", "nan%", "-inf", "1e999%", "abc", "0.5%x"])
def test_non_finite_depth_amount(value, src, tmp_path, capsys):
    code, _, err = run(["depth", src, "--remove", value, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "--remove")
