"""Options and output helpers shared by several commands."""
from __future__ import annotations

import json

import typer

from ..console import console, print_kv  # noqa: F401


# Options whose help lists a registry's names; refreshed before each command so that methods
# registered after import (plug-ins, tests) appear in --help.
_CHOICE_OPTIONS: list = []


def registry_option(default, *flags: str, registry, prefix: str = "", suffix: str = ".", **kwargs):
    opt = typer.Option(default, *flags, help=prefix + registry.choices() + suffix, **kwargs)
    _CHOICE_OPTIONS.append((opt, registry, prefix, suffix))
    return opt


def refresh_choices() -> None:
    for opt, registry, prefix, suffix in _CHOICE_OPTIONS:
        opt.help = prefix + registry.choices() + suffix


def print_json(obj) -> None:
    console.print_json(json.dumps(obj, default=str))


def parse_options(items: list[str] | None, flag: str) -> dict:
    """`KEY=VALUE` pairs of a repeatable option; values are read as JSON when they parse (numbers,
    booleans, lists), as text otherwise. The method's config validates them."""
    from ..errors import ConfigError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE (got {item!r})")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out
