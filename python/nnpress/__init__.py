"""nnpress: DeepCABAC compression of neural networks and CER/CSER compressed-matrix kernels.

``import nnpress`` needs only numpy. Parts that need torch (model traversal, Fisher information,
``nnpress.nn``) import it when they are first used.
"""
from __future__ import annotations

from .codec import decode_levels, encode_levels, estimate_bits, level_stream_info
from .errors import FormatError
from .sparse import CERMatrix, CodebookMatrix, CSERMatrix
from .quant import channel_scale_exps, channel_scales, dequantize, quantize, quantize_info
from .config import CodecConfig, TensorPlan
from .container import NnpFile
from .api import CompressionReport, compress, decompress

__version__ = "0.1.0"

__all__ = [
    "CERMatrix",
    "CSERMatrix",
    "CodebookMatrix",
    "CodecConfig",
    "CompressionReport",
    "FormatError",
    "NnpFile",
    "TensorPlan",
    "channel_scale_exps",
    "channel_scales",
    "compress",
    "decompress",
    "decode_levels",
    "dequantize",
    "encode_levels",
    "estimate_bits",
    "level_stream_info",
    "quantize",
    "quantize_info",
]
