"""The layering of DESIGN.md (Core v2) holds: import-linter's contract in pyproject.toml is kept."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    r = subprocess.run(cmd + ["--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]


def test_models_layer_knows_no_formats_or_methods():
    """models/ (adapters, files, loader pieces) imports neither io/ nor any method package."""
    for p in (ROOT / "src" / "layerwise" / "models").rglob("*.py"):
        text = p.read_text()
        for bad in ("..io", "...io", "..prune", "..quant", "..zoo", "..pipeline"):
            assert f"from {bad}" not in text and f"from {bad}." not in text, (p, bad)


def test_methods_doc_is_generated_from_the_registries():
    from layerwise.cli.methods import methods_markdown

    assert (ROOT / "docs" / "methods.md").read_text() == methods_markdown(), \
        "docs/methods.md is stale: layerwise methods --markdown > docs/methods.md"
