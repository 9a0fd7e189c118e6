"""The ``.nnp`` file (format version 1.0/1.1, ``docs/FORMAT.md``): read tensors from it, write it.

numpy only. The parsing, checking and decoding happen in C++ (``nnpress/format/container.h``);
this module allocates output arrays and maps names to the format's codes.

Contract
--------
- ``NnpFile(path_or_bytes)`` parses and checks the header and tensor table (every count and length
  against the real size; CRCs of header and table). Bad data raises :class:`nnpress.FormatError`,
  a missing file ``FileNotFoundError``/``OSError``.
- ``f.entries`` is the tensor table (list of dicts: name, dtype, role, storage, shape, count,
  stored_bytes, chunks, and method/step/lambda/channel_scales for quantized tensors, alias_of for
  aliases), available without decoding. ``f.channel_scale_exps(name)`` gives a quantized tensor's
  int8 row/column scale exponents (format 1.1; scale ``2**(e/8)``), or ``(None, None)``.
  ``f.metadata`` is the JSON object the writer stored (``{}`` if none).
- ``f.read(name)`` decodes one tensor (random access), ``f.read_all(names)`` many in parallel.
  Chunk CRCs are checked before decoding; a mismatch raises ``FormatError`` naming the tensor.
  Every ``FormatError`` of a file opened by path (opening, reading, decoding, ``verify``,
  ``level_matrix``...) starts with that path; its class stays the same (``raise ... from`` the
  original, which names only the tensor and chunk).
  Arrays have the stored dtype, except bfloat16, which numpy lacks: those come back as ``uint16``
  arrays holding the bfloat16 bit patterns (``bfloat16_to_float32`` widens them exactly).
- ``write_nnp(path, records, ...)`` writes through a temporary file in the destination folder,
  checks the bytes parse, then renames: an interrupted write leaves any existing file untouched.

Surprises
---------
- A regular file is memory-mapped: opening reads the header and table pages, decoding a tensor
  touches only its chunks' pages (and gives them back afterwards); pipes and devices are read whole.
- Aliases (tied tensors) decode to the *same* array object as their target in ``read_all``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from .config import DEFAULT_BLOCK_ELEMENTS, SIZE_TOLERANCE

__all__ = [
    "DEFAULT_BLOCK_ELEMENTS",
    "NUMPY_DTYPES",
    "NnpFile",
    "TensorRecord",
    "bfloat16_to_float32",
    "file_destination",
    "float32_to_bfloat16",
    "nnp_bytes",
    "validate_nnp",
    "write_nnp",
    "writer_options",
]

DEFAULT_MAX_ELEMENTS = 1 << 36
DEFAULT_MAX_TOTAL_ELEMENTS = 1 << 38

# numpy dtype per format dtype name (bfloat16 travels as its uint16 bit patterns).
NUMPY_DTYPES = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("?"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
}


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 values, exactly."""
    b = np.ascontiguousarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 bit patterns (uint16), to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    if nan.any():
        r = np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)
    return r


class NnpFile:
    """A parsed ``.nnp`` file. ``source``: a path or a bytes-like object holding the file."""

    def __init__(
        self, source, *, max_elements: int = DEFAULT_MAX_ELEMENTS, max_total_elements: int = DEFAULT_MAX_TOTAL_ELEMENTS
    ):
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise FileNotFoundError(f"no such file: {path!r}")
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path!r} is a directory, not a .nnp file")
            self.path = path
            with self._naming():
                self._r = _core.NnpReader.from_file(path, int(max_elements), int(max_total_elements))
        else:
            try:
                view = memoryview(source)
            except TypeError:
                raise TypeError(f"source must be a path or bytes-like, not {type(source).__name__}") from None
            if not view.c_contiguous:
                view = memoryview(bytes(view))
            self._r = _core.NnpReader.from_bytes(view.cast("B"), int(max_elements), int(max_total_elements))
            self.path = None
        with self._naming():
            self.entries: list[dict] = self._r.tensors()
            meta = self._r.metadata
        self._index = {e["name"]: e["index"] for e in self.entries}
        try:
            self.metadata: dict = json.loads(meta) if meta else {}
        except ValueError:
            self.metadata = {"raw": meta}
        if not isinstance(self.metadata, dict):
            self.metadata = {"raw": meta}

    @contextlib.contextmanager
    def _naming(self):
        """A ``FormatError`` raised inside (the C++ reader's errors name the tensor and chunk, not
        the file) re-raised as the same class with the file's path in front, for a file opened by
        path. Every call of ``self._r`` that can raise one goes through this."""
        try:
            yield
        except _core.FormatError as e:
            if self.path is None or str(e).startswith(f"{self.path}: "):  # C++ named the file already
                raise
            raise type(e)(f"{self.path}: {e}") from e

    # ---- table ----
    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self.entries]

    @property
    def version(self) -> tuple[int, int]:
        return tuple(self._r.version)

    @property
    def file_size(self) -> int:
        return int(self._r.file_size)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.names)

    def entry(self, name: str) -> dict:
        try:
            return self.entries[self._index[name]]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in the file") from None

    def _alloc(self, e: dict) -> np.ndarray:
        return np.empty(tuple(e["shape"]), dtype=NUMPY_DTYPES[e["dtype"]])

    # ---- mapping view: f["name"] decodes that tensor only ----
    def keys(self) -> list[str]:
        return self.names

    def __getitem__(self, name: str) -> np.ndarray:
        """``f[name]`` = ``f.read(name)``: decodes that tensor only (KeyError if absent)."""
        return self.read(name)

    def get(self, name: str, default=None):
        """``f.read(name)``, or ``default`` if the file has no such tensor."""
        return self.read(name) if name in self._index else default

    def nbytes(self, name: str) -> int:
        """Bytes of the decoded tensor (its element count times its dtype's size)."""
        e = self.entry(name)
        return int(e["count"]) * NUMPY_DTYPES[e["dtype"]].itemsize

    # ---- decoding ----
    def read(self, name: str, *, threads: int | None = None) -> np.ndarray:
        """Decode one tensor (its row blocks on up to ``threads`` threads)."""
        e = self.entry(name)
        out = self._alloc(e)
        if out.size:
            with self._naming():
                self._r.decode_into(e["index"], out.reshape(-1).view(np.uint8), _threads(threads))
        return out

    def read_into(self, name: str, out: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Decode one tensor into ``out``: a C-contiguous, writable array of the tensor's byte size
        (any shape and dtype, e.g. a view of a torch parameter or of a reused buffer). Returns ``out``."""
        e = self.entry(name)
        if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{name!r}: out must be a C-contiguous writable numpy array")
        want = int(e["count"]) * NUMPY_DTYPES[e["dtype"]].itemsize
        if out.nbytes != want:
            raise ValueError(
                f"{name!r}: out holds {out.nbytes} bytes, the tensor {want} ({e['dtype']}{tuple(e['shape'])})"
            )
        if want:
            with self._naming():
                self._r.decode_into(e["index"], out.reshape(-1).view(np.uint8), _threads(threads))
        return out

    def read_levels(self, name: str, *, threads: int | None = None) -> np.ndarray:
        """The int32 levels of a quantized tensor (before the step is applied)."""
        e = self.entry(name)
        target = self.entry(e["alias_of"]) if e["storage"] == "alias" else e
        if target["storage"] != "quantized":
            raise ValueError(f"tensor {name!r} is stored {target['storage']}, not quantized")
        out = np.empty(tuple(e["shape"]), dtype=np.int32)
        with self._naming():
            self._r.decode_levels_into(e["index"], out.reshape(-1), _threads(threads))
        return out

    def iter_level_rows(
        self, name: str, max_elements: int = 1 << 20, *, threads: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The int32 levels of a quantized tensor a block of rows at a time: (first row, rows x cols
        levels) of its rows x cols view (rows = shape[0]), in row order. A block is one or more of the
        file's chunks (its independently coded row blocks), as many as fit ``max_elements`` (at least
        one chunk), so at most one block of int32 levels is held at a time. ValueError for a raw tensor."""
        e = self.entry(name)
        target = self.entry(e["alias_of"]) if e["storage"] == "alias" else e
        if target["storage"] != "quantized":
            raise ValueError(f"tensor {name!r} is stored {target['storage']}, not quantized")
        shape = tuple(int(d) for d in e["shape"])
        rows = shape[0] if len(shape) >= 2 else 1
        cols = int(e["count"]) // max(rows, 1)
        with self._naming():
            blocks = self._r.level_row_blocks(e["index"])
        k = 0
        while k < len(blocks):
            first, n = int(blocks[k][0]), int(blocks[k][1])
            k += 1
            while k < len(blocks) and (n + int(blocks[k][1])) * cols <= max_elements:
                n += int(blocks[k][1])
                k += 1
            out = np.empty((n, cols), dtype=np.int32)
            with self._naming():
                self._r.decode_levels_rows_into(e["index"], first, n, out.reshape(-1), _threads(threads))
            yield first, out

    def read_all(self, names: Iterable[str] | None = None, *, threads: int | None = None) -> dict[str, np.ndarray]:
        """Decode several tensors (all by default) in parallel; aliases share their target's array."""
        wanted = self.names if names is None else list(names)
        for n in wanted:
            self.entry(n)  # KeyError for unknown names
        outs: list[Any] = [None] * len(self.entries)
        result: dict[str, np.ndarray] = {}
        for n in wanted:
            e = self.entry(n)
            src = self.entry(e["alias_of"]) if e["storage"] == "alias" else e
            if outs[src["index"]] is None:
                outs[src["index"]] = self._alloc(src)
            result[n] = outs[src["index"]]
        views = [None if o is None else o.reshape(-1).view(np.uint8) for o in outs]
        if any(v is not None and v.size for v in views):
            self._decode_all_into(views, threads)
        return result

    def _decode_all_into(self, views: list, threads: int | None = None) -> None:
        """The reader's parallel decode: ``views[i]`` (a uint8 array of entry i's decoded bytes, or
        None to skip it) receives tensor i (``read_all``'s and ``nnpress.stream``'s decode)."""
        with self._naming():
            self._r.decode_all_into(views, _threads(threads))

    def channel_scale_exps(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(row exponents, column exponents) of a quantized tensor (int8; scale ``2**(e/8)``), each
        None when absent. Aliases report their target's."""
        e = self.entry(name)
        target = self.entry(e["alias_of"]) if e["storage"] == "alias" else e
        if target["storage"] != "quantized":
            return None, None
        with self._naming():
            return self._r.channel_scale_exps(target["index"])

    def level_matrix(self, name: str, *, threads: int | None = None) -> _core.LevelMatrix:
        """A quantized tensor as an integer-level matrix (``_core.LevelMatrix``: its exact integer
        reconstruction indices and per-row/column scales, ~1 byte per weight; ``m.matmul(x)`` is
        ``x @ W.T``), built from the stored levels without a float copy. The view is rows = shape[0],
        cols = the rest. ValueError for a raw tensor."""
        e = self.entry(name)
        with self._naming():
            return _core.LevelMatrix.from_nnp(self._r, e["index"], _threads(threads))

    def lut_matrix(self, name: str, *, threads: int | None = None) -> _core.LutMatrix:
        """A quantized tensor whose rows hold at most 16 distinct levels each as a table-lookup matrix
        (``_core.LutMatrix``: a 4-bit code per weight and a 16-value table per row, ~0.5 byte per
        weight; ``m.matmul(x)`` is ``x @ W.T``), built from the stored levels without a float copy.
        ValueError for a raw tensor or a row with more than 16 values."""
        e = self.entry(name)
        with self._naming():
            return _core.LutMatrix.from_nnp(self._r, e["index"], _threads(threads))

    def verify(self) -> None:
        """Check every chunk's CRC without decoding (FormatError on a mismatch)."""
        with self._naming():
            self._r.verify_checksums()


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0  # all hardware threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


@dataclass
class TensorRecord:
    """One tensor to write. ``storage``: "quantized" (``data`` = int32 levels of the tensor's shape,
    with ``method``/``step``/``lam``, and optionally ``row_scale_exp``/``col_scale_exp``: int8 channel
    scale exponents, one per row / column, scale ``2**(e/8)`` — the file is then format 1.1), "raw"
    (``data`` = the array, stored as its little-endian bytes;
    bfloat16 as uint16 bits) or "alias" (``alias_of`` = name of an earlier record)."""

    name: str
    dtype: str
    role: str
    storage: str
    shape: tuple
    data: Any = None
    method: str = "nearest"
    step: float = 0.0
    lam: float = 0.0
    alias_of: str | None = None
    rows_per_block: int = 0
    unary_len: int | None = None  # binarization; None = the writer chooses (both or neither)
    eg_order: int | None = None
    row_scale_exp: Any = None  # quantized only: int8 per row (None = no row scales)
    col_scale_exp: Any = None  # quantized only: int8 per column (None = no column scales)


def _scale_exps(r, which: str):
    v = getattr(r, which)
    if v is None:
        return None
    if r.storage != "quantized":
        raise ValueError(f"{r.name!r}: {which} is only for quantized tensors")
    a = np.asarray(v)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{r.name!r}: {which} must be integers, got {a.dtype}")
    if a.size and (a.min() < -128 or a.max() > 127):
        raise ValueError(f"{r.name!r}: {which} values must lie in [-128, 127]")
    return np.ascontiguousarray(a, dtype=np.int8)


def _code(enum, value: str, what: str, name: str):
    """The ``_core`` enum member named ``value`` (ValueError naming the choices otherwise)."""
    member = enum.__members__.get(value) if isinstance(value, str) else None
    if member is None:
        raise ValueError(f"{name!r}: unknown {what} {value!r}; expected one of {sorted(enum.__members__)}")
    return member


def _tensor_input(r: TensorRecord, index: dict[str, int]):
    """A record as the writer's typed input: names mapped to codes, arrays to little-endian
    contiguous views. Everything else (counts, steps, ranges, dtypes per storage) the writer checks."""
    if not isinstance(r.name, str) or not r.name:
        raise ValueError("record name must be a non-empty str")
    levels = raw = None
    alias = 0
    if r.storage == "quantized":
        src = np.asarray(r.data)
        if src.dtype == np.bool_ or not np.issubdtype(src.dtype, np.integer):
            raise TypeError(f"{r.name!r}: levels must be integers, got {src.dtype}")
        levels = np.ascontiguousarray(src, dtype=np.int32).reshape(src.shape)  # (keeps 0-d)
    elif r.storage == "raw":
        arr = np.asarray(r.data)
        want = NUMPY_DTYPES.get(r.dtype)
        if want is not None and (arr.dtype.itemsize != want.itemsize or arr.shape != tuple(int(d) for d in r.shape)):
            raise ValueError(f"{r.name!r}: raw data {arr.dtype}{arr.shape} does not match {r.dtype}{tuple(r.shape)}")
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8)
    elif r.storage == "alias":
        if r.alias_of not in index:
            raise ValueError(f"{r.name!r}: alias of {r.alias_of!r}, which is not an earlier tensor")
        alias = index[r.alias_of]
    method = r.method if r.storage == "quantized" else "nearest"
    return _core.TensorInput(
        name=r.name,
        dtype=_code(_core.DType, r.dtype, "dtype", r.name),
        role=_code(_core.TensorRole, r.role, "role", r.name),
        storage=_code(_core.Storage, r.storage, "storage", r.name),
        shape=[int(d) for d in r.shape],
        levels=levels,
        raw=raw,
        method=_code(_core.QuantMethod, method, "method", r.name),
        step=float(r.step),
        lam=float(r.lam),
        alias_of=alias,
        rows_per_block=int(r.rows_per_block),
        unary_len=-1 if r.unary_len is None else int(r.unary_len),
        eg_order=-1 if r.eg_order is None else int(r.eg_order),
        row_scale_exp=_scale_exps(r, "row_scale_exp"),
        col_scale_exp=_scale_exps(r, "col_scale_exp"),
    )


def nnp_bytes(
    records: Sequence[TensorRecord],
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    threads: int | None = None,
    metadata: dict | None = None,
    size_tolerance: float = SIZE_TOLERANCE,
) -> tuple[bytes, list[int]]:
    """Assemble a ``.nnp`` file in memory, checked to parse (structure and every CRC). Returns (file
    bytes, stored bytes per record).

    ``size_tolerance``: per tensor without pinned level params, the writer keeps the
    fastest-decoding binarization parameters whose size (measured on a sample of rows) is within
    this fraction of the smallest (``choose_level_params_for_speed``; negative: the level coder's
    static choice)."""
    if not _core.HAS_ENCODER:
        raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
    index: dict[str, int] = {}
    inputs = []
    for i, r in enumerate(records):
        inputs.append(_tensor_input(r, index))
        index.setdefault(r.name, i)
    options = writer_options(
        block_elements=block_elements, threads=threads, metadata=metadata, size_tolerance=size_tolerance
    )
    data, stored, _ = _core.write_nnp(inputs, options)
    return data, list(stored)


def writer_options(
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    threads: int | None = None,
    metadata: dict | None = None,
    size_tolerance: float = SIZE_TOLERANCE,
):
    """The ``_core.WriterOptions`` of the in-memory writer (``nnp_bytes``) and of the streaming
    writer (``_core.NnpFileWriter``), built in one place so that both write the same bytes."""
    if isinstance(block_elements, bool) or not isinstance(block_elements, (int, np.integer)) or block_elements < 1:
        raise ValueError(f"block_elements must be a positive int, got {block_elements!r}")
    options = _core.WriterOptions()
    options.block_elements = int(block_elements)
    options.threads = _threads(threads)
    options.metadata = json.dumps(metadata, sort_keys=True, separators=(",", ":")) if metadata else ""
    options.size_tolerance = float(size_tolerance)
    options.verify = True  # the caller may replace a file with these bytes
    return options


def validate_nnp(data) -> None:
    """Check that ``data`` is a well-formed .nnp file (structure and every CRC), without copying it;
    raises :class:`nnpress.FormatError` otherwise."""
    _core.nnp_validate(memoryview(data).cast("B"))


def _umask() -> int:
    """The process umask, read without changing it where the OS can tell (Linux); elsewhere by
    setting and restoring it (a window in which another thread's new files would get 0666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_destination(path: str | os.PathLike) -> str:
    """``path`` as a str, checked to name a file the atomic writers can create: ``IsADirectoryError``
    for a folder (an existing one, or a path ending in a separator), ``FileNotFoundError`` when the
    folder it would go in does not exist. One-line messages naming the path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a folder, not a file (give a file name)")
    if path.endswith(("/", os.sep)) or os.path.basename(path) in ("", ".", ".."):
        raise IsADirectoryError(f"cannot write {path!r}: it names a folder, not a file (give a file name)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"destination folder does not exist: {folder!r}")
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + fsync + rename."""
    path = file_destination(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates 0600; give the result the mode a plain open() would (0666 minus umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_nnp(
    path: str | os.PathLike,
    records: Sequence[TensorRecord],
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    threads: int | None = None,
    metadata: dict | None = None,
    size_tolerance: float = SIZE_TOLERANCE,
) -> list[int]:
    """Write a ``.nnp`` file atomically (built and checked in memory, then written to a temporary
    file in the destination folder and renamed). Returns the stored bytes per record."""
    data, stored = nnp_bytes(
        records, block_elements=block_elements, threads=threads, metadata=metadata, size_tolerance=size_tolerance
    )
    write_bytes_atomic(path, data)
    return stored
