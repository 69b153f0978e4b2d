"""layerwise against llm-compressor (the leading peer) on the same model and the same calibration ids:
time of the compression step alone, peak RSS of the process, and perplexity through one evaluation.

Each job is a fresh process (benchmarks/_peer_job.py) run by the tool's own Python: the project's venv
for layerwise, benchmarks/.venv-llmcompressor (made by peer_llmcompressor_venv.sh) for llm-compressor,
which pins an older transformers. Jobs alternate A B A B … with nothing else running; medians over
`--repeats`. Calibration: `--nsamples` × `--seqlen` ids sampled once from the stdlib corpus and saved
to a file both read; evaluation: the first `--windows` validation windows of 256 tokens.

    bash benchmarks/peer_llmcompressor_venv.sh && python benchmarks/peer_llmcompressor.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import md_table, update_section  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = {"sparsegpt50": "SparseGPT 50%", "wanda50": "Wanda 50%", "sparsegpt24": "SparseGPT 2:4",
           "gptq_w4g128": "GPTQ W4 g128"}


def inputs(root: Path, model: str, nsamples: int, seqlen: int, windows: int) -> tuple[Path, Path, Path]:
    from layerwise import load
    from layerwise.data.tokens import calibration_samples, eval_windows

    lm = load(model)
    d = root / "model"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    calib, ev = root / "calib.pt", root / "eval.pt"
    torch.save(calibration_samples("stdlib", lm.tokenizer, nsamples, seqlen, 0), calib)
    torch.save(eval_windows("stdlib", lm.tokenizer, 256, "validation", windows), ev)
    return d, calib, ev


def job(python: str, tool: str, method: str, d: Path, calib: Path, ev: Path, out: Path) -> dict:
    env = {"OMP_NUM_THREADS": "2", "LAYERWISE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PATH": "/usr/bin:/bin"}
    r = subprocess.run([python, str(HERE / "_peer_job.py"), tool, method, str(d), str(calib), str(ev), str(out)],
                       capture_output=True, text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{tool} {method} failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text())


def measure(a) -> list[dict]:
    tools = {"layerwise": sys.executable, "llmcompressor": a.peer_python}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d, calib, ev = inputs(root, a.model, a.nsamples, a.seqlen, a.windows)
        for method in a.methods.split(","):
            runs: dict[str, list] = {t: [] for t in tools}
            for k in range(a.repeats):
                for tool, py in tools.items():           # A B A B ...
                    runs[tool].append(job(py, tool, method, d, calib, ev, root / f"{tool}-{method}-{k}.json"))
                    print(runs[tool][-1], flush=True)
            for tool, rs in runs.items():
                rows.append({"method": method, "tool": tool, "seconds": statistics.median(r["seconds"] for r in rs),
                             "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                             "rss_after_load_mb": statistics.median(r["rss_after_load_mb"] for r in rs),
                             "perplexity": rs[0]["perplexity"],
                             "perplexity_spread": max(r["perplexity"] for r in rs) - min(r["perplexity"] for r in rs)})
    return rows


def verdict(ours: float, theirs: float, lower_is_better: bool = True, tol: float = 0.05) -> str:
    """ahead / level / behind for layerwise, with `tol` relative slack counted as level."""
    r = ours / theirs
    if abs(r - 1) <= tol:
        return "level"
    return "ahead" if (r < 1) == lower_is_better else "behind"


def render(rows: list[dict], a) -> str:
    by = {(r["method"], r["tool"]): r for r in rows}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = []
    for m in methods:
        lw, pc = by[(m, "layerwise")], by[(m, "llmcompressor")]
        table.append([METHODS[m], lw["perplexity"], pc["perplexity"],
                      verdict(lw["perplexity"], pc["perplexity"], tol=0.005), lw["seconds"], pc["seconds"],
                      pc["seconds"] / lw["seconds"], verdict(lw["seconds"], pc["seconds"], tol=0.1),
                      lw["peak_rss_mb"], pc["peak_rss_mb"], verdict(lw["peak_rss_mb"], pc["peak_rss_mb"], tol=0.1)])
    return (f"`{a.model}`, {a.nsamples} × {a.seqlen} calibration ids (one file, read by both), perplexity on "
            f"{a.windows} validation windows × 256 by the same code in both environments; each job a fresh "
            f"process, tools alternating, medians of {a.repeats}. llm-compressor 0.14.0.1 (transformers 5.17, "
            "its own venv; pruning with `ignore: re:.*lm_head`, GPTQ W4A16 with `actorder: None`, i.e. the same "
            "configuration as layerwise's); time = the compression call alone (model loading and evaluation "
            "excluded); peak RSS = the whole process (libraries included). Verdicts are layerwise's: quality "
            "level within 0.5%, time and memory level within 10%.\n\n"
            + md_table(["method", "ppl layerwise", "ppl llm-compressor", "quality", "s layerwise",
                        "s llm-compressor", "their time / ours", "time", "peak MB layerwise",
                        "peak MB llm-compressor", "memory"], table)
            + "\n\nThis is the 3.4M-parameter reference model, where fixed costs dominate (peak RSS is each job's "
            "VmHWM; earlier versions read ru_maxrss, which on Linux also counts the peak of the process that "
            "started the job). The 0.5B and 1.5B block shapes are in "
            "the section *Peer: llm-compressor at the 0.5B and 1.5B block shapes*.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:llama-12l")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-python", default=str(HERE / ".venv-llmcompressor" / "bin" / "python"))
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from results/ without measuring")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    if not a.render_only and not Path(a.peer_python).exists():
        raise SystemExit(f"{a.peer_python} not found: run `bash benchmarks/peer_llmcompressor_venv.sh` first")
    res = HERE / "results" / "peer_llmcompressor.json"
    if a.render_only:
        rows = json.loads(res.read_text())
    else:
        rows = measure(a)
    body = render(rows, a)
    print(body)
    if not a.no_write:
        res.write_text(json.dumps(rows, indent=1))
        update_section("peer_llmcompressor", body, "Peer: llm-compressor side by side (time, memory, quality)",
                       commands=["bash benchmarks/peer_llmcompressor_venv.sh",
                                 "python benchmarks/peer_llmcompressor.py"])


if __name__ == "__main__":
    main()
