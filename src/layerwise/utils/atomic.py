"""Atomic output directories: write into a temp sibling, rename into place only when complete."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LayerwiseError


def check_output_dir(out: str | os.PathLike, overwrite: bool = False, sources: tuple = ()) -> Path:
    out = Path(out).expanduser()
    for src in sources:
        try:
            if src is not None and Path(src).exists() and Path(src).resolve() == out.resolve():
                raise LayerwiseError(f"output directory {out} is the source model; choose another --out")
        except OSError:
            pass
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            return out
        raise LayerwiseError(f"output directory {out} already exists; pass --overwrite to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise LayerwiseError(f"parent directory of {out} does not exist")
    return out


@contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `out`; on success it replaces `out` in one rename.

    On any exception (including a full disk) the temporary directory is removed and `out` is left
    as it was, so no half-written output ever appears under the requested name.
    """
    out = Path(out).expanduser()
    parent = out.parent if str(out.parent) else Path(".")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        yield tmp
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise LayerwiseError(f"output directory {out} already exists; pass --overwrite to replace it")
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise LayerwiseError(f"disk full while writing {out}; nothing was written") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
