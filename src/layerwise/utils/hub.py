"""Fast reachability check, so an unreachable hub costs milliseconds, not a minute of retries."""
from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LAYERWISE_OFFLINE"))


@lru_cache(maxsize=1)
def _resolve(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    if _offline_env():
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _resolve(url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80))
