"""report.html: one self-contained page per output directory.

Built from what the directory already holds — report.md (tables, plots), manifest.json (command,
versions, options, timings, metrics, checks) and plan.json (one row per layer, block, unit or token
site) — with every image inlined as a data URI, so the page can be mailed or attached to a model
card without its directory. Written by the artifact layer just before an output is committed, and by
`layerwise report DIR` for any existing directory.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}tr:nth-child(even) td{background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre,code{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#f3f4f6}
pre{padding:8px 10px;overflow-x:auto}img{max-width:100%;height:auto;border:1px solid #eee}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
.scroll{max-height:480px;overflow:auto;border:1px solid #e3e6ea}
.muted{color:#6a737d;font-size:12px}
"""

_IMG = re.compile(r'(<img[^>]*\ssrc=")([^"]+)(")')
_NUM = re.compile(r"^-?[\d,]*\.?\d+(e[-+]?\d+)?%?$")


def _inline_images(body: str, directory: Path) -> str:
    def repl(m):
        src = m.group(2)
        p = directory / src
        if src.startswith("data:") or not p.is_file():
            return m.group(0)
        mime = "image/svg+xml" if p.suffix == ".svg" else f"image/{p.suffix.lstrip('.').replace('jpg', 'jpeg')}"
        data = base64.b64encode(p.read_bytes()).decode()
        return f"{m.group(1)}data:{mime};base64,{data}{m.group(3)}"

    return _IMG.sub(repl, body)


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        text = f"{v:.6g}" if isinstance(v, float) else str(v)
        cls = ' class="num"' if _NUM.match(text.replace(" ", "")) else ""
        return f"<td{cls}>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _manifest_section(m: dict) -> str:
    parts = []
    if m.get("command"):
        parts.append(f"<pre>{html.escape(str(m['command']))}</pre>")
    metrics = m.get("metrics") or {}
    if metrics:
        parts.append("<h2>Quality, size and speed</h2>" + _table(["metric", "value"], [[k, v] for k, v in metrics.items()
                                                                                    if not isinstance(v, (dict, list))]))
    checks = m.get("checks") or {}
    if checks:
        parts.append("<h2>Checks</h2>" + _table(["check", "result"], [[k, v] for k, v in checks.items()]))
    timings = m.get("timings") or {}
    if timings:
        parts.append("<h2>Time</h2>" + _table(["stage", "seconds"], [[k, v] for k, v in timings.items()
                                                                      if isinstance(v, (int, float))]))
    ver = m.get("versions") or {}
    if ver:
        parts.append("<details><summary>Versions and options</summary>"
                     + _table(["package", "version"], [[k, v] for k, v in ver.items()])
                     + _table(["option", "value"], [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
                                                    for k, v in (m.get("options") or {}).items()]) + "</details>")
    return "".join(parts)


def _plan_section(plan: dict) -> str:
    out = []
    for key, title in (("rows", "Plan: linear layers"), ("blocks", "Plan: blocks"), ("units", "Plan: units"),
                       ("tokens", "Plan: token sites")):
        rows = plan.get(key) or []
        if not rows:
            continue
        cols = [c for c in rows[0] if not isinstance(rows[0][c], (dict, list)) or c == "shape"]
        body = [[("×".join(map(str, r.get(c))) if c == "shape" and isinstance(r.get(c), list) else r.get(c, ""))
                 for c in cols] for r in rows]
        out.append(f"<h2>{title} ({len(rows)})</h2><div class='scroll'>{_table(cols, body)}</div>")
    return "".join(out)


def render(directory: str | Path) -> str:
    """The page for `directory` (a string of HTML)."""
    import markdown

    d = Path(directory)
    title = d.name
    parts = []
    md = d / "report.md"
    if md.exists():
        text = md.read_text()
        first = text.splitlines()[0] if text else ""
        if first.startswith("# "):
            title = first[2:].strip()
        parts.append(markdown.markdown(text, extensions=["tables", "fenced_code"]))
    if (d / "manifest.json").exists():
        parts.append(_manifest_section(json.loads((d / "manifest.json").read_text())))
    if (d / "plan.json").exists():
        parts.append(_plan_section(json.loads((d / "plan.json").read_text())))
    body = _inline_images("".join(parts), d)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{body}<p class='muted'>layerwise report of {html.escape(d.name)}</p></main></body></html>\n")


def write_html(directory: str | Path) -> Path:
    d = Path(directory)
    out = d / "report.html"
    tmp = d / ".report.html.tmp"
    tmp.write_text(render(d))
    tmp.replace(out)
    return out
