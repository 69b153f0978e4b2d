"""The codec's file: a header, one chunk per group, a trailer — and the entropy coding inside a chunk.

    magic "LWVIDEO1" | u32 header length | header (JSON) |
    per group: u32 chunk length | u32 CRC-32 of the chunk | chunk |
    "END!" | u32 number of groups | u32 CRC-32 of everything before

A truncated or altered file fails a length, a CRC or the trailer check and is refused with one line
before anything is decoded. Inside a chunk, every quantized layer's integers (the residual against the
previous group, or the integers themselves) are range coded with `constriction` under a categorical
model fitted to exactly those integers; the model travels as a table of (symbol gap, count) varints.
Float side information (decoder step and shift per layer, biases) is float16.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

MAGIC = b"LWVIDEO1"
TRAILER = b"END!"


class BitstreamError(ConfigError):
    """A file that is not a complete, intact layerwise video bitstream."""


# ---- varints ----------------------------------------------------------------------------------------

def _put_varint(buf: io.BytesIO, v: int) -> None:
    if v < 0:
        raise ValueError("varints are unsigned")
    while True:
        b = v & 0x7F
        v >>= 7
        buf.write(bytes([b | (0x80 if v else 0)]))
        if not v:
            return


def _get_varint(data: memoryview, pos: int) -> tuple[int, int]:
    v, shift = 0, 0
    while True:
        if pos >= len(data):
            raise BitstreamError("bitstream chunk ends inside a number")
        b = data[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(v: int) -> int:
    return v // 2 if v % 2 == 0 else -(v + 1) // 2


# ---- entropy coding of integer tensors ----------------------------------------------------------------

@dataclass
class CodedLayer:
    table: bytes          # the categorical model: symbols and counts
    symbols: np.ndarray   # the integers as indices into the model's alphabet
    probs: np.ndarray     # the model's probabilities
    ideal_bits: float     # Σ −log2 p over the integers (what an ideal coder spends)


def fit_model(values: np.ndarray) -> CodedLayer:
    """Categorical model of exactly these integers; table = first symbol (zigzag) and (gap, count) varints."""
    sym, counts = np.unique(values.astype(np.int64), return_counts=True)
    buf = io.BytesIO()
    _put_varint(buf, len(sym))
    _put_varint(buf, _zigzag(int(sym[0])))
    prev = int(sym[0])
    for s, c in zip(sym.tolist(), counts.tolist()):
        _put_varint(buf, s - prev)
        _put_varint(buf, c)
        prev = s
    probs = counts / counts.sum()
    index = np.searchsorted(sym, values.astype(np.int64))
    ideal = float(-(np.log2(probs[index])).sum()) if len(sym) > 1 else 0.0
    return CodedLayer(buf.getvalue(), index.astype(np.int32), probs, ideal)


def read_model(data: memoryview, pos: int) -> tuple[np.ndarray, np.ndarray, int]:
    n, pos = _get_varint(data, pos)
    first, pos = _get_varint(data, pos)
    prev = _unzigzag(first)
    sym, counts = [], []
    for _ in range(n):
        gap, pos = _get_varint(data, pos)
        c, pos = _get_varint(data, pos)
        prev += gap
        sym.append(prev)
        counts.append(c)
    counts = np.asarray(counts, dtype=np.float64)
    return np.asarray(sym, dtype=np.int64), counts / counts.sum(), pos


def range_encode(layers: list[CodedLayer]) -> bytes:
    import constriction

    enc = constriction.stream.queue.RangeEncoder()
    for lay in layers:
        if len(lay.probs) > 1:
            enc.encode(lay.symbols, constriction.stream.model.Categorical(lay.probs, perfect=False))
    return enc.get_compressed().astype("<u4").tobytes()


def range_decode(words: bytes, models: list[tuple[np.ndarray, np.ndarray, int]]) -> list[np.ndarray]:
    """models: (alphabet, probabilities, count) per layer → integers per layer."""
    import constriction

    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    out = []
    for sym, probs, n in models:
        if len(sym) == 1:
            out.append(np.full(n, sym[0], dtype=np.int64))
        else:
            idx = dec.decode(constriction.stream.model.Categorical(probs, perfect=False), n)
            out.append(sym[idx])
    return out


# ---- the file ---------------------------------------------------------------------------------------

def write_file(header: dict, chunks: list[bytes]) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(struct.pack("<I", len(head)))
    buf.write(head)
    for c in chunks:
        buf.write(struct.pack("<II", len(c), zlib.crc32(c)))
        buf.write(c)
    body = buf.getvalue()
    return body + TRAILER + struct.pack("<II", len(chunks), zlib.crc32(body))


def read_file(data: bytes, name: str = "bitstream") -> tuple[dict, list[bytes]]:
    """Header and chunks of a complete file; BitstreamError (one line) for anything else."""
    if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
        raise BitstreamError(f"{name} is not a layerwise video bitstream (no {MAGIC.decode()} header)")
    if len(data) < len(MAGIC) + 16 or data[-12:-8] != TRAILER:
        raise BitstreamError(f"{name} is truncated (its end marker is missing)")
    n_groups, crc = struct.unpack("<II", data[-8:])
    body = data[:-12]
    if zlib.crc32(body) != crc:
        raise BitstreamError(f"{name} is corrupt (checksum of the file does not match)")
    pos = len(MAGIC)
    (hlen,) = struct.unpack_from("<I", body, pos)
    pos += 4
    try:
        header = json.loads(body[pos:pos + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BitstreamError(f"{name} has an unreadable header: {e}") from e
    pos += hlen
    chunks = []
    for k in range(n_groups):
        if pos + 8 > len(body):
            raise BitstreamError(f"{name} is truncated in group {k}")
        length, ccrc = struct.unpack_from("<II", body, pos)
        pos += 8
        chunk = body[pos:pos + length]
        if len(chunk) != length or zlib.crc32(chunk) != ccrc:
            raise BitstreamError(f"{name} is corrupt in group {k}")
        chunks.append(chunk)
        pos += length
    if pos != len(body) or header.get("groups") != n_groups:
        raise BitstreamError(f"{name} is inconsistent: {n_groups} groups in the trailer, header says "
                             f"{header.get('groups')}")
    return header, chunks


def put_floats(buf: io.BytesIO, values: np.ndarray) -> None:
    buf.write(np.asarray(values, dtype="<f2").tobytes())


def get_floats(data: memoryview, pos: int, n: int) -> tuple[np.ndarray, int]:
    end = pos + 2 * n
    if end > len(data):
        raise BitstreamError("bitstream chunk ends inside its side information")
    return np.frombuffer(bytes(data[pos:end]), dtype="<f2").astype(np.float32), end
