"""Command-line interface. `main()` turns user errors into one line on stderr and exit code 2."""
from __future__ import annotations

import sys

try:  # typer >= 0.29 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from ..console import err_console


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip('\n') + '\n')
    sys.stderr.flush()
from ..errors import LayerwiseError
from .app import app
from . import analyze as _analyze  # noqa: F401  (registers commands)
from . import demo as _demo  # noqa: F401
from . import depth as _depth  # noqa: F401
from . import distill as _distill  # noqa: F401
from . import evaluate as _evaluate  # noqa: F401
from . import prune as _prune  # noqa: F401
from . import quantize as _quantize  # noqa: F401
from . import width as _width  # noqa: F401
from . import zoo as _zoo  # noqa: F401


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> int:
    from ..utils.hf import quiet

    quiet()
    import shlex

    from ..io import manifest as _manifest

    _manifest.CURRENT_COMMAND = shlex.join(["layerwise"] + list(sys.argv[1:] if argv is None else argv))
    try:
        rv = app(args=argv, prog_name="layerwise", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
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
    except click_exc.Exit as e:
        code = e.exit_code
    except (click_exc.Abort, KeyboardInterrupt):
        _err("interrupted")
        code = 130
    finally:
        _manifest.CURRENT_COMMAND = None
    if argv is None:
        sys.exit(code)
    return code
