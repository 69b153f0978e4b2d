"""Local pruners keyed by the names users type (`--method wanda`)."""
from . import local  # noqa: F401  (registers magnitude, wanda, sparsegpt)
from .base import PRUNERS, Budget, PruneOutput, Pruner, get_pruner, register
from .masks import check_sparsity, nm_str, parse_nm, valid_nm

__all__ = ["PRUNERS", "Budget", "PruneOutput", "Pruner", "get_pruner", "register", "check_sparsity",
           "nm_str", "parse_nm", "valid_nm"]
