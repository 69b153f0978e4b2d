#!/usr/bin/env bash
# Every benchmark in sequence (hours on 2 CPU cores); each rewrites its own section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export LAYERWISE_NO_PROGRESS=1
$PY benchmarks/zoo_cards.py
$PY benchmarks/prune_quality.py --model zoo:llama-12l
$PY benchmarks/prune_speed.py --model zoo:llama-12l
$PY benchmarks/prune_memory.py
$PY benchmarks/analysis_speed.py --model zoo:llama-12l
$PY benchmarks/esd_fit_speed.py
$PY benchmarks/peer_weightwatcher.py --model zoo:llama-12l   # needs: pip install -e ".[peers]"
$PY benchmarks/allocation_quality.py --model zoo:llama-12l
$PY benchmarks/allocation_quality.py --model zoo:llama-tiny
$PY benchmarks/quant_quality.py --model zoo:llama-12l
$PY benchmarks/depth_quality.py --model zoo:llama-12l
$PY benchmarks/width_quality.py --model zoo:llama-12l
