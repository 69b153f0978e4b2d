"""The sequential block-by-block engine shared by pruning, quantization and reconstruction."""
from .capture import BlockBatch, capture_block_inputs, check_finite
from .sequential import (PROPAGATE, BlockWork, Checkpointer, EngineResult, Pass, Timings, fingerprint,
                         run_sequential, run_towers)
from .stats import InputStats, StatsCollector
from .store import BlockStore, InMemoryStore, LazyStore, ShardWriter

__all__ = ["BlockBatch", "capture_block_inputs", "check_finite", "PROPAGATE", "BlockWork", "Checkpointer",
           "EngineResult", "Pass", "Timings", "fingerprint", "run_sequential", "run_towers", "InputStats", "StatsCollector",
           "BlockStore", "InMemoryStore", "LazyStore", "ShardWriter"]
