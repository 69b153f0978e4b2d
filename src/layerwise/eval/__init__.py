"""Quality, fidelity and speed measurements with one documented definition each."""
from .evaluate import EvalReport, evaluate
from .fidelity import agreement, embedding_fidelity
from .perplexity import PerplexityResult, perplexity
from .speed import SpeedResult, bytes_on_disk, count_parameters, measure_speed

__all__ = ["EvalReport", "evaluate", "agreement", "embedding_fidelity", "PerplexityResult", "perplexity",
           "SpeedResult", "bytes_on_disk", "count_parameters", "measure_speed"]
