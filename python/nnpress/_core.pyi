"""
nnpress C++ core: CABAC level coder, quantizers, .nnp container, CER/CSER kernels
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['CodebookMatrix', 'FormatError', 'HAS_ENCODER', 'NNP_DTYPES', 'NNP_METHODS', 'NNP_ROLES', 'NNP_STORAGES', 'NNP_VERSION', 'NnpReader', 'RowGroupMatrix', 'channel_scale_exps_of', 'channel_scales_of_exps', 'choose_format', 'decode_levels', 'dequantize', 'detect_isa', 'encode_levels', 'estimate_bits', 'isa_supported', 'level_stream_info', 'nnp_validate', 'nnp_write', 'quantize', 'rate_bits']
class FormatError(ValueError):
    pass
class NnpReader:
    """
    A parsed .nnp file (see nnpress/format/container.h).
    """
    @staticmethod
    def from_bytes(data: typing_extensions.Buffer, max_elements: typing.SupportsInt | typing.SupportsIndex, max_total_elements: typing.SupportsInt | typing.SupportsIndex) -> NnpReader:
        ...
    @staticmethod
    def from_file(path: str, max_elements: typing.SupportsInt | typing.SupportsIndex, max_total_elements: typing.SupportsInt | typing.SupportsIndex) -> NnpReader:
        ...
    def __len__(self) -> int:
        ...
    def channel_scale_exps(self, index: typing.SupportsInt | typing.SupportsIndex) -> tuple[typing.Any, typing.Any]:
        """
        (row exponents, column exponents) of a quantized tensor, int8 arrays or None.
        """
    def decode_all_into(self, outs: list, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def decode_into(self, index: typing.SupportsInt | typing.SupportsIndex, out: typing_extensions.Buffer, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def decode_levels_into(self, index: typing.SupportsInt | typing.SupportsIndex, out: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def tensors(self) -> list:
        ...
    def verify_checksums(self) -> None:
        ...
    @property
    def file_size(self) -> int:
        ...
    @property
    def metadata(self) -> str:
        ...
    @property
    def version(self) -> tuple[int, int]:
        ...
class RowGroupMatrix:
    """
    CER / CSER matrix (nnpress/sparse/matrix.h); immutable, validated.
    """
    @staticmethod
    def from_arrays(format: str, rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, omega: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], col: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], group_ptr: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], row_ptr: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32], group_value: typing.Annotated[numpy.typing.ArrayLike, numpy.uint32] | None = None) -> RowGroupMatrix:
        ...
    @staticmethod
    def from_dense(format: str, w: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], max_values: typing.SupportsInt | typing.SupportsIndex = 65536) -> RowGroupMatrix:
        ...
    @staticmethod
    def from_levels(format: str, levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], step: typing.SupportsFloat | typing.SupportsIndex) -> RowGroupMatrix:
        ...
    @typing.overload
    def product(self, x: numpy.typing.NDArray[numpy.float32], isa: str | None = None, threads: typing.SupportsInt | typing.SupportsIndex = 1) -> numpy.ndarray:
        """
        y = M @ x for x of shape (cols,) or (cols, batch); GIL released. x must already be a C-contiguous float32
        ndarray, and threads a non-negative int: anything else selects the second overload, which returns None
        (the Python wrapper then checks and converts; a failed overload match would build a TypeError message
        holding repr(x), which cost more than the product for large lists).
        """
    @typing.overload
    def product(self, x: typing.Any, isa: typing.Any = None, threads: typing.Any = 1) -> None:
        ...
    def to_dense(self) -> numpy.ndarray:
        ...
    @property
    def col(self) -> numpy.ndarray:
        ...
    @property
    def cols(self) -> int:
        ...
    @property
    def format(self) -> str:
        ...
    @property
    def group_ptr(self) -> numpy.ndarray:
        ...
    @property
    def group_value(self) -> typing.Any:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @property
    def nnz(self) -> int:
        ...
    @property
    def num_groups(self) -> int:
        ...
    @property
    def omega(self) -> numpy.ndarray:
        ...
    @property
    def plan_nbytes(self) -> int:
        """
        Bytes of the batch-1 kernel plan derived from the arrays (not stored in files)
        """
    @property
    def row_ptr(self) -> numpy.ndarray:
        ...
    @property
    def rows(self) -> int:
        ...
class CodebookMatrix:
    """
    Dense-codebook matrix: 4-bit value index per weight, 16-entry table.
    """
    @staticmethod
    def from_arrays(rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, lut: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], packed: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8]) -> CodebookMatrix:
        ...
    @staticmethod
    def from_dense(w: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> CodebookMatrix:
        ...
    @staticmethod
    def from_levels(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], step: typing.SupportsFloat | typing.SupportsIndex) -> CodebookMatrix:
        ...
    @typing.overload
    def product(self, x: numpy.typing.NDArray[numpy.float32], isa: str | None = None, threads: typing.SupportsInt | typing.SupportsIndex = 1) -> numpy.ndarray:
        """
        y = M @ x for x of shape (cols,) or (cols, batch); GIL released. x must already be a C-contiguous float32
        ndarray, and threads a non-negative int: anything else selects the second overload, which returns None
        (the Python wrapper then checks and converts; a failed overload match would build a TypeError message
        holding repr(x), which cost more than the product for large lists).
        """
    @typing.overload
    def product(self, x: typing.Any, isa: typing.Any = None, threads: typing.Any = 1) -> None:
        ...
    def to_dense(self) -> numpy.ndarray:
        ...
    @property
    def cols(self) -> int:
        ...
    @property
    def lut(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @property
    def num_values(self) -> int:
        ...
    @property
    def packed(self) -> numpy.ndarray:
        ...
    @property
    def rows(self) -> int:
        ...
def channel_scale_exps_of(scales: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> numpy.typing.NDArray[numpy.int8]:
    """
    Nearest int8 exponents e (scale 2^(e/8), clamped to [-128, 127]) of positive scales.
    """
def channel_scales_of_exps(exps: typing.Annotated[numpy.typing.ArrayLike, numpy.int8]) -> numpy.typing.NDArray[numpy.float64]:
    """
    Scales 2^(e/8) (float64, bit-exact as the .nnp decoder forms them) of int8 exponents.
    """
def choose_format(rows: typing.SupportsInt | typing.SupportsIndex, cols: typing.SupportsInt | typing.SupportsIndex, nnz: typing.SupportsInt | typing.SupportsIndex, num_values: typing.SupportsInt | typing.SupportsIndex, batch: typing.SupportsInt | typing.SupportsIndex, allow_dense: bool = False) -> str:
    ...
def decode_levels(data: typing_extensions.Buffer, max_elements: typing.SupportsInt | typing.SupportsIndex = 68719476736) -> numpy.typing.NDArray[numpy.int32]:
    """
    Decode a framed level stream (bytes-like) into an int32 array of its stored shape.
    """
def dequantize(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], step: typing.SupportsFloat | typing.SupportsIndex, method: typing.SupportsInt | typing.SupportsIndex, row_scale: typing.Any = None, col_scale: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    Reconstruct float32 weights from int32 levels (method: 0 nearest, 1 rdoq, 2 trellis), optional float64 per-row / per-column step scales.
    """
def detect_isa() -> str:
    ...
def encode_levels(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> bytes:
    """
    Encode C-contiguous int32 levels (any layout of `shape`'s elements) as a framed level stream.
    """
def estimate_bits(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> float:
    """
    Bits the coder's contexts predict for the levels (payload only).
    """
def isa_supported(name: str) -> bool:
    ...
def level_stream_info(data: typing_extensions.Buffer) -> dict:
    """
    Header fields of a framed level stream (checks the checksum, decodes nothing).
    """
def nnp_validate(data: typing_extensions.Buffer) -> None:
    """
    Parse a .nnp file held in a buffer (no copy) and check every CRC; raises on bad data.
    """
def nnp_write(specs: list, block_elements: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex, metadata: str, size_tolerance: typing.SupportsFloat | typing.SupportsIndex) -> tuple[bytes, typing.Any, int]:
    """
    Assemble a .nnp file in memory; returns (bytes, stored bytes per tensor, table bytes).
    """
def quantize(weights: numpy.ndarray, importance: typing.Any, step: typing.SupportsFloat | typing.SupportsIndex, lam: typing.SupportsFloat | typing.SupportsIndex, method: typing.SupportsInt | typing.SupportsIndex, chunk_rows: typing.SupportsInt | typing.SupportsIndex, max_passes: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex, want_recon: bool, row_scale: typing.Any = None, col_scale: typing.Any = None, feedback: typing.Any = None, row_feedback: typing.Any = None) -> tuple:
    """
    Quantize C-contiguous float32/float64 weights -> (int32 levels, float32 reconstruction or None, info).
    """
def rate_bits(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], unary_len: typing.SupportsInt | typing.SupportsIndex, eg_order: typing.SupportsInt | typing.SupportsIndex, chunk_rows: typing.SupportsInt | typing.SupportsIndex) -> float:
    """
    Estimated bits of int32 levels with the given level params and chunked contexts.
    """
HAS_ENCODER: bool = True
NNP_DTYPES: dict = {'float32': 1, 'float16': 2, 'bfloat16': 3, 'float64': 4, 'int8': 5, 'uint8': 6, 'int16': 7, 'int32': 8, 'int64': 9, 'bool': 10, 'uint16': 11, 'uint32': 12, 'uint64': 13}
NNP_METHODS: dict = {'nearest': 0, 'rdoq': 1, 'trellis': 2}
NNP_ROLES: dict = {'weight': 0, 'bias': 1, 'norm': 2, 'embedding': 3, 'buffer': 4, 'other': 5}
NNP_STORAGES: dict = {'raw': 0, 'quantized': 1, 'alias': 2}
NNP_VERSION: tuple = (1, 1)
