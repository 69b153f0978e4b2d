"""Keep transformers / huggingface_hub quiet: layerwise shows its own progress and errors."""
from __future__ import annotations

import os
import warnings

_done = False


def quiet() -> None:
    global _done
    if _done:
        return
    _done = True
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
