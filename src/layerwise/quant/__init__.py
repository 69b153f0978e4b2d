"""Weight quantizers (RTN, GPTQ) keyed by the names users type, GPTQ-layout packing, and layer-wise
quantization-aware training with a learned rate (`qat`)."""
from . import methods  # noqa: F401  (registers rtn and gptq)
from . import qat  # noqa: F401  (registers quantization-aware training: entropy)
from .base import MAX_BITS, MIN_BITS, QUANTIZERS, QuantResult, QuantSpec, Quantizer, check_bits, get_quantizer
from .pack import from_gptq, gptq_compatible, pack_rows, to_gptq, unpack_rows

__all__ = ["MAX_BITS", "MIN_BITS", "QUANTIZERS", "QuantResult", "QuantSpec", "Quantizer", "check_bits",
           "get_quantizer", "from_gptq", "gptq_compatible", "pack_rows", "to_gptq", "unpack_rows"]
