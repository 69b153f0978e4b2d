"""Token streams and calibration samples for any corpus and any tokenizer."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..utils.seed import generator
from .corpora import Corpus, load_corpus

_STREAMS: dict[str, torch.Tensor] = {}


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(getattr(tokenizer, "eos_token_id", None)).encode())
    return h.hexdigest()[:16]


def _cache_dir() -> Path | None:
    d = os.environ.get("LAYERWISE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "layerwise"))
    if d.lower() in ("", "0", "off", "none"):
        return None
    return Path(d) / "tokens"


def _separator_ids(tokenizer) -> list[int]:
    for attr in ("eos_token_id", "sep_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return [int(tid)]
    return tokenizer("\n\n", add_special_tokens=False)["input_ids"]


def token_stream(corpus: Corpus | str, tokenizer, split: str = "train") -> torch.Tensor:
    """The split's documents, tokenized and joined by the tokenizer's EOS (or SEP) token.

    Cached in memory and on disk, keyed by the split's content hash and the tokenizer's fingerprint,
    so a changed corpus or tokenizer never reuses a stale stream.
    """
    if isinstance(corpus, str):
        corpus = load_corpus(corpus)
    docs = corpus.split(split)
    from ..utils.hashing import combine_hashes

    key = f"{combine_hashes(d.sha256 for d in docs)[:24]}-{tokenizer_fingerprint(tokenizer)}"
    if key in _STREAMS:
        return _STREAMS[key]
    cdir = _cache_dir()
    cfile = cdir / f"{key}.npy" if cdir else None
    if cfile is not None and cfile.exists():
        try:
            arr = np.load(cfile)
            stream = torch.from_numpy(arr.astype(np.int64))
            _STREAMS[key] = stream
            return stream
        except (OSError, ValueError):
            pass
    sep = _separator_ids(tokenizer)
    ids: list[int] = []
    batch = 256
    for i in range(0, len(docs), batch):
        enc = tokenizer([d.text for d in docs[i:i + batch]], add_special_tokens=False)["input_ids"]
        for seq in enc:
            ids.extend(seq)
            ids.extend(sep)
    stream = torch.tensor(ids, dtype=torch.long)
    _STREAMS[key] = stream
    if cfile is not None:
        try:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            tmp = cfile.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, stream.numpy().astype(np.int32))
            os.replace(tmp, cfile)
        except OSError:
            pass
    return stream


def calibration_samples(source: Corpus | str, tokenizer, nsamples: int = 128, seqlen: int = 256,
                        seed: int = 0, split: str = "train") -> torch.Tensor:
    """`nsamples` windows of `seqlen` tokens at seeded random offsets of the split's token stream.

    The same (corpus, tokenizer, n, L, seed) always gives the same tensor [nsamples, seqlen].
    """
    if nsamples < 1:
        raise DataError(f"--nsamples must be at least 1 (got {nsamples})")
    if seqlen < 2:
        raise DataError(f"--seqlen must be at least 2 (got {seqlen})")
    stream = token_stream(source, tokenizer, split)
    if stream.numel() < seqlen + 1:
        name = source if isinstance(source, str) else source.name
        raise DataError(f"corpus '{name}' split '{split}' has {stream.numel()} tokens, "
                        f"fewer than one window of {seqlen}")
    g = generator(seed)
    starts = torch.randint(0, stream.numel() - seqlen + 1, (nsamples,), generator=g)
    return torch.stack([stream[s:s + seqlen] for s in starts.tolist()])


def eval_windows(source: Corpus | str, tokenizer, seqlen: int = 256, split: str = "validation",
                 max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [n, seqlen] covering the split's stream (the remainder is dropped)."""
    stream = token_stream(source, tokenizer, split)
    n = stream.numel() // seqlen
    if n == 0:
        name = source if isinstance(source, str) else source.name
        raise DataError(f"corpus '{name}' split '{split}' has {stream.numel()} tokens, "
                        f"fewer than one window of {seqlen}")
    if max_windows is not None:
        if max_windows < 1:
            raise ConfigError(f"--max-windows must be at least 1 (got {max_windows})")
        n = min(n, max_windows)
    return stream[: n * seqlen].view(n, seqlen)


def training_batch(stream: torch.Tensor, step: int, batch: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """The batch of training step `step`: `batch` random windows that depend only on (seed, step),
    so a resumed or multi-process run sees exactly the batches of an uninterrupted single one."""
    g = generator(seed * 1_000_003 + step)
    starts = torch.randint(0, stream.numel() - seqlen, (batch,), generator=g)
    return torch.stack([stream[s:s + seqlen] for s in starts.tolist()])


class TokenWindows:
    """Windows of token ids with the interface architecture search reads (`batches`, `sample`,
    `split_half`); labels are the ids themselves (next-token prediction)."""

    def __init__(self, ids: torch.Tensor, name: str = "tokens"):
        self.ids = ids
        self.name = name

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            x = self.ids[order[i:i + batch_size]]
            yield x, x

    def sample(self, n: int, generator: torch.Generator | None = None):
        x = self.ids[torch.randint(0, len(self), (n,), generator=generator)]
        return x, x

    def split_half(self, seed: int = 0) -> tuple["TokenWindows", "TokenWindows"]:
        """The first and second halves of the windows (disjoint stretches of the stream)."""
        h = len(self) // 2
        return TokenWindows(self.ids[:h], self.name + "/a"), TokenWindows(self.ids[h:], self.name + "/b")
