"""Allocators: one global budget → exact per-layer budgets, keyed by the names users type."""
from .budget import fit_budget, linear_map
from .methods import ALLOCATORS, Allocator, allocate, allocator_options, get_allocator, register

__all__ = ["fit_budget", "linear_map", "ALLOCATORS", "Allocator", "allocate", "allocator_options",
           "get_allocator", "register"]
