"""Keeping what C libraries write to file descriptor 2 off the user's terminal."""
from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def quiet_stderr():
    """Point fd 2 at /dev/null for the duration (Python's sys.stderr writes there too); restore after."""
    fd = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
