"""One compression job of benchmarks/peer_llmcompressor.py, run in a fresh process by either tool's
Python (the project's venv or the peer's): load the model, compress it with the given calibration ids
(timing only the compression call), score it on the given evaluation windows with the same code in
both environments, and report time, peak RSS and perplexity as JSON.

    python _peer_job.py layerwise|layerwise-stream|llmcompressor METHOD MODEL_DIR CALIB.pt EVAL.pt|- OUT.json

`layerwise-stream` compresses the model directory block by block into a temporary output directory
(one block in memory; the time includes writing and verifying the result). METHOD `forward` times one
plain forward pass of the calibration ids instead (the floor the compression passes are measured
against). EVAL `-` skips the perplexity (random-weight models).
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time

import torch


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork and exec,
    so a job would inherit the peak of the benchmark process that started it."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int = 16) -> float:
    nll, n = 0.0, 0
    for s in range(0, windows.shape[0], batch):
        x = windows[s:s + batch]
        logp = torch.log_softmax(model(input_ids=x).logits[:, :-1].float(), -1)
        nll += float(-logp.gather(-1, x[:, 1:, None]).sum())
        n += x[:, 1:].numel()
    return math.exp(nll / n)


@torch.no_grad()
def forward_pass(model, calib: torch.Tensor, batch: int = 8):
    for s in range(0, calib.shape[0], batch):
        model(input_ids=calib[s:s + batch], use_cache=False)
    return model


def run_layerwise(model, method: str, calib: torch.Tensor, out: str | None = None):
    from layerwise.pipeline.prune import prune
    from layerwise.pipeline.quantize import quantize

    n, L = calib.shape
    kw = dict(calib=calib, nsamples=n, seqlen=L)
    if out is not None:
        kw.update(out=out, stream=True)
    if method == "sparsegpt50":
        return prune(model, method="sparsegpt", sparsity=0.5, **kw)
    if method == "wanda50":
        return prune(model, method="wanda", sparsity=0.5, **kw)
    if method == "sparsegpt24":
        return prune(model, method="sparsegpt", sparsity=0.5, nm="2:4", **kw)
    if method == "gptq_w4g128":
        return quantize(model, bits=4, high=4, low=4, quantizer="gptq", group_size=128, **kw)
    raise SystemExit(f"unknown method {method}")


def run_llmcompressor(model, method: str, calib: torch.Tensor):
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import WandaPruningModifier
    from llmcompressor.modifiers.quantization import GPTQModifier
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    n, L = calib.shape
    ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    # llm-compressor's pruning modifiers match `ignore` as module names or `re:` patterns only: a plain
    # "lm_head" is silently not ignored and the head gets pruned too (checked), hence the regex
    head = ["re:.*lm_head"]
    recipe = {
        "sparsegpt50": lambda: SparseGPTModifier(sparsity=0.5, mask_structure="0:0", targets=["Linear"],
                                                 ignore=head),
        "wanda50": lambda: WandaPruningModifier(sparsity=0.5, mask_structure="0:0", targets=["Linear"],
                                                ignore=head),
        "sparsegpt24": lambda: SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"],
                                                 ignore=head),
        # its default since 0.6 is static act-order; layerwise's GPTQ here runs without act-order, so
        # both sweep columns in their natural order
        "gptq_w4g128": lambda: GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"], actorder=None),
    }[method]()
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=n, max_seq_length=L)
    return model


def main():
    tool, method, model_dir, calib_f, eval_f, out_f = sys.argv[1:7]
    import tempfile

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    calib = torch.load(calib_f)
    windows = None if eval_f == "-" else torch.load(eval_f)
    stream = tool == "layerwise-stream"
    model = model_dir if stream else AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rss_loaded = peak_rss_mb()
    timings = None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if method == "forward":
            model = forward_pass(model, calib)
        elif tool == "llmcompressor":
            model = run_llmcompressor(model, method, calib)
        else:
            result = run_layerwise(model, method, calib, out=f"{tmp}/out" if stream else None)
            model, timings = result.model, result.timings
        seconds = time.perf_counter() - t0
        rss = peak_rss_mb()
        if stream and windows is not None:
            from layerwise import load

            model = load(f"{tmp}/out").model
        ppl = None
        if windows is not None:
            model.eval()
            ppl = perplexity(model, windows)
    json.dump({"tool": tool, "method": method, "seconds": seconds, "peak_rss_mb": rss,
               "rss_after_load_mb": rss_loaded, "perplexity": ppl, "timings": timings}, open(out_f, "w"))


if __name__ == "__main__":
    main()
