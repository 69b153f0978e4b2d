"""report.html: written with every output, self-contained, and rendered by a real browser."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from layerwise.cli import main


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "q"
    assert main(["quantize", "zoo:llama-tiny", "--bits", "3", "--high", "4", "--low", "2", "--nsamples", "8",
                 "--seqlen", "64", "--out", str(out)]) == 0
    return out


def test_every_output_has_a_self_contained_page(result):
    page = (result / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:|//)', page)            # nothing fetched from anywhere
    assert "Plan: linear layers (28)" in page and "model.layers.3.mlp.down_proj" in page
    assert "layerwise quantize zoo:llama-tiny" in page


def test_report_command_rebuilds_and_rejects_non_outputs(result, tmp_path, capsys):
    (result / "report.html").unlink()
    assert main(["report", str(result)]) == 0 and (result / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "not a layerwise output" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_renders_in_headless_chromium(result, tmp_path):
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--window-size=1200,1600", f"--screenshot={shot}"]
    r = subprocess.run([CHROMIUM, *flags, (result / "report.html").as_uri()], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape[:2] == (1600, 1200)
    assert img.std() > 10 and (img < 128).mean() > 0.01                 # text and plots, not a blank page
