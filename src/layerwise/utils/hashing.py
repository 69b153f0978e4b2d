from __future__ import annotations

import hashlib
from typing import Iterable


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def combine_hashes(hashes: Iterable[str]) -> str:
    """Order-independent digest of a set of document hashes."""
    h = hashlib.sha256()
    for x in sorted(hashes):
        h.update(x.encode())
    return h.hexdigest()
