"""The one verified-reload path: before an output directory is committed, what was written is loaded
back (by the loader users call, so through the format handler its marker names) and must compute
exactly what the in-memory result computes. A mismatch is an error and nothing is committed.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import LayerwiseError
from ..models.adapters import get_adapter
from ..models.loader import output_tensor
from .formats import detect


def how_it_loads(directory: Path) -> str:
    fmt = detect(Path(directory))
    return f"layerwise.load ({fmt.name})" if fmt is not None else "stock from_pretrained"


def _takes(model: nn.Module, name: str) -> bool:
    import inspect

    params = inspect.signature(model.forward).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


@torch.no_grad()
def check_reload(model: nn.Module, directory: Path, inputs: dict | None = None, what: str = "saved model",
                 dtype: torch.dtype | None = None, loader=None) -> str:
    """Load `directory` (with `loader(path)`, default layerwise's loader) and compare its outputs on
    `inputs` (default: the adapter's example inputs) with `model`'s, bit for bit. Returns the line the
    manifest records."""
    from .load import load_dir

    directory = Path(directory)
    if inputs is None:
        inputs = get_adapter(model).example_inputs(batch=2, length=32)
    dtype = dtype or next(p for p in model.parameters() if not p.is_meta).dtype
    back = loader(directory) if loader is not None else load_dir(directory, dtype=dtype)[0]
    was_training = model.training
    model.eval()
    extra = {"use_cache": False} if _takes(model, "use_cache") else {}
    try:
        a = output_tensor(model(**inputs, **extra))
        b = output_tensor(back.eval()(**inputs, **extra))
    finally:
        model.train(was_training)
    if a.shape != b.shape or not torch.equal(a, b):
        diff = float((a - b).abs().max()) if a.shape == b.shape else float("nan")
        raise LayerwiseError(f"the {what} does not reproduce the in-memory outputs (max diff {diff:.3g}); "
                             f"nothing was written")
    how = "stock from_pretrained" if loader is not None else how_it_loads(directory)
    return f"{how} reload: outputs identical to the in-memory model"


@torch.no_grad()
def check_streamed_reload(directory: Path, ids: torch.Tensor, final_hidden: torch.Tensor,
                          dtype: torch.dtype = torch.float32) -> str:
    """Stream `directory` back block by block (no more memory than a streamed run) and compare its
    last-block activations on `ids` with the engine's, bit for bit."""
    from ..engine.capture import capture_block_inputs
    from ..engine.store import LazyStore

    back = LazyStore(Path(directory), None, dtype=dtype)
    n = final_hidden.shape[0]
    (batch,) = capture_block_inputs(back.model, back.adapter, ids[:n], batch_size=n)
    h = batch.hidden
    for i in range(back.adapter.num_blocks):
        h = back.adapter.call_block(back.load_block(i), h, batch.args, batch.kwargs)
        back._free(i)
    if not torch.equal(h, final_hidden):
        raise LayerwiseError(f"the saved model does not reproduce the engine's activations (max diff "
                             f"{float((h - final_hidden).abs().max()):.3g}); nothing was written")
    return "streamed reload: last-block activations identical to the engine's"
