"""Options and output helpers shared by several commands."""
from __future__ import annotations

import json

from rich.table import Table

from ..console import console


def print_kv(title: str, rows: list[tuple[str, str]]) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


def print_json(obj) -> None:
    console.print_json(json.dumps(obj, default=str))
