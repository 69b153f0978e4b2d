"""Real speed and memory: prefill and decode tokens/s, peak memory, parameters, bytes on disk.

Timings are medians of several repetitions after a warm-up. On a shared CPU they are noisy: compare
models by ratios measured side by side in one process (`bench`), not across runs.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch


@dataclass
class SpeedResult:
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    prefill_len: int
    decode_len: int
    repeats: int
    peak_rss_mb: float
    threads: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


class PeakRSS:
    """Samples this process's resident memory in a thread; `peak` is the maximum seen (bytes)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.proc = psutil.Process(os.getpid())
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def count_parameters(model: torch.nn.Module, nonzero: bool = False) -> int:
    if nonzero:
        return int(sum(int((p != 0).sum()) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def model_bytes(model: torch.nn.Module) -> int:
    seen = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def bytes_on_disk(model: torch.nn.Module, path: str | os.PathLike | None = None) -> int:
    """Bytes of the weight files in `path`, or of the model saved as safetensors when in memory."""
    if path is not None:
        p = Path(path)
        files = [f for f in p.iterdir() if f.suffix in (".safetensors", ".bin")] if p.is_dir() else []
        if files:
            return sum(f.stat().st_size for f in files)
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return sum(f.stat().st_size for f in Path(d).iterdir() if f.suffix in (".safetensors", ".bin"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def prefill_time(model, ids: torch.Tensor, repeats: int = 5) -> float:
    device = next(model.parameters()).device
    ids = ids.to(device)
    return _median_time(lambda: model(input_ids=ids, use_cache=False), repeats, device)


@torch.no_grad()
def decode_time(model, prompt: torch.Tensor, new_tokens: int = 64, repeats: int = 3) -> float:
    """Seconds for `new_tokens` greedy steps with the KV cache (the prompt's prefill not counted)."""
    device = next(model.parameters()).device
    prompt = prompt.to(device)

    def run():
        out = model(input_ids=prompt, use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=nxt, cache=cache, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        _sync(device)
        return time.perf_counter() - t0

    run()
    return statistics.median(run() for _ in range(repeats))


def side_by_side(models: dict, prompt: torch.Tensor, repeats: int = 5, decode_tokens: int = 64) -> dict:
    """Median prefill and decode tokens/s of several models, repetitions interleaved so that machine
    noise hits every model alike. `prompt` is [batch, L]; decode tokens/s counts every sequence."""
    runs = {n: {"prefill": [], "decode": []} for n in models}
    for _ in range(repeats):
        for n, m in models.items():
            runs[n]["prefill"].append(prompt.numel() / prefill_time(m, prompt, repeats=3))
            runs[n]["decode"].append(decode_tokens * prompt.shape[0]
                                     / decode_time(m, prompt[:, :32], decode_tokens, repeats=2))
    return {n: {k: statistics.median(v) for k, v in r.items()} for n, r in runs.items()}


@torch.inference_mode()
def interleaved_times(call, variants: dict, repeats: int) -> dict[str, float]:
    """Median seconds of `call()` under each variant — None (the model as it is) or an object with
    install()/remove() (token routing, encoder reduction) — run A B C A B C … after one warm-up round,
    so machine noise hits every variant alike."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for k in range(repeats + 1):
        for key, variant in variants.items():
            if variant is not None:
                variant.install()
            try:
                t0 = time.perf_counter()
                call()
                if k:
                    times[key].append(time.perf_counter() - t0)
            finally:
                if variant is not None:
                    variant.remove()
    return {k: statistics.median(v) for k, v in times.items()}


def measure_speed(model, ids: torch.Tensor, causal: bool, decode_len: int = 64, repeats: int = 5,
                  attention_mask: torch.Tensor | None = None) -> SpeedResult:
    """`ids`: [1, L] prompt tokens. Prefill = one forward of L tokens; decode = cached greedy steps."""
    device = next(model.parameters()).device
    with PeakRSS() as mem:
        if causal:
            t_pre = prefill_time(model, ids, repeats)
            t_dec = decode_time(model, ids[:, : min(32, ids.shape[1])], decode_len, max(3, repeats // 2))
        else:
            kw = {"input_ids": ids.to(device)}
            if attention_mask is not None:
                kw["attention_mask"] = attention_mask.to(device)
            t_pre = _median_time(lambda: model(**kw), repeats, device)
            t_dec = None
    return SpeedResult(
        prefill_tokens_per_s=ids.numel() / t_pre,
        decode_tokens_per_s=(decode_len / t_dec) if t_dec else None,
        prefill_len=int(ids.shape[1]), decode_len=decode_len if causal else 0, repeats=repeats,
        peak_rss_mb=mem.peak / 2**20, threads=torch.get_num_threads(), device=str(device),
    )
