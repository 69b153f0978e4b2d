"""Exports of a result into the files other runtimes execute, by format name."""
from __future__ import annotations

FORMATS = {
    "gguf": "llama.cpp / ollama / LM Studio: one file, tokenizer inside, one ggml type per tensor",
}


def export(model, format: str = "gguf", out=None, **options):
    from ..errors import ConfigError

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    from .gguf import export_gguf

    return export_gguf(model, out, **options)
