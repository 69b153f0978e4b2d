"""Allocators: one global budget → exact per-layer budgets, keyed by the names users type."""
from .budget import fit_budget, linear_map
from .methods import ALLOCATORS, allocate, get_allocator

__all__ = ["fit_budget", "linear_map", "ALLOCATORS", "allocate", "get_allocator"]
