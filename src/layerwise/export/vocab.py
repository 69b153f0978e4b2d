"""A `tokenizers` BPE tokenizer → the tokenizer keys of a GGUF file.

llama.cpp implements a few tokenizer families itself and recognises them by name: byte-level BPE
(`gpt2` model) with a named pre-tokenizer regex, and SentencePiece-style BPE with byte fallback
(`llama` model). We read tokenizer.json, decide which family it is and which pre-tokenizer regex it
uses, and refuse (one line) a tokenizer llama.cpp would tokenize differently.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

# token types of the GGUF spec
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer regexes (as tokenizer.json spells them) → llama.cpp's names
_SPLIT_PRE = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+": "qwen2",
}


def _pre_name(pre: dict | None) -> str:
    if pre is None:
        raise ConfigError("the tokenizer has no pre-tokenizer; llama.cpp cannot reproduce its splitting")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        splits = [p for p in parts if p.get("type") == "Split"]
        bytelevel = [p for p in parts if p.get("type") == "ByteLevel"]
        if len(splits) == 1 and len(bytelevel) == 1 and not bytelevel[0].get("use_regex", True):
            regex = splits[0].get("pattern", {}).get("Regex")
            if regex in _SPLIT_PRE:
                return _SPLIT_PRE[regex]
        if len(bytelevel) == 1 and not splits and bytelevel[0].get("use_regex", True):
            return "gpt-2"
    raise ConfigError(f"the tokenizer's pre-tokenizer ({json.dumps(pre)[:120]}) is not one llama.cpp implements "
                      "(byte-level GPT-2, Llama-3 or Qwen2 regex)")


def gguf_vocab(tokenizer_json: Path, vocab_size: int) -> dict:
    """Keys for the writer: model, pre, tokens, types, merges, special ids."""
    path = Path(tokenizer_json)
    if not path.exists():
        raise ConfigError(f"{path.parent} has no tokenizer.json; GGUF needs the tokenizer inside the file")
    tj = json.loads(path.read_text())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise ConfigError(f"{path}: tokenizer model {model.get('type')!r} is not supported for GGUF (BPE only)")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    size = max(vocab_size, max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for tok, i in vocab.items():
        tokens[i] = tok
        t = added.get(tok)
        types[i] = (CONTROL if t.get("special") else USER_DEFINED) if t is not None else NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if model.get("byte_fallback"):
        kind, pre = "llama", None
        for i, tok in enumerate(tokens):
            if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
                types[i] = BYTE
    else:
        kind, pre = "gpt2", _pre_name(tj.get("pre_tokenizer"))
    return {"model": kind, "pre": pre, "tokens": tokens, "types": types, "merges": merges}


def special_ids(tokenizer, config) -> dict:
    """bos/eos/pad/unk ids from the tokenizer object, else from the model config."""
    out = {}
    for key in ("bos", "eos", "pad", "unk"):
        v = getattr(tokenizer, f"{key}_token_id", None) if tokenizer is not None else None
        if v is None:
            v = getattr(config, f"{key}_token_id", None)
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None:
            out[key] = int(v)
    return out
