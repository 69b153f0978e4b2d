"""Peak memory of pruning a model with 4x the blocks of another of the same width.

Streaming (the default for a model directory) keeps one block in memory; `--in-memory` loads
everything. Each run is a fresh subprocess; peak RSS is its VmHWM (ru_maxrss would include the peak of this
process, which Linux carries across fork and exec).

    python benchmarks/prune_memory.py [--hidden 512] [--method wanda]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, update_section  # noqa: E402

RUNNER = r"""
import json, resource, sys
from layerwise.pipeline.prune import prune
args = json.loads(sys.argv[1])
r = prune(args["src"], method=args["method"], sparsity=0.5, nsamples=16, seqlen=64, out=args["out"],
          stream=None if args["stream"] else False, tokenizer="zoo:llama-tiny")
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024,
                  "sparsity": r.plan.measured_sparsity()}))
"""


def build(root: Path, hidden: int, blocks: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = root / f"llama-h{hidden}-b{blocks}"
    cfg = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=blocks,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=256)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def measure(src: Path, out: Path, method: str, stream: bool) -> dict:
    args = json.dumps({"src": str(src), "out": str(out), "method": method, "stream": stream})
    r = subprocess.run([sys.executable, "-c", RUNNER, args], capture_output=True, text=True,
                       env={**__import__("os").environ, "LAYERWISE_NO_PROGRESS": "1"})
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    rows, res = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for nb in (a.blocks, 4 * a.blocks):
            src = build(root, a.hidden, nb)
            size = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 2**20
            for stream in (True, False):
                m = measure(src, root / f"out-{nb}-{stream}", a.method, stream)
                res[(nb, stream)] = m["peak_mb"]
                rows.append([nb, f"{size:.0f}", "streamed" if stream else "in memory", f"{m['peak_mb']:.0f}"])
                print(rows[-1], flush=True)
    g_stream = res[(4 * a.blocks, True)] / res[(a.blocks, True)] - 1
    g_mem = res[(4 * a.blocks, False)] / res[(a.blocks, False)] - 1
    body = md_table(["blocks", "weights (MB)", "mode", "peak RSS (MB)"], rows)
    body += (f"\n\nPeak RSS growth from {a.blocks} to {4 * a.blocks} blocks ({a.method}, 50%, hidden {a.hidden}): "
             f"**{100 * g_stream:+.1f}% streamed** vs {100 * g_mem:+.1f}% with the whole model in memory. "
             "Peak RSS includes the Python interpreter, torch and transformers (~0.4 GB).")
    print(body)
    if not a.no_write:
        update_section("prune-memory", body, "Pruning memory: streaming blocks from safetensors")


if __name__ == "__main__":
    main()
