"""layerwise against llm-compressor at realistic widths: random-weight Qwen2 models with the block shapes
of Qwen2.5-0.5B (hidden 896, 14/2 heads, MLP 4864) and Qwen2.5-1.5B (hidden 1536, 12/2 heads, MLP 8960)
and the zoo tokenizer's vocabulary. Wanda 50%, SparseGPT 50% and GPTQ W4 g128 in layerwise (whole
model in memory, and streamed block by block from the model directory) and in llm-compressor, against
one plain forward pass of the same 16 × 512 calibration ids; time of the compression call, peak RSS.

Each job is a fresh process (benchmarks/_peer_job.py) run by the tool's own Python; tools alternate
within a method. `--blocks` sets the depth of each shape (full depth: 24 and 28), `--tools` and
`--methods` what runs, `--append` keeps the results of other shapes and depths.

    bash benchmarks/peer_llmcompressor_venv.sh
    python benchmarks/peer_scaling.py --blocks 0.5b=24 --methods sparsegpt50,gptq_w4g128 \
        --tools layerwise-stream,llmcompressor
    python benchmarks/peer_scaling.py --blocks 1.5b=2 --append
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import md_table, update_section  # noqa: E402
from peer_llmcompressor import verdict  # noqa: E402

HERE = Path(__file__).resolve().parent
SHAPES = {  # hidden, MLP, full depth, heads, KV heads
    "0.5b": (896, 4864, 24, 14, 2),
    "1.5b": (1536, 8960, 28, 12, 2),
}
METHODS = {"wanda50": "Wanda 50%", "sparsegpt50": "SparseGPT 50%", "gptq_w4g128": "GPTQ W4 g128"}
TOOLS = ("layerwise", "layerwise-stream", "llmcompressor")
RESULTS = HERE / "results" / "peer_scaling.json"


def build(root: Path, shape: str, blocks: int) -> tuple[Path, int]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from layerwise import zoo

    hidden, mlp, _, heads, kv = SHAPES[shape]
    tok = zoo.load_tokenizer("llama-12l")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=blocks,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    d = root / f"qwen2-{shape}-{blocks}b"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, sum(p.numel() for p in model.parameters())


def calibration(root: Path, nsamples: int, seqlen: int) -> Path:
    from layerwise import zoo
    from layerwise.data.tokens import calibration_samples

    f = root / "calib.pt"
    torch.save(calibration_samples("stdlib", zoo.load_tokenizer("llama-12l"), nsamples, seqlen, 0), f)
    return f


def job(python: str, tool: str, method: str, d: Path, calib: Path, out: Path) -> dict:
    env = {"OMP_NUM_THREADS": "2", "LAYERWISE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([python, str(HERE / "_peer_job.py"), tool, method, str(d), str(calib), "-", str(out)],
                       capture_output=True, text=True, env=env, timeout=7200)
    if r.returncode != 0:
        raise SystemExit(f"{tool} {method} failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure(a, rows: list[dict]) -> None:
    pythons = {"layerwise": sys.executable, "layerwise-stream": sys.executable, "llmcompressor": a.peer_python}
    blocks = dict(kv.split("=") for kv in a.blocks.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calib = calibration(root, a.nsamples, a.seqlen)
        for shape, nb in blocks.items():
            d, params = build(root, shape, int(nb))
            meta = {"shape": shape, "blocks": int(nb), "params": params,
                    "vocab": json.loads((d / "config.json").read_text())["vocab_size"],
                    "model_mb": sum(f.stat().st_size for f in d.glob("*.safetensors")) / 2**20}
            tools = [t for t in TOOLS if t in a.tools.split(",")]
            have = {r["tool"] for r in rows if (r["shape"], r["blocks"], r["method"]) == (shape, int(nb), "forward")}
            plan = [("forward", t) for t in ("layerwise", "llmcompressor") if t not in have]
            for k, method in enumerate(a.methods.split(",")):
                order = tools if k % 2 == 0 else tools[::-1]      # alternate who goes first
                plan += [(method, t) for t in order]
            for method, tool in plan:
                r = job(pythons[tool], tool, method, d, calib, root / "job.json")
                rows.append({**meta, **r, "date": time.strftime("%Y-%m-%d"), "commit": _commit()})
                print(rows[-1], flush=True)
                if not a.no_write:      # a trial run must not replace the recorded rows
                    RESULTS.write_text(json.dumps(rows, indent=1))   # partial results survive a stop


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return r.stdout.strip() or "unknown"


def render(rows: list[dict], a) -> str:
    out = []
    for shape, nb in dict.fromkeys((r["shape"], r["blocks"]) for r in rows):
        rs = [r for r in rows if (r["shape"], r["blocks"]) == (shape, nb)]
        by = {(r["method"], r["tool"]): r for r in rs}
        m0 = rs[0]
        hidden, mlp, full, heads, kv = SHAPES[shape]
        fwd = {t: by[("forward", t)]["seconds"] for t in ("layerwise", "llmcompressor") if ("forward", t) in by}
        table = []
        for m in METHODS:
            if (m, "llmcompressor") not in by:
                continue
            pc = by[(m, "llmcompressor")]
            lw, st = by.get((m, "layerwise")), by.get((m, "layerwise-stream"))
            cell = lambda r, k: "–" if r is None else r[k]                       # noqa: E731
            ratio = lambda r: "–" if r is None else r["seconds"] / pc["seconds"]  # noqa: E731
            ours = lw or st
            table.append([METHODS[m], cell(lw, "seconds"), cell(st, "seconds"), pc["seconds"], ratio(lw), ratio(st),
                          ours["seconds"] / fwd["layerwise"], pc["seconds"] / fwd["llmcompressor"],
                          cell(lw, "peak_rss_mb"), cell(st, "peak_rss_mb"), pc["peak_rss_mb"],
                          "–" if st is None else st["peak_rss_mb"] / pc["peak_rss_mb"]])
        verdicts = []
        for m in METHODS:
            if (m, "llmcompressor") not in by:
                continue
            pc = by[(m, "llmcompressor")]
            for tool, label in (("layerwise", "in memory"), ("layerwise-stream", "streamed")):
                if (m, tool) in by:
                    r = by[(m, tool)]
                    verdicts.append(f"{METHODS[m]} {label}: time {verdict(r['seconds'], pc['seconds'], tol=0.1)}, "
                                    f"memory {verdict(r['peak_rss_mb'], pc['peak_rss_mb'], tol=0.1)}")
        parts = []
        for m in METHODS:
            r = by.get((m, "layerwise-stream")) or by.get((m, "layerwise"))
            t = (r or {}).get("timings")
            if not t:
                continue
            rest = r["seconds"] - t["forward_s"] - t["stats_s"] - t["solve_s"]
            parts.append(f"{METHODS[m]} {r['seconds']:.0f} s = block forward passes {t['forward_s']:.0f} s "
                         f"({t['forward_s'] / fwd['layerwise']:.2f}× forward) + statistics {t['stats_s']:.0f} s + "
                         f"solve {t['solve_s']:.0f} s + loading, writing, verifying and reporting {rest:.0f} s")
        floor = ("\n\nWhere layerwise's time goes (floor: pruned propagation runs every block twice, ≈ 2× forward "
                 "without the head — a little less here, as the statistics pass stops at the down projection's "
                 "input; the statistics are the Gram matrices, the solve the factorizations and sweeps): "
                 + "; ".join(parts) + ".") if parts else ""
        stamps = list(dict.fromkeys(f"{r['date']} at {r['commit']}" for r in rs if r.get("date")))
        when = (f"measured {' and '.join(stamps)}" if m0.get("date") else
                "measured 2026-12-02, before the streamed-engine changes of 2026-12-03 (in-place factorization, "
                "probe check, statistics pass that stops early, 2048-token batches)")
        out.append(
            f"**Qwen2.5-{shape.upper()} block shape** (hidden {hidden}, MLP {mlp}, {heads}/{kv} heads), "
            f"{m0['blocks']} of {full} blocks: {m0['params'] / 1e6:.0f}M parameters, {m0['model_mb']:.0f} MiB "
            f"fp32; {when}. One forward pass of the calibration set: {fwd['layerwise']:.1f} s (layerwise's transformers), "
            f"{fwd['llmcompressor']:.1f} s (llm-compressor's).\n\n"
            + md_table(["method", "s in memory", "s streamed", "s llm-compressor", "in memory / peer",
                        "streamed / peer", "× forward (ours)", "× forward (peer)", "peak MB in memory",
                        "peak MB streamed", "peak MB llm-compressor", "streamed / peer memory"], table)
            + "\n\nVerdicts (layerwise's, level within 10%): " + "; ".join(verdicts) + "." + floor)
    return (f"Random-weight Qwen2 models, vocabulary {rows[0].get('vocab', 4096)} (the zoo tokenizer's), "
            f"{a.nsamples} × {a.seqlen} calibration ids from one file read by every job; one job per "
            "(method, tool), a fresh process each, tools alternating, one repetition (each job takes minutes; "
            "the 3-repetition medians on `zoo:llama-12l` are in the section above). Time = the compression "
            "call; streamed = `prune`/`quantize` reading the model directory block by block and writing the "
            "result (its time includes writing and the verification reload); peak RSS = the whole process, "
            "libraries included (~0.37 GB). The 0.5B shape runs at its full depth (SparseGPT and GPTQ, streamed "
            "against llm-compressor: the goal's configuration); the 1.5B shape with 2 of its 28 blocks, every "
            "method and mode, to keep the whole run near an hour here: time is linear in depth for all three "
            "plus a fixed part; in-memory peaks grow with the model's bytes.\n\n" + "\n\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", default="0.5b=24,1.5b=28", help="depth per shape, e.g. 0.5b=6,1.5b=3")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tools", default=",".join(TOOLS), help="a subset of " + ",".join(TOOLS))
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--peer-python", default=str(HERE / ".venv-llmcompressor" / "bin" / "python"))
    ap.add_argument("--append", action="store_true",
                    help="keep results/ rows of other shapes, depths, methods and tools")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from results/ without measuring")
    ap.add_argument("--no-write", action="store_true", help="print only: neither results/ nor BENCHMARKS.md")
    a = ap.parse_args()
    if a.render_only:
        rows = json.loads(RESULTS.read_text())
    else:
        if not Path(a.peer_python).exists():
            raise SystemExit(f"{a.peer_python} not found: run `bash benchmarks/peer_llmcompressor_venv.sh` first")
        rows = json.loads(RESULTS.read_text()) if a.append and RESULTS.exists() else []
        sizes = {(k, int(v)) for k, v in (kv.split("=") for kv in a.blocks.split(","))}
        jobs = {(m, t) for m in a.methods.split(",") for t in a.tools.split(",")}
        # rows of the sizes measured now are replaced job by job: other methods' rows stay, and so does
        # the forward pass they are measured against (it is measured only where missing)
        rows = [r for r in rows if (r["shape"], r["blocks"]) not in sizes or (r["method"], r["tool"]) not in jobs]
        measure(a, rows)
    body = render(rows, a)
    print(body)
    if not a.no_write:
        update_section("peer_scaling", body, "Peer: llm-compressor at the 0.5B and 1.5B block shapes",
                       commands=["bash benchmarks/peer_llmcompressor_venv.sh",
                                 "python benchmarks/peer_scaling.py --blocks 0.5b=24 --methods sparsegpt50,gptq_w4g128 "
                                 "--tools layerwise-stream,llmcompressor",
                                 "python benchmarks/peer_scaling.py --blocks 0.5b=24 --methods wanda50 "
                                 "--tools layerwise-stream,llmcompressor --append",
                                 "python benchmarks/peer_scaling.py --blocks 1.5b=2 --append"])


if __name__ == "__main__":
    main()
