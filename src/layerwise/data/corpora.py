"""Text corpora addressed by name: `stdlib`, `text:PATH`, `hf:NAME[:CONFIG[:SPLIT]]`.

A corpus is a list of documents. Every source is split into train / validation / test by the same
rule: a document's split is decided by the SHA-256 of its content, so the split is deterministic,
independent of file order, and identical documents never straddle two splits. Each split is
recorded by an order-independent digest of its document hashes.
"""
from __future__ import annotations

import glob
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from ..errors import DataError
from ..utils.hashing import combine_hashes, sha256_text

SPLITS = ("train", "validation", "test")
# Fractions of documents (by hash) in train / validation; the rest is test.
SPLIT_FRACTIONS = (0.90, 0.05)


@dataclass(frozen=True)
class Document:
    id: str
    text: str

    @cached_property
    def sha256(self) -> str:
        return sha256_text(self.text)

    @property
    def split(self) -> str:
        u = int(self.sha256[:12], 16) / float(16**12)
        if u < SPLIT_FRACTIONS[0]:
            return "train"
        if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
            return "validation"
        return "test"


@dataclass
class Corpus:
    name: str
    documents: list[Document]
    description: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.documents = [d for d in self.documents if d.text.strip()]
        if not self.documents:
            raise DataError(f"corpus '{self.name}' is empty: no non-blank documents")
        self.documents.sort(key=lambda d: d.id)

    def split(self, name: str) -> list[Document]:
        if name == "all":
            return list(self.documents)
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; choose one of {', '.join(SPLITS)} or all")
        docs = [d for d in self.documents if d.split == name]
        if not docs:
            raise DataError(f"split '{name}' of corpus '{self.name}' has no documents "
                            f"({len(self.documents)} documents in all); use --split all")
        return docs

    def text(self, split: str = "all") -> str:
        return "\n\n".join(d.text for d in self.split(split))

    def split_info(self) -> dict:
        info: dict = {"source": self.name, "documents": len(self.documents),
                      "characters": sum(len(d.text) for d in self.documents)}
        for s in SPLITS:
            docs = [d for d in self.documents if d.split == s]
            info[s] = {"documents": len(docs), "characters": sum(len(d.text) for d in docs),
                       "sha256": combine_hashes(d.sha256 for d in docs)}
        info.update(self.meta)
        return info


# --- sources -----------------------------------------------------------------------------------

# Directories of the standard library that are test suites (or bundled third-party/IDE code),
# excluded so the corpus is ordinary library source.
_STDLIB_EXCLUDE = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages",
                   "__pycache__", "turtledemo", "ensurepip", "tkinter"}


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_stdlib() -> Corpus:
    """The running interpreter's standard-library sources (no test suites) + pydoc topics."""
    root = _stdlib_dir()
    docs: list[Document] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _STDLIB_EXCLUDE and not d.startswith(("test_", ".")))
        for fn in sorted(filenames):
            if not fn.endswith(".py") or fn.startswith("test_"):
                continue
            p = Path(dirpath) / fn
            try:
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            docs.append(Document(id=f"stdlib/{p.relative_to(root).as_posix()}", text=text))
    try:
        from pydoc_data import topics  # type: ignore
        for key in sorted(topics.topics):
            docs.append(Document(id=f"pydoc_data.topics/{key}", text=topics.topics[key]))
    except ImportError:  # some distributions strip pydoc_data
        pass
    if not docs:
        raise DataError(f"no standard-library sources found under {root}")
    ver = ".".join(map(str, sys.version_info[:3]))
    return Corpus("stdlib", docs,
                  description=f"CPython {ver} standard library sources (no test suites) + pydoc_data.topics",
                  meta={"python": ver, "implementation": sys.implementation.name})


_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".tex", ".html", ".xml",
                  ".yaml", ".yml", ".toml", ".c", ".h", ".cpp", ".js", ".ts", ".rs", ".go", ".java", ""}


def _read_text_file(p: Path, strict: bool) -> str | None:
    try:
        data = p.read_bytes()
    except PermissionError as e:
        raise DataError(f"cannot read {p}: permission denied") from e
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror or e}") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if strict:
            raise DataError(f"cannot read {p}: not UTF-8 text (byte {e.start})") from e
        return None


def load_text(spec: str) -> Corpus:
    """`text:PATH`: one file (one document), a folder (every text file below it) or a glob."""
    raw = spec
    path = os.path.expanduser(raw)
    if any(ch in path for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"text:{raw} matches no files")
        strict = False
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*")
                       if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise DataError(f"text:{raw} is a folder with no text files")
        strict = False
    elif Path(path).exists():
        files, strict = [Path(path)], True
    else:
        raise DataError(f"text:{raw} does not exist")
    docs, skipped = [], 0
    for p in files:
        text = _read_text_file(p, strict)
        if text is None:
            skipped += 1
            continue
        docs.append(Document(id=str(p), text=text))
    if len(files) == 1 and docs and len(docs[0].text) > 0:
        # A single file is split into paragraphs-blocks so that it can still have three splits.
        docs = _chunk_document(docs[0])
    if not any(d.text.strip() for d in docs):
        raise DataError(f"corpus 'text:{raw}' is empty: no text in {len(files)} file(s)"
                        + (f" ({skipped} not UTF-8)" if skipped else ""))
    return Corpus(f"text:{raw}", docs, description=f"{len(files)} local file(s) under {raw}",
                  meta={"files": len(files), "skipped_not_utf8": skipped})


def _chunk_document(doc: Document, target_chars: int = 4000) -> list[Document]:
    """Cut one long file into consecutive chunks at blank lines (~target_chars each)."""
    paras = doc.text.split("\n\n")
    chunks, cur, n = [], [], 0
    for para in paras:
        cur.append(para)
        n += len(para) + 2
        if n >= target_chars:
            chunks.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        chunks.append("\n\n".join(cur))
    return [Document(id=f"{doc.id}#{i:05d}", text=t) for i, t in enumerate(chunks)]


def load_hf(spec: str) -> Corpus:
    """`hf:NAME[:CONFIG[:SPLIT]]` through `datasets` (works from its local cache when offline)."""
    parts = spec.split(":")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else None
    if not name:
        raise DataError("hf: needs a dataset name, e.g. hf:wikitext:wikitext-2-raw-v1:test")
    try:
        import datasets  # type: ignore
    except ImportError as e:
        raise DataError("hf: corpora need the `datasets` package: pip install 'layerwise[hf]'") from e
    from ..utils.hub import hub_reachable

    kwargs = {}
    if not hub_reachable():
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        ds = datasets.load_dataset(name, config, split=split, **kwargs)
    except Exception as e:  # datasets raises many types for "not cached and offline"
        reach = "" if hub_reachable() else " (the hub is unreachable and it is not in the local cache)"
        raise DataError(f"cannot load dataset hf:{spec}{reach}: {type(e).__name__}: {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        rows = [(f"{s}/{i}", r) for s in sorted(ds) for i, r in enumerate(ds[s])]
        cols = ds[sorted(ds)[0]].column_names
    else:
        rows = [(str(i), r) for i, r in enumerate(ds)]
        cols = ds.column_names
    col = "text" if "text" in cols else next(
        (c for c in cols if rows and isinstance(rows[0][1].get(c), str)), None)
    if col is None:
        raise DataError(f"dataset hf:{spec} has no text column (columns: {', '.join(cols)})")
    docs = [Document(id=f"hf:{spec}/{i}", text=r[col]) for i, r in rows if isinstance(r[col], str)]
    return Corpus(f"hf:{spec}", docs, description=f"datasets: {name} {config or ''} {split or ''}".strip(),
                  meta={"column": col})


SOURCES: dict[str, Callable[[str], Corpus]] = {
    "stdlib": lambda _arg: load_stdlib(),
    "text": load_text,
    "hf": load_hf,
}

_CACHE: dict[str, Corpus] = {}


def load_corpus(source: str) -> Corpus:
    """Load a corpus by name: `stdlib`, `text:PATH`, `hf:NAME[:CONFIG[:SPLIT]]`."""
    if not source or not isinstance(source, str):
        raise DataError("empty corpus name; use stdlib, text:PATH or hf:NAME")
    kind, _, arg = source.partition(":")
    if kind not in SOURCES:
        if Path(os.path.expanduser(source)).exists():
            kind, arg = "text", source
        else:
            raise DataError(f"unknown corpus '{source}'; use stdlib, text:PATH or hf:NAME[:CONFIG[:SPLIT]]")
    if kind == "stdlib" and arg:
        raise DataError("the stdlib corpus takes no argument")
    if kind != "stdlib" and not arg:
        raise DataError(f"{kind}: needs an argument, e.g. {kind}:{'PATH' if kind == 'text' else 'NAME'}")
    key = f"{kind}:{arg}"
    if kind == "text":  # local files can change between calls; do not cache
        return SOURCES[kind](arg)
    if key not in _CACHE:
        _CACHE[key] = SOURCES[kind](arg)
    return _CACHE[key]
