"""Checks of user-given amounts, each failing with one line that names the option."""
from __future__ import annotations

import math

from ..errors import ConfigError


def _number(option: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{option} must be a number (got {value!r})") from e
    if not math.isfinite(v):
        raise ConfigError(f"{option} must be a finite number (got {value!r})")
    return v


def count(option: str, value, minimum: int = 1) -> int:
    """An integer amount of at least `minimum` (samples, steps, batch sizes, windows)."""
    if isinstance(value, bool) or not isinstance(value, int):
        v = _number(option, value)
        if not v.is_integer():
            raise ConfigError(f"{option} must be a whole number (got {value!r})")
        value = int(v)
    if value < minimum:
        raise ConfigError(f"{option} must be at least {minimum} (got {value})")
    return value


def positive(option: str, value) -> float:
    v = _number(option, value)
    if v <= 0:
        raise ConfigError(f"{option} must be greater than 0 (got {value!r})")
    return v
