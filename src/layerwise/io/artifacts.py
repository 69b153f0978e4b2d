"""The artifact layer: every directory a command writes goes through one `Artifact`.

Contract (the same for every command, CLI and API):
- **Inputs are never touched.** An output may not equal, contain or lie inside any input (the model,
  its tokenizer, a plan, a corpus file), after resolving symlinks. `overwrite_source=True` allows only
  the output *equal* to the model directory: the new model is written beside it, verified, swapped in
  with the old one kept as a backup, checked again, and only then is the backup removed.
- **One writer per output.** An exclusive `flock` on a hidden sibling lock file is held from the
  start of the run to its end; a second run writing the same output fails at once with one line.
  Runs that only read the same source never lock anything.
- **Nothing half-written.** Work happens in the hidden sibling `.NAME.partial`, renamed to NAME only
  when complete. A user error, a disk fault or a signal removes the partial directory, except for
  commands that can `--resume`, which keep it and say so.
- **Disk faults are user errors.** No space, file too large, read-only file system, permission
  denied: one line naming the output and the reason (exit code 2), whatever library raised it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import ConfigError, LayerwiseError

# Reasons for the errno values a write can fail with, and the texts other libraries put in their
# messages when they lose the errno (safetensors' Rust IoError, torch's "file write failed").
_ERRNO_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or process limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EIO: "input/output error",
}
_TEXT_REASONS = (
    (("no space left", "storagefull", "enospc"), "no space left on the device"),
    (("file too large", "filetoolarge", "efbig"), "file too large for this file system or process limit"),
    (("read-only file system", "readonlyfilesystem"), "read-only file system"),
    (("permission denied", "permissiondenied"), "permission denied"),
    (("quota",), "disk quota exceeded"),
    (("file write failed", "failed writing", "ioerror", "unexpected pos"), "a write failed (disk full or file too large?)"),
)


def io_reason(exc: BaseException) -> str | None:
    """Why a write failed, if `exc` (or what caused it) is an I/O fault; None for anything else."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return _ERRNO_REASONS.get(e.errno, e.strerror or str(e))
        text = str(e).lower()
        for needles, reason in _TEXT_REASONS:
            if any(n in text for n in needles):
                return reason
        e = e.__cause__ or e.__context__
    return None


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(Path(p).expanduser()))


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """How two paths overlap after resolving symlinks: 'is', 'is inside', 'contains', or None."""
    ra, rb = _resolved(a), _resolved(b)
    if ra == rb:
        return "is"
    if rb in ra.parents:
        return "is inside"
    if ra in rb.parents:
        return "contains"
    return None


def check_not_overlapping(out: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                          option: str = "--out", allow_equal_to: str | os.PathLike | None = None) -> None:
    """Refuse an output that is, contains or lies inside any input (label, path)."""
    for label, path in inputs:
        if path is None:
            continue
        how = overlap(out, path)
        if how is None:
            continue
        if how == "is" and allow_equal_to is not None and overlap(path, allow_equal_to) == "is":
            continue
        hint = " (pass --overwrite-source to replace the model in place)" if how == "is" and label == "the model" \
            else ""
        raise ConfigError(f"{option} {out} {how} {label} {path}; choose another directory{hint}")


class Artifact:
    """One output directory of one run: guarded, locked, written atomically, verified, committed."""

    def __init__(self, out: str | os.PathLike, *, inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
                 overwrite: bool = False, overwrite_source: bool = False, resumable: bool = False,
                 resume: bool = False, model_path: str | os.PathLike | None = None):
        raw = str(out)
        if not raw.strip() or "\x00" in raw:
            raise ConfigError(f"--out {raw!r} is not a usable directory name")
        self.out = Path(raw).expanduser()
        if self.out.name in ("", ".", ".."):
            self.out = _resolved(self.out)
        self.parent = self.out.parent if str(self.out.parent) else Path(".")
        self.inputs = [(label, p) for label, p in inputs if p is not None]
        self.overwrite = overwrite
        self.resumable = resumable
        self.resume = resume
        self.model_path = model_path
        self.replaces_source = bool(overwrite_source and model_path is not None
                                    and overlap(self.out, model_path) == "is")
        check_not_overlapping(self.out, self.inputs, allow_equal_to=model_path if overwrite_source else None)
        if not self.parent.exists():
            raise ConfigError(f"parent directory of --out {self.out} does not exist")
        if not self.parent.is_dir():
            raise ConfigError(f"parent of --out {self.out} is not a directory")
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
        if self._occupied() and not (overwrite or self.replaces_source):
            raise ConfigError(f"output directory {self.out} already exists; pass --overwrite to replace it")
        self.partial = self.parent / f".{self.out.name}.partial"
        self._lock_path = self.parent / f".{self.out.name}.lock"
        self._lock_fd: int | None = None
        self.committed = False

    def _occupied(self) -> bool:
        return self.out.exists() and self.out.is_dir() and any(self.out.iterdir())

    # --- locking --------------------------------------------------------------------------------
    def lock(self) -> "Artifact":
        """Take the writer lock (idempotent). Fails at once if another run holds it."""
        if self._lock_fd is not None:
            return self
        while True:
            try:
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise LayerwiseError(f"cannot write to {self.parent}: {io_reason(e)}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LayerwiseError(f"another layerwise run is writing {self.out} (lock {self._lock_path}); "
                                         "wait for it to finish or choose another --out") from e
                raise LayerwiseError(f"cannot lock {self._lock_path}: {io_reason(e)}") from e
            # The holder before us may have removed the file after we opened it: lock the live one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self._lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._lock_fd is None:
            return
        try:
            os.unlink(self._lock_path)
        except OSError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = None

    # --- the partial directory --------------------------------------------------------------------
    def begin(self) -> Path:
        """Lock, then create (or, resuming, keep) the partial directory; returns it."""
        self.lock()
        if self._occupied() and not (self.overwrite or self.replaces_source):  # appeared while we prepared
            raise ConfigError(f"output directory {self.out} already exists; pass --overwrite to replace it")
        try:
            if self.partial.exists() and not (self.resume and self.resumable):
                shutil.rmtree(self.partial)
            self.partial.mkdir(exist_ok=True)
        except OSError as e:
            raise LayerwiseError(f"cannot create {self.partial}: {io_reason(e)}") from e
        return self.partial

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)
        self.release()

    def keep_for_resume(self) -> bool:
        return self.resumable and self.partial.exists() and any(self.partial.iterdir())

    def commit(self, check: Callable[[Path], None] | None = None) -> Path:
        """Rename the partial directory into place. `check(out)` runs after the swap when the source
        model is being replaced; the backup is restored if it fails."""
        backup = self.parent / f".{self.out.name}.backup"
        if (self.partial / "manifest.json").exists() or (self.partial / "report.md").exists():
            from .html import write_html

            write_html(self.partial)
        try:
            if self.out.exists():
                shutil.rmtree(backup, ignore_errors=True)
                os.replace(self.out, backup)
                os.replace(self.partial, self.out)
                if self.replaces_source and check is not None:
                    try:
                        check(self.out)
                    except BaseException:
                        shutil.rmtree(self.out, ignore_errors=True)
                        os.replace(backup, self.out)
                        raise
                shutil.rmtree(backup, ignore_errors=True)
            else:
                os.replace(self.partial, self.out)
        except OSError as e:
            raise LayerwiseError(f"cannot write {self.out}: {io_reason(e)}; nothing was changed") from e
        self.committed = True
        self.release()
        return self.out

    # --- the run ----------------------------------------------------------------------------------
    @contextmanager
    def run(self) -> Iterator["Artifact"]:
        """Hold the lock for a whole run; turn every failure into the contract's outcome."""
        self.lock()
        try:
            yield self
        except LayerwiseError:
            self.abort()
            raise
        except KeyboardInterrupt:
            if self.keep_for_resume():
                from ..console import info

                info(f"interrupted: finished work is kept in {self.partial}; rerun the same command with "
                     "--resume to continue")
                self.release()
            else:
                self.abort()
            raise
        except Exception as e:
            reason = io_reason(e)
            if self.keep_for_resume() and reason is None:
                self.release()
                raise
            self.abort()
            if reason is not None:
                raise LayerwiseError(f"cannot write {self.out}: {reason}; nothing was written"
                                     + ("" if not self.replaces_source else " and the source is unchanged")) from e
            raise
        finally:
            if not self.committed:
                self.release()

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """`with art.writing() as tmp:` write into tmp; on a clean exit it becomes the output."""
        with self.run():
            tmp = self.begin()
            yield tmp
            self.commit()


def input_paths(model_path=None, tokenizer=None, plan=None, calib=None, data=None, extra=()) -> list:
    """The inputs of a command as (label, path) pairs for the overlap guard."""
    pairs = [("the model", model_path)]
    if isinstance(tokenizer, (str, os.PathLike)) and not str(tokenizer).startswith("zoo:"):
        pairs.append(("the tokenizer", tokenizer))
    if isinstance(plan, (str, os.PathLike)):
        pairs.append(("the plan", plan))
    for label, corpus in (("the calibration corpus", calib), ("the evaluation corpus", data)):
        if isinstance(corpus, str) and corpus.startswith("text:"):
            pairs.append((label, corpus[5:]))
    pairs.extend(extra)
    return [(label, p) for label, p in pairs if p is not None and Path(str(p)).expanduser().exists()]
