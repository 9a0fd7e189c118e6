"""nnpress: DeepCABAC compression of neural networks and CER/CSER compressed-matrix kernels.

``import nnpress`` needs only numpy. Parts that need torch (model traversal, Fisher information,
``nnpress.nn``) import it when they are first used.
"""

from __future__ import annotations

from .api import CompressionReport, compress, decompress, decompress_to_file
from .codec import decode_levels, encode_levels, estimate_bits, level_stream_info
from .config import CodecConfig, TensorPlan
from .container import NnpFile
from .errors import FormatError, NnpMismatchError
from .loading import from_pretrained, load_state_dict
from .prune import prune, sparsity_of
from .quant import channel_scale_exps, channel_scales, dequantize, quantize, quantize_info
from .sparse import CERMatrix, CodebookMatrix, CSERMatrix

# Parts that need torch are imported on first use, so that ``import nnpress`` needs only numpy:
# the Fisher functions by name, and every submodule as an attribute (``nnpress.nn.convert(...)``
# works after a bare ``import nnpress``). fisher_column_blocks / fisher_row_blocks: deprecated names
# of fisher_hessians / fisher_row_hessians, kept for one release.
_LAZY = {
    "fisher_diagonal": "fisher",
    "fisher_hessians": "fisher",
    "fisher_row_hessians": "fisher",
    "probe_sensitivity": "fisher",
    "fisher_column_blocks": "fisher",
    "fisher_row_blocks": "fisher",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # the submodule exists but needs a missing package
                raise
    raise AttributeError(f"module 'nnpress' has no attribute {name!r}")


from ._version import __version__ as __version__  # the one version number

__all__ = [
    "CERMatrix",
    "CSERMatrix",
    "CodebookMatrix",
    "CodecConfig",
    "CompressionReport",
    "FormatError",
    "NnpFile",
    "NnpMismatchError",
    "TensorPlan",
    "channel_scale_exps",
    "channel_scales",
    "compress",
    "decode_levels",
    "decompress",
    "decompress_to_file",
    "dequantize",
    "encode_levels",
    "estimate_bits",
    "fisher_diagonal",
    "fisher_hessians",
    "fisher_row_hessians",
    "from_pretrained",
    "level_stream_info",
    "load_state_dict",
    "probe_sensitivity",
    "prune",
    "quantize",
    "quantize_info",
    "sparsity_of",
]
