"""
nnpress C++ core: CABAC level coder, quantizers, .nnp container, CER/CSER kernels
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['CodebookMatrix', 'DType', 'FormatError', 'HAS_ENCODER', 'LevelMatrix', 'LevelParams', 'LutMatrix', 'NNP_VERSION', 'NnpFileWriter', 'NnpReader', 'QuantMethod', 'QuantOptions', 'QuantResult', 'RowGroupMatrix', 'Storage', 'TensorInput', 'TensorRole', 'WriterOptions', 'channel_scale_exps_of', 'channel_scales_of_exps', 'choose_format', 'decode_levels', 'dequantize', 'detect_isa', 'encode_levels', 'estimate_bits', 'isa_supported', 'level_stream_info', 'nnp_validate', 'quantize', 'rate_bits', 'write_nnp']
class FormatError(ValueError):
    pass
class DType:
    """
    Element type of a stored tensor (docs/FORMAT.md).
    
    Members:
    
      float32
    
      float16
    
      bfloat16
    
      float64
    
      int8
    
      uint8
    
      int16
    
      int32
    
      int64
    
      bool
    
      uint16
    
      uint32
    
      uint64
    """
    __members__: typing.ClassVar[dict[str, DType]]
    bfloat16: typing.ClassVar[DType]
    bool: typing.ClassVar[DType]
    float16: typing.ClassVar[DType]
    float32: typing.ClassVar[DType]
    float64: typing.ClassVar[DType]
    int16: typing.ClassVar[DType]
    int32: typing.ClassVar[DType]
    int64: typing.ClassVar[DType]
    int8: typing.ClassVar[DType]
    uint16: typing.ClassVar[DType]
    uint32: typing.ClassVar[DType]
    uint64: typing.ClassVar[DType]
    uint8: typing.ClassVar[DType]
    @typing.overload
    def __eq__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: DType) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class TensorRole:
    """
    What a tensor is in its model.
    
    Members:
    
      weight
    
      bias
    
      norm
    
      embedding
    
      buffer
    
      other
    """
    __members__: typing.ClassVar[dict[str, TensorRole]]
    bias: typing.ClassVar[TensorRole]
    buffer: typing.ClassVar[TensorRole]
    embedding: typing.ClassVar[TensorRole]
    norm: typing.ClassVar[TensorRole]
    other: typing.ClassVar[TensorRole]
    weight: typing.ClassVar[TensorRole]
    @typing.overload
    def __eq__(self, other: TensorRole) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: TensorRole) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class Storage:
    """
    How a tensor is stored.
    
    Members:
    
      raw
    
      quantized
    
      alias
    """
    __members__: typing.ClassVar[dict[str, Storage]]
    alias: typing.ClassVar[Storage]
    quantized: typing.ClassVar[Storage]
    raw: typing.ClassVar[Storage]
    @typing.overload
    def __eq__(self, other: Storage) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: Storage) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
class QuantMethod:
    """
    Quantizer / reconstruction rule (nnpress/quant/dequantize.h).
    
    Members:
    
      nearest
    
      rdoq
    
      trellis
    """
    __members__: typing.ClassVar[dict[str, QuantMethod]]
    nearest: typing.ClassVar[QuantMethod]
    rdoq: typing.ClassVar[QuantMethod]
    trellis: typing.ClassVar[QuantMethod]
    @typing.overload
    def __eq__(self, other: QuantMethod) -> bool:
        ...
    @typing.overload
    def __eq__(self, other: typing.Any) -> bool:
        ...
    def __getstate__(self) -> int:
        ...
    def __hash__(self) -> int:
        ...
    def __index__(self) -> int:
        ...
    def __init__(self, value: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __int__(self) -> int:
        ...
    @typing.overload
    def __ne__(self, other: QuantMethod) -> bool:
        ...
    @typing.overload
    def __ne__(self, other: typing.Any) -> bool:
        ...
    def __repr__(self) -> str:
        ...
    def __setstate__(self, state: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __str__(self) -> str:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def value(self) -> int:
        ...
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
    def decode_levels_into(self, index: typing.SupportsInt | typing.SupportsIndex, out: typing_extensions.Buffer, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def decode_levels_rows_into(self, index: typing.SupportsInt | typing.SupportsIndex, row_begin: typing.SupportsInt | typing.SupportsIndex, row_count: typing.SupportsInt | typing.SupportsIndex, out: typing_extensions.Buffer, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Levels of rows [row_begin, row_begin + row_count) of a quantized tensor's rows x cols view.
        """
    def level_row_blocks(self, index: typing.SupportsInt | typing.SupportsIndex) -> list:
        """
        (first row, rows) of each chunk of a quantized tensor (its independently coded row blocks); [] for a raw tensor.
        """
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
class TensorInput:
    """
    One tensor for write_nnp (TensorInput in nnpress/format/container.h). Arrays are referenced, not copied: the object keeps them alive.
    """
    def __init__(self, *, name: str, dtype: DType, role: TensorRole, storage: Storage, shape: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], levels: typing.Any = None, raw: typing.Any = None, method: QuantMethod = ..., step: typing.SupportsFloat | typing.SupportsIndex = 0.0, lam: typing.SupportsFloat | typing.SupportsIndex = 0.0, alias_of: typing.SupportsInt | typing.SupportsIndex = 0, rows_per_block: typing.SupportsInt | typing.SupportsIndex = 0, unary_len: typing.SupportsInt | typing.SupportsIndex = -1, eg_order: typing.SupportsInt | typing.SupportsIndex = -1, row_scale_exp: typing.Any = None, col_scale_exp: typing.Any = None) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def dtype(self) -> DType:
        ...
    @property
    def eg_order(self) -> int:
        ...
    @property
    def lam(self) -> float:
        ...
    @property
    def method(self) -> QuantMethod:
        ...
    @property
    def name(self) -> str:
        ...
    @property
    def role(self) -> TensorRole:
        ...
    @property
    def rows_per_block(self) -> int:
        ...
    @property
    def shape(self) -> tuple:
        ...
    @property
    def step(self) -> float:
        ...
    @property
    def storage(self) -> Storage:
        ...
    @property
    def unary_len(self) -> int:
        ...
class WriterOptions:
    """
    Options of write_nnp (WriterOptions in nnpress/format/container.h).
    """
    metadata: str
    verify: bool
    def __init__(self) -> None:
        ...
    @property
    def block_elements(self) -> int:
        ...
    @block_elements.setter
    def block_elements(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def size_tolerance(self) -> float:
        ...
    @size_tolerance.setter
    def size_tolerance(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def threads(self) -> int:
        ...
    @threads.setter
    def threads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class NnpFileWriter:
    """
    Writes a .nnp file tensor by tensor (ContainerFileWriter in nnpress/format/container.h): a temporary file next to `path`, renamed onto it by finish(). The bytes equal write_nnp's for the same tensors in the same order. As a context manager, leaving the block without finish() — by an exception or not — aborts: the temporary file is removed and an existing file at `path` is left untouched. I/O errors raise OSError (the temporary file is then gone), bad inputs ValueError/TypeError, and a failed options.verify FormatError.
    """
    def __enter__(self) -> NnpFileWriter:
        ...
    def __exit__(self, exc_type: typing.Any, exc_value: typing.Any, traceback: typing.Any) -> bool:
        """
        Abort unless finish() has run (the exception, if any, propagates).
        """
    def __init__(self, path: str, options: WriterOptions) -> None:
        ...
    def abort(self) -> None:
        """
        Remove the temporary file (nothing happens after finish() or a second abort()).
        """
    def add(self, t: TensorInput) -> None:
        """
        Code one tensor's row blocks (on options.threads threads, GIL released) and append them. An alias may refer only to a tensor added before. A refused input writes nothing and the writer stays usable.
        """
    def add_many(self, ts: collections.abc.Sequence[TensorInput]) -> None:
        """
        Several tensors in order, their row blocks coded on one pool (for many small tensors); validated as a whole first: one refused input refuses the batch and writes nothing.
        """
    def finish(self) -> int:
        """
        Write the table and header, (options.verify: read the file back and check it), fsync, rename onto the path; returns the file's size in bytes.
        """
    @property
    def bytes_written(self) -> int:
        """
        Bytes in the file so far (the whole file after finish()).
        """
    @property
    def is_open(self) -> bool:
        """
        True until finish(), abort() or an I/O error.
        """
    @property
    def stored_bytes(self) -> list[int]:
        """
        Chunk bytes of each tensor added so far, in order.
        """
    @property
    def tensor_count(self) -> int:
        ...
class LevelMatrix:
    """
    Weights held as integer reconstruction indices u with per-row (and per-column) scales:
    W[i, j] = row_scale[i] * col_scale[j] * u[i, j] (nnpress/kernels/levels.h). Immutable, validated when built.
    """
    @staticmethod
    def from_levels(u: numpy.ndarray, row_scale: numpy.ndarray, col_scale: typing.Any = None) -> LevelMatrix:
        """
        u: integer [rows, cols] (values within int32); row_scale: [rows] finite > 0; col_scale: [cols] finite > 0 or None.
        """
    @staticmethod
    def from_nnp(reader: NnpReader, index: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex = 1) -> LevelMatrix:
        """
        From quantized tensor `index` of an open NnpReader (NnpFile.level_matrix(name) is the friendly form): its levels, method, step and channel scales; the view rows = shape[0], cols = the rest.
        """
    def __repr__(self) -> str:
        ...
    def indices(self) -> numpy.typing.NDArray[numpy.int32]:
        """
        u as int32 [rows, cols].
        """
    def matmul(self, x: numpy.ndarray, out: typing.Any = None, isa: str | None = None, threads: typing.SupportsInt | typing.SupportsIndex = 1, activations: str = 'float32', bias: typing.Any = None) -> numpy.ndarray:
        """
        Y = X @ W.T (+ bias) for X float32 [..., cols] (e.g. [cols], [batch, cols], [batch, tokens, cols]), C-contiguous; returns float32 [..., rows], written into `out` if given (C-contiguous float32 of that shape, not overlapping x). GIL released. isa: None (automatic, NNPRESS_ISA honoured) or 'scalar'/'avx2'/'avx512'/'neon'; threads: 0 = as many as pay. activations: 'float32' (exact inputs) or 'int16' (each row of x rounded to integers in [-L, L] on its own scale max|x| / L, then exact integer sums: opt-in; L = 32767 for int8 dense parts, min(32767, (2^31 - 1) // (512 * max|u|)) for int16 ones, float32 when that is below 2047; see nnpress/kernels/levels.h). bias: None or float32 [rows], added to each rounded result.
        """
    def to_dense(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        W as float32 [rows, cols].
        """
    @property
    def col_scale(self) -> typing.Any:
        ...
    @property
    def cols(self) -> int:
        ...
    @property
    def index_bits(self) -> int:
        """
        8 or 16: bits per index in the dense part.
        """
    @property
    def nbytes(self) -> int:
        """
        Bytes held (dense part with padding, list, scales).
        """
    @property
    def outliers(self) -> int:
        """
        Entries held in the exact list, outside the dense part's int8 (or int16) range.
        """
    @property
    def row_scale(self) -> numpy.ndarray:
        ...
    @property
    def rows(self) -> int:
        ...
class LutMatrix:
    """
    Weights with at most 16 distinct reconstruction indices per row, as 4-bit codes into a 16-value table per row:
    W[i, j] = row_scale[i] * col_scale[j] * table[i][code[i, j]] (nnpress/kernels/lut.h). Immutable, validated when built.
    """
    @staticmethod
    def from_level_matrix(lm: LevelMatrix) -> LutMatrix:
        """
        The same weights as a LevelMatrix (ValueError for a row of more than 16 values).
        """
    @staticmethod
    def from_levels(u: numpy.ndarray, row_scale: numpy.ndarray, col_scale: typing.Any = None) -> LutMatrix:
        """
        u: integer [rows, cols] (|u| <= 2^24, at most 16 distinct per row, else ValueError naming the row); row_scale: [rows] finite > 0; col_scale: [cols] finite > 0 or None.
        """
    @staticmethod
    def from_nnp(reader: NnpReader, index: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex = 1) -> LutMatrix:
        """
        From quantized tensor `index` of an open NnpReader (NnpFile.lut_matrix(name) is the friendly form): its levels, method, step and channel scales; the view rows = shape[0], cols = the rest.
        """
    def __repr__(self) -> str:
        ...
    def indices(self) -> numpy.typing.NDArray[numpy.int32]:
        """
        u as int32 [rows, cols].
        """
    def matmul(self, x: numpy.ndarray, out: typing.Any = None, isa: str | None = None, threads: typing.SupportsInt | typing.SupportsIndex = 1) -> numpy.ndarray:
        """
        Y = X @ W.T for X float32 [..., cols], C-contiguous; returns float32 [..., rows], written into `out` if given (C-contiguous float32 of that shape, not overlapping x). GIL released. isa: None (automatic, NNPRESS_ISA honoured) or 'scalar'/'avx2'/'avx512'/'neon'; threads: 0 = as many as pay.
        """
    def to_dense(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        W as float32 [rows, cols].
        """
    @property
    def col_scale(self) -> typing.Any:
        ...
    @property
    def cols(self) -> int:
        ...
    @property
    def max_values(self) -> int:
        """
        The most distinct values in one row (1..16).
        """
    @property
    def nbytes(self) -> int:
        """
        Bytes held (codes, tables, scales).
        """
    @property
    def row_scale(self) -> numpy.ndarray:
        ...
    @property
    def rows(self) -> int:
        ...
class LevelParams:
    """
    Binarization parameters of a level stream (binarization.h).
    """
    def __init__(self) -> None:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def eg_order(self) -> int:
        ...
    @eg_order.setter
    def eg_order(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def unary_len(self) -> int:
        ...
    @unary_len.setter
    def unary_len(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class QuantOptions:
    """
    Scalar options of quantize (QuantOptions in nnpress/quant/quantize.h); the arrays (scales, feedback factors) are quantize's arguments.
    """
    method: QuantMethod
    def __init__(self) -> None:
        ...
    @property
    def lam(self) -> float:
        ...
    @lam.setter
    def lam(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def max_passes(self) -> int:
        ...
    @max_passes.setter
    def max_passes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def rows_per_block(self) -> int:
        ...
    @rows_per_block.setter
    def rows_per_block(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def size_tolerance(self) -> float:
        ...
    @size_tolerance.setter
    def size_tolerance(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def step(self) -> float:
        ...
    @step.setter
    def step(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def threads(self) -> int:
        ...
    @threads.setter
    def threads(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class QuantResult:
    """
    What quantize chose and measured (QuantResult in quantize.h).
    """
    @property
    def coded_params(self) -> LevelParams:
        ...
    @property
    def distortion(self) -> float:
        ...
    @property
    def params(self) -> LevelParams:
        ...
    @property
    def passes(self) -> int:
        ...
    @property
    def rate_bits(self) -> float:
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
def dequantize(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], step: typing.SupportsFloat | typing.SupportsIndex, method: QuantMethod, row_scale: typing.Any = None, col_scale: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    Reconstruct float32 weights from int32 levels (method: a QuantMethod), optional float64 per-row / per-column step scales.
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
def quantize(weights: numpy.ndarray, options: QuantOptions, *, importance: typing.Any = None, row_scale: typing.Any = None, col_scale: typing.Any = None, feedback: typing.Any = None, row_feedback: typing.Any = None, want_recon: bool = False) -> tuple:
    """
    Quantize C-contiguous float32/float64 weights -> (int32 levels, float32 reconstruction or None, QuantResult).
    """
def rate_bits(levels: typing.Annotated[numpy.typing.ArrayLike, numpy.int32], unary_len: typing.SupportsInt | typing.SupportsIndex, eg_order: typing.SupportsInt | typing.SupportsIndex, rows_per_block: typing.SupportsInt | typing.SupportsIndex) -> float:
    """
    Estimated bits of int32 levels with the given level params and chunked contexts.
    """
def write_nnp(tensors: collections.abc.Sequence[TensorInput], options: WriterOptions) -> tuple[bytes, typing.Any, int]:
    """
    Assemble a .nnp file in memory (options.verify: and check that it parses); returns (bytes, stored bytes per tensor, table bytes).
    """
HAS_ENCODER: bool = True
NNP_VERSION: tuple = (1, 1)
