"""Installing a token mechanism on a model: every block's forward replaced by the mechanism's wrapper,
plus forward pre-hooks where it needs a model's inputs; `remove()` restores the stock model.
Shared by decoder routing (`routing.py`) and encoder reduction (`merging.py`)."""
from __future__ import annotations

import types


class BlockPatch:
    """Subclasses set `model`, `adapter`, and give `_wrapper(i, orig)` and `_pre_hooks()`."""

    _installed = False

    def _wrapper(self, i: int, orig):
        raise NotImplementedError

    def _pre_hooks(self) -> list:
        """(module, hook) pairs registered as forward pre-hooks with kwargs."""
        return []

    def install(self):
        if self._installed:
            return self
        for i, block in enumerate(self.adapter.block_list()):
            orig = block.forward
            block._layerwise_forward = orig
            block.forward = types.MethodType(self._wrapper(i, orig), block)
        self._hooks = [m.register_forward_pre_hook(fn, with_kwargs=True) for m, fn in self._pre_hooks()]
        self.model._layerwise_tokens = self
        self._installed = True
        return self

    def remove(self) -> None:
        for block in self.adapter.block_list():
            if hasattr(block, "_layerwise_forward"):
                del block.forward
                del block._layerwise_forward
        for h in getattr(self, "_hooks", []):
            h.remove()
        self._hooks = []
        if getattr(self.model, "_layerwise_tokens", None) is self:
            del self.model._layerwise_tokens
        self._installed = False

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.remove()
