"""Video compression with implicit neural representations (NIRVANA): per-group patch-wise networks,
autoregressive initialisation, quantization-aware training with a learned rate, range-coded residuals."""
from .codec import CodecConfig, EncodeResult, decode, encode
from .net import NetConfig

__all__ = ["CodecConfig", "EncodeResult", "NetConfig", "decode", "encode"]
