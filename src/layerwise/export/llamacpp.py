"""Run an exported GGUF in llama.cpp (through `llama-cpp-python`): logits to compare with layerwise's,
and prompt / generation speed. Optional: needs `pip install llama-cpp-python` (a C++ build)."""
from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..utils.stdio import quiet_stderr


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def _model_params(extra_buffers: bool):
    """llama-cpp-python has no argument for `use_extra_bufts`; set it in the defaults it reads."""
    import llama_cpp.llama as api

    orig = api.llama_cpp.llama_model_default_params

    def params():
        p = orig()
        p.use_extra_bufts = extra_buffers
        return p

    api.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        api.llama_cpp.llama_model_default_params = orig


class LlamaCpp:
    """One GGUF loaded in llama.cpp.

    `extra_buffers=False` (default) keeps quantized weights in llama.cpp's plain CPU buffers: its
    AMX buffer type (chosen on CPUs that report AMX, like this project's machine) crashes with a
    segmentation fault in our sandbox for every Q4_0/Q8_0 model we tried, hidden 128 to 1024.
    Pass True on a machine where it works, for the repacked kernels."""

    def __init__(self, path: str | os.PathLike, n_ctx: int = 1024, threads: int | None = None, batch: int = 512,
                 extra_buffers: bool = False):
        if not available():
            raise ConfigError("llama.cpp is not installed: pip install llama-cpp-python==0.3.36")
        from llama_cpp import Llama

        if not Path(path).exists():
            raise ConfigError(f"GGUF file {path} does not exist")
        threads = threads or torch.get_num_threads()
        with quiet_stderr(), _model_params(extra_buffers):
            try:
                self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                 n_batch=batch, n_ubatch=batch, logits_all=True, verbose=False)
            except ValueError as e:
                raise ConfigError(f"llama.cpp cannot load {path}: {e}") from e

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits [len(ids), vocab] of one sequence evaluated from an empty cache."""
        self.llm.reset()
        self.llm.eval(list(map(int, ids)))
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def prompt_seconds(self, ids: list[int]) -> float:
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval(list(map(int, ids)))
        return time.perf_counter() - t0

    def generate_seconds(self, ids: list[int], new: int) -> float:
        """Time of `new` greedy steps after the prompt (the prompt's own evaluation excluded)."""
        self.llm.reset()
        self.llm.eval(list(map(int, ids)))
        tok = int(np.argmax(self.llm.scores[len(ids) - 1]))
        t0 = time.perf_counter()
        for k in range(new):
            self.llm.eval([tok])
            tok = int(np.argmax(self.llm.scores[len(ids) + k]))
        return time.perf_counter() - t0

    def close(self) -> None:
        self.llm.close()


@torch.no_grad()
def compare(model, gguf_path, ids: torch.Tensor) -> dict:
    """llama.cpp vs layerwise logits on the same token ids [B, n]: max |Δ|, top-1 agreement, and the
    largest layerwise margin between the two top-1 choices where they differ (a flip between near-ties
    is float rounding; a flip over a large margin is a wrong model)."""
    run = LlamaCpp(gguf_path, n_ctx=max(64, ids.shape[1]))
    diffs, agree, total, flip_margin = [], 0, 0, 0.0
    try:
        for row in ids:
            ref = model(input_ids=row[None]).logits[0].float().numpy()
            got = run.logits(row.tolist())
            diffs.append(float(np.abs(got - ref).max()))
            a, b = got.argmax(-1), ref.argmax(-1)
            agree += int((a == b).sum())
            total += ref.shape[0]
            rows = np.nonzero(a != b)[0]
            if rows.size:
                flip_margin = max(flip_margin, float((ref[rows, b[rows]] - ref[rows, a[rows]]).max()))
    finally:
        run.close()
    return {"max_abs_diff": max(diffs), "top1_agreement": agree / total, "flip_margin": flip_margin,
            "max_abs_logit": float(model(input_ids=ids[:1]).logits.abs().max())}


def median_speed(run: LlamaCpp, ids: list[int], new: int, repeats: int = 3) -> dict:
    p = statistics.median(run.prompt_seconds(ids) for _ in range(repeats))
    g = statistics.median(run.generate_seconds(ids, new) for _ in range(repeats))
    return {"prompt_tok_s": len(ids) / p, "gen_tok_s": new / g}
