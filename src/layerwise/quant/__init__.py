"""Weight quantizers (RTN, GPTQ) keyed by the names users type, and GPTQ-layout packing."""
from . import methods  # noqa: F401  (registers rtn and gptq)
from .base import MAX_BITS, MIN_BITS, QUANTIZERS, QuantResult, QuantSpec, Quantizer, check_bits, get_quantizer
from .pack import from_gptq, gptq_compatible, pack_rows, to_gptq, unpack_rows

__all__ = ["MAX_BITS", "MIN_BITS", "QUANTIZERS", "QuantResult", "QuantSpec", "Quantizer", "check_bits",
           "get_quantizer", "from_gptq", "gptq_compatible", "pack_rows", "to_gptq", "unpack_rows"]
