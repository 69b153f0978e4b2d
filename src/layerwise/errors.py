"""User-facing errors.

Every problem the user can fix (bad path, unknown name, bad number, unreadable data) is raised as a
`LayerwiseError`. The CLI prints its message as one line and exits with code 2; the Python API lets
it propagate. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class LayerwiseError(Exception):
    """A problem with the user's input, reported as one line (CLI exit code 2)."""

    exit_code = 2

    def __init__(self, message: str):
        # One line: collapse any newlines a wrapped library message carries.
        super().__init__(" ".join(str(message).split()))


class ModelLoadError(LayerwiseError):
    """The model (or its tokenizer) could not be found or loaded."""


class DataError(LayerwiseError):
    """A corpus could not be read, is empty, or is too short for the request."""


class ConfigError(LayerwiseError):
    """An option, recipe or plan is invalid."""
