"""Exports of a result into the files other runtimes execute, by format name."""
from __future__ import annotations

FORMATS = {
    "gguf": "llama.cpp / ollama / LM Studio: one file, tokenizer inside, one ggml type per tensor",
    "compressed-tensors": "vLLM / transformers: pack-quantized int weights, one config group per width",
}


def export(model, format: str = "gguf", out=None, *, float_type: str = "f16", runtime: str = "vllm",
           overwrite: bool = False, k_quants: bool = False):
    """Write `model` (a result directory, zoo:NAME, a save_pretrained directory) in `format`.
    GGUF returns a `GGUFExport`; compressed-tensors returns the output directory."""
    from ..errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "gguf":
        from .gguf import export_gguf

        return export_gguf(model, out, float_type=float_type, overwrite=overwrite, k_quants=k_quants)
    from .compressed_tensors import export_compressed_tensors

    return export_compressed_tensors(model, out, runtime=runtime, overwrite=overwrite)
