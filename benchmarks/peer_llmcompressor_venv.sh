#!/usr/bin/env bash
# The peer's own virtualenv for benchmarks/peer_llmcompressor.py: llm-compressor pins an older
# transformers (<= 5.17) and compressed-tensors 0.19, so it cannot share the project's environment.
# torch is installed first and pinned, so that pip never resolves a CUDA build for it.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv-llmcompressor}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q "llmcompressor==0.14.0.1"
"$VENV/bin/python" - <<'EOF'
import torch, transformers, llmcompressor
assert torch.__version__.startswith("2.13.0"), f"pip replaced torch: {torch.__version__}"
print(f"llm-compressor {llmcompressor.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
EOF
