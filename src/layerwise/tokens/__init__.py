"""Token-wise pruning: one routing mechanism (routing.py), selectors as registered methods
(selectors.py), router training and schedule search (train.py, search.py), FLOPs (flops.py)."""
from .routing import TokenRouting, pack
from .selectors import TOKEN_SELECTORS, TokenSelector

__all__ = ["TOKEN_SELECTORS", "TokenRouting", "TokenSelector", "pack"]
