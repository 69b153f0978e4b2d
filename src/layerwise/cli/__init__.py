"""Command-line interface. `main()` turns user errors into one line on stderr and exit code 2."""
from __future__ import annotations

import os
import signal
import sys

try:  # typer >= 0.29 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from typer import exceptions as typer_exc

from ..console import err_console


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip('\n') + '\n')
    sys.stderr.flush()
from ..errors import LayerwiseError
from .app import app
from .common import refresh_choices
from . import analyze as _analyze  # noqa: F401  (registers commands)
from . import demo as _demo  # noqa: F401
from . import depth as _depth  # noqa: F401
from . import distill as _distill  # noqa: F401
from . import evaluate as _evaluate  # noqa: F401
from . import export as _export  # noqa: F401
from . import prune as _prune  # noqa: F401
from . import quantize as _quantize  # noqa: F401
from . import report as _report  # noqa: F401
from . import rl as _rl  # noqa: F401
from . import sample as _sample  # noqa: F401
from . import methods as _methods  # noqa: F401
from . import run as _run  # noqa: F401
from . import search as _search  # noqa: F401
from . import tokens as _tokens  # noqa: F401
from . import video as _video  # noqa: F401
from . import width as _width  # noqa: F401
from . import zoo as _zoo  # noqa: F401


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


class Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised where the process is so that outputs are cleaned up as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The signal that ended the current command, if any: typer swallows KeyboardInterrupt into a bare
# exit code 130, so the handler leaves the signal here for main() to report.
_RECEIVED: list[int] = []


def _on_signal(signum, frame):
    _RECEIVED.append(signum)
    raise Terminated(signum)


def _install_signal_handlers() -> dict:
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, _on_signal)
        except (ValueError, OSError):  # not the main thread
            pass
    return old


def _silence_stdout() -> None:
    """After a closed pipe (`layerwise ... | head`), drop further output instead of failing at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _interrupted(exc) -> int:
    if isinstance(exc, Terminated):
        _err(f"terminated by {exc}")
        return 128 + exc.signum
    _err("interrupted")
    return 130


def main(argv: list[str] | None = None) -> int:
    from ..utils.hf import quiet

    quiet()
    import shlex

    from ..io import manifest as _manifest
    from ..io.artifacts import io_reason

    _manifest.CURRENT_COMMAND = shlex.join(["layerwise"] + list(sys.argv[1:] if argv is None else argv))
    old_handlers = _install_signal_handlers()
    try:
        _RECEIVED.clear()
        refresh_choices()
        rv = app(args=argv, prog_name="layerwise", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # typer's answer to KeyboardInterrupt
            code = _interrupted(Terminated(_RECEIVED[-1]) if _RECEIVED else KeyboardInterrupt())
    except LayerwiseError as e:
        _err(f"error: {_one_line(e)}")
        code = e.exit_code
    except click_exc.NoArgsIsHelpError as e:
        err_console.print(e.format_message() if hasattr(e, "format_message") else str(e), markup=False)
        code = 2
    except click_exc.UsageError as e:
        path = e.ctx.command_path if e.ctx is not None else "layerwise"
        _err(f"error: {_one_line(e.format_message())} (see: {path} --help)")
        code = 2
    except click_exc.ClickException as e:
        _err(f"error: {_one_line(e.format_message())}")
        code = 2
    except typer_exc.Exit as e:
        code = e.exit_code
    except BrokenPipeError:
        _silence_stdout()
        code = 0
    except SystemExit as e:  # rich exits with 1 on a broken pipe while printing help
        if isinstance(e.__context__, BrokenPipeError):
            _silence_stdout()
            code = 0
        else:
            raise
    except (typer_exc.Abort, KeyboardInterrupt) as e:
        # click turns KeyboardInterrupt (and so our SIGTERM/SIGHUP) into Abort
        code = _interrupted(e if isinstance(e, KeyboardInterrupt) else e.__cause__ or e.__context__)
    except OSError as e:  # a disk fault outside any output directory (e.g. a cache file)
        reason = io_reason(e)
        if reason is None:
            raise
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        _err(f"error: cannot write{where}: {reason}")
        code = 2
    finally:
        _manifest.CURRENT_COMMAND = None
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if argv is None:
        sys.exit(code)
    return code
