"""CER, CSER and dense-codebook matrices: compact weights you can multiply with directly.

Contract
--------
- ``CERMatrix`` / ``CSERMatrix`` (Wiedemann et al., IEEE TNNLS 2019) and ``CodebookMatrix`` hold a
  2-D float32 matrix with few distinct values. Build them with ``from_dense(w)``,
  ``from_levels(levels, step)`` (W = float32(level) * step, as a dequantized float32 model computes
  it), ``from_scipy(csr)`` or, for CER/CSER, ``from_arrays(...)`` (validated: a corrupt structure
  raises ``nnpress.FormatError``). Objects are immutable.
- ``M @ x`` for ``x`` of shape ``(cols,)`` returns ``(rows,)``; for ``x`` of shape ``(cols, batch)``
  returns ``(rows, batch)``; float32 results. ``M.matmul(x, isa=None, threads=1)`` names an ISA
  ("scalar", "neon", "avx2", "avx512"; None = the automatic choice, per batch size: AVX2 for batch
  2..32 even on AVX-512 CPUs, and for CER/CSER batch 1 with groups of <= 6 entries on average,
  measured faster there, except matrices with a kernel plan on Intel CPUs with AVX512-FP16, whose
  hardware gathers are fast) or a thread count (0 = as many as pay: all hardware threads for large
  products, one for small ones; a number asks for that many, capped by the hardware and rows / 64).
- ``to_dense()``, ``to_scipy()`` (scipy CSR, float32), ``nbytes`` (bytes of all arrays), ``plan_nbytes``
  (CER/CSER: the batch-1 kernel plan derived from them, see Surprises), ``shape``,
  ``nnz`` (entries that differ from the implicit, most frequent value), ``values`` (Ω).
- ``op_counts(row=None, memory="sram")``: loads, multiplies, adds and writes of one matrix-vector
  product (or of one row's dot product), counted as the paper and the seed talk count them, and an
  energy estimate in picojoules from ``ENERGY_PJ`` (below). ``dense_op_counts`` and
  ``csr_op_counts`` give the same for the dense and CSR forms of a matrix.
- ``compress_matrix(w | levels+step, format="auto", batch=1)`` builds the representation that
  ``choose_format`` expects to be fastest (or the one named).

Energy table (``ENERGY_PJ``): Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V, in the
32-bit form of Han et al. (ISCA 2016): fp32 add 0.9 pJ, fp32 multiply 3.7 pJ, 32-bit SRAM (cache)
access 5 pJ, 32-bit DRAM access 640 pJ. Every load and write is priced as one 32-bit memory access
(``memory`` picks SRAM or DRAM); index arithmetic is not counted (as in the paper).

Surprises
---------
- Counting rules (per row r with n_r explicit entries and G_r groups, E_r of them non-empty):
  dense: 2*cols loads, cols multiplies, cols-1 adds, 1 write.
  CSR: 2 row pointers + 3 per entry (value, column, input) loads, n_r multiplies, n_r-1 adds.
  CER: 2 row pointers + (G_r + 1) group pointers + E_r values + 2 per entry (column, input) loads;
  E_r multiplies, n_r - 1 adds. CSER also loads one value index per group.
  Codebook: 2 per weight (index, input) loads, cols multiplies, cols-1 adds.
  Empty rows cost 2 loads and 1 write. A non-zero implicit value adds one multiply and add per row
  and one pass over x (cols loads, cols-1 adds) per product.
- The value most frequent in the matrix is implicit; it is usually 0, but need not be.
- ``from_scipy`` densifies the matrix once (the builders work from dense rows).
- CER/CSER matrices with 16-bit columns (cols <= 65536), fewer than 2^31 entries and <= 16 values
  whose non-empty groups average <= 8 entries (<= 256 values: <= 3 entries) also hold a kernel plan,
  derived when they are built: a bit per entry marking group starts, each row's first entry (and, for
  CER or CSER with empty groups, a value index per non-empty group), and with <= 16 values a value index
  per entry (one byte). The x86 batch-1 kernels read it instead of the group pointers, which removes all
  per-group work (bench/RESULTS.md; the AVX2 kernel walks each row's entries with their value indices,
  bench/results/cser4.md); ``plan_nbytes`` says what it costs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from .errors import FormatError

__all__ = [
    "ENERGY_PJ",
    "CERMatrix",
    "CSERMatrix",
    "CodebookMatrix",
    "available_isas",
    "choose_format",
    "compress_matrix",
    "csr_op_counts",
    "dense_op_counts",
]

ENERGY_PJ = {"fp32_add": 0.9, "fp32_mul": 3.7, "sram_32bit": 5.0, "dram_32bit": 640.0}

_ISAS = ("scalar", "neon", "avx2", "avx512")


def available_isas() -> list[str]:
    """ISAs whose kernels this build has and this CPU runs; the last one is the default."""
    return [name for name in _ISAS if _core.isa_supported(name)]


def _as_matrix(w: Any, what: str = "w") -> np.ndarray:
    a = np.asarray(w)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_levels(levels: Any) -> np.ndarray:
    a = np.asarray(levels)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"levels must be an integer array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"levels must be 2-D, got shape {a.shape}")
    if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
        raise ValueError("levels must fit in int32")
    return np.ascontiguousarray(a, dtype=np.int32)


def _as_step(step: Any) -> float:
    s = float(step)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"step must be finite and > 0, got {step!r}")
    return s


def _energy(c: dict, memory: str) -> float:
    key = {"sram": "sram_32bit", "dram": "dram_32bit"}.get(memory)
    if key is None:
        raise ValueError(f"memory must be 'sram' or 'dram', got {memory!r}")
    mem = ENERGY_PJ[key]
    return (
        (c["loads"] + c["writes"]) * mem + c["multiplies"] * ENERGY_PJ["fp32_mul"] + c["adds"] * ENERGY_PJ["fp32_add"]
    )


def _finish(loads, mults, adds, writes, row, memory, extra=(0, 0, 0)) -> dict:
    """Sum per-row count arrays (or pick one row) and price them."""
    if row is None:
        c = {
            "loads": int(np.sum(loads)) + extra[0],
            "multiplies": int(np.sum(mults)),
            "adds": int(np.sum(adds)) + extra[2],
            "writes": int(np.sum(writes)),
        }
    else:
        c = {
            "loads": int(loads[row]),
            "multiplies": int(mults[row]),
            "adds": int(adds[row]),
            "writes": int(writes[row]),
        }
    c["energy_pj"] = _energy(c, memory)
    return c


def _check_row(row: int | None, rows: int) -> int | None:
    if row is None:
        return None
    r = int(row)
    if not 0 <= r < rows:
        raise ValueError(f"row {row} is outside 0..{rows - 1}")
    return r


def dense_op_counts(w: Any, row: int | None = None, memory: str = "sram") -> dict:
    """Operation counts of a dense matrix-vector product (or of one row's dot product)."""
    rows, cols = np.shape(w)
    row = _check_row(row, rows)
    one = np.ones(rows, np.int64)
    return _finish(one * 2 * cols, one * cols, one * max(cols - 1, 0), one, row, memory)


def csr_op_counts(w: Any, row: int | None = None, memory: str = "sram") -> dict:
    """Operation counts of a CSR matrix-vector product (zeros implicit)."""
    a = _as_matrix(w)
    row = _check_row(row, a.shape[0])
    n = np.count_nonzero(a, axis=1).astype(np.int64)
    return _finish(2 + 3 * n, n, np.maximum(n - 1, 0), np.ones_like(n), row, memory)


class _Matrix:
    """Common behaviour of the compressed matrices (wraps one _core object)."""

    _format = ""

    def __init__(self, core: Any) -> None:
        if not isinstance(core, (_core.RowGroupMatrix, _core.CodebookMatrix)):
            raise TypeError("use from_dense / from_levels / from_arrays / from_scipy to build a matrix")
        self._m = core

    @property
    def format(self) -> str:
        return self._format

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._m.rows), int(self._m.cols))

    @property
    def nbytes(self) -> int:
        """Bytes of all arrays of the representation (values float32, indices at stored width)."""
        return int(self._m.nbytes)

    def to_dense(self) -> np.ndarray:
        return self._m.to_dense()

    def matmul(self, x: Any, isa: str | None = None, threads: int = 1) -> np.ndarray:
        """``self @ x`` with an explicit ISA (None = automatic, see the module doc) and thread count."""
        # One call for the usual operand, a C-contiguous float32 ndarray: the binding computes it (checking
        # shapes, ISA and threads itself: ValueError) and returns None for anything else, which is then
        # checked and converted here. Checks made here first cost more than a small product's kernel once
        # the caches are cold (bench/RESULTS.md).
        y = self._m.product(x, isa, threads)
        return y if y is not None else self._matmul_converted(x, isa, threads)

    def _matmul_converted(self, x: Any, isa: str | None, threads: int) -> np.ndarray:
        """matmul for operands the binding does not take as they are: checked and converted here."""
        if isinstance(x, (_Matrix,)):
            raise TypeError("compressed @ compressed is not supported")
        a = np.asarray(x)
        if a.dtype == object or not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"operand must be numeric, got dtype {a.dtype}")
        if a.ndim not in (1, 2):
            raise ValueError(f"operand must be 1-D or 2-D, got shape {a.shape}")
        if a.shape[0] != self.shape[1]:
            raise ValueError(f"operand has {a.shape[0]} rows, the matrix has {self.shape[1]} columns")
        if int(threads) < 0:
            raise ValueError("threads must be >= 0")
        if isa is not None and not isinstance(isa, str):
            raise TypeError(f"isa must be a string or None, got {type(isa).__name__}")
        y = self._m.product(np.ascontiguousarray(a, dtype=np.float32), isa, int(threads))
        if y is None:
            raise ValueError(f"threads must be < 2**32, got {threads}")
        return y

    def __matmul__(self, x: Any) -> np.ndarray:
        y = self._m.product(x)  # as in matmul
        return y if y is not None else self._matmul_converted(x, None, 1)

    def to_scipy(self):
        """The same matrix as scipy.sparse.csr_matrix (float32, explicit zeros dropped)."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(self.to_dense())

    def __repr__(self) -> str:
        r, c = self.shape
        return f"{type(self).__name__}(shape=({r}, {c}), nbytes={self.nbytes})"


class _RowGroup(_Matrix):
    @classmethod
    def from_dense(cls, w: Any, max_values: int = 65536):
        """From a dense 2-D matrix with at most ``max_values`` distinct values (ValueError beyond)."""
        return cls(_core.RowGroupMatrix.from_dense(cls._format, _as_matrix(w), int(max_values)))

    @classmethod
    def from_levels(cls, levels: Any, step: float):
        """From integer levels: W = float32(level) * step."""
        return cls(_core.RowGroupMatrix.from_levels(cls._format, _as_levels(levels), _as_step(step)))

    @classmethod
    def from_scipy(cls, m: Any):
        """From any scipy sparse matrix or array (densified once)."""
        return cls.from_dense(m.toarray())

    def to_scipy(self):
        import scipy.sparse

        if self.values[0] != 0.0:
            return super().to_scipy()
        gp = self.group_ptr.astype(np.int64)
        rp = self.row_ptr.astype(np.int64)
        sizes = np.diff(gp)
        group_vals = self.values[self._group_value_index()]
        data = np.repeat(group_vals, sizes).astype(np.float32)
        row_of_entry = np.repeat(np.repeat(np.arange(self.shape[0]), np.diff(rp)), sizes)
        return scipy.sparse.csr_matrix(
            (data, (row_of_entry, self.col.astype(np.int64))), shape=self.shape, dtype=np.float32
        )

    def _group_value_index(self) -> np.ndarray:
        gv = self.group_value
        if gv is not None:
            return gv.astype(np.int64)
        rp = self.row_ptr.astype(np.int64)
        g = np.arange(len(self.group_ptr) - 1, dtype=np.int64)
        row_of_group = np.repeat(np.arange(self.shape[0]), np.diff(rp))
        return 1 + g - rp[row_of_group]

    @property
    def nnz(self) -> int:
        return int(self._m.nnz)

    @property
    def num_groups(self) -> int:
        return int(self._m.num_groups)

    @property
    def plan_nbytes(self) -> int:
        """Bytes of the batch-1 kernel plan the object derives from its arrays (a bit per entry, each
        row's first entry, for CER or CSER with empty groups a value index per non-empty group, and with
        <= 16 values a byte per entry; built only when the module's Surprises say); not part of ``nbytes``
        (the format) and never written to files."""
        return int(self._m.plan_nbytes)

    @property
    def values(self) -> np.ndarray:
        """Ω: distinct values by decreasing frequency; values[0] is implicit."""
        return self._m.omega

    @property
    def col(self) -> np.ndarray:
        return self._m.col

    @property
    def group_ptr(self) -> np.ndarray:
        return self._m.group_ptr

    @property
    def row_ptr(self) -> np.ndarray:
        return self._m.row_ptr

    @property
    def group_value(self) -> np.ndarray | None:
        return self._m.group_value

    def op_counts(self, row: int | None = None, memory: str = "sram") -> dict:
        """Loads / multiplies / adds / writes (+ energy_pj) of one product, or of one row."""
        rows, cols = self.shape
        row = _check_row(row, rows)
        gp = self.group_ptr.astype(np.int64)
        rp = self.row_ptr.astype(np.int64)
        groups = np.diff(rp)
        sizes = np.diff(gp)
        nonempty_per_group = (sizes > 0).astype(np.int64)
        cum = np.concatenate([[0], np.cumsum(nonempty_per_group)])
        nonempty = cum[rp[1:]] - cum[rp[:-1]]
        n = gp[rp[1:]] - gp[rp[:-1]]
        ptr_loads = np.where(groups > 0, groups + 1, 0)
        loads = 2 + ptr_loads + nonempty + 2 * n
        if self._format == "cser":
            loads = loads + groups
        mults = nonempty.copy()
        adds = np.maximum(n - 1, 0)
        extra = (0, 0, 0)
        if self.values[0] != 0.0:
            mults += 1
            adds += 1
            extra = (cols, 0, max(cols - 1, 0))
        return _finish(loads, mults, adds, np.ones(rows, np.int64), row, memory, extra)


class CERMatrix(_RowGroup):
    """Compressed Entropy Row: Ω, column indices grouped by value, Ω pointers, row pointers."""

    _format = "cer"

    @classmethod
    def from_arrays(cls, shape, values, col, omega_ptr, row_ptr) -> CERMatrix:
        """From the paper's arrays (Ω, colI, ΩPtr, rowPtr); validated (FormatError if corrupt)."""
        r, c = (int(v) for v in shape)
        return cls(
            _core.RowGroupMatrix.from_arrays(
                "cer", r, c, np.asarray(values, np.float32), _u32(col), _u32(omega_ptr), _u32(row_ptr), None
            )
        )


class CSERMatrix(_RowGroup):
    """Compressed Shared Elements Row: like CER, with a value index per group (no padding groups)."""

    _format = "cser"

    @classmethod
    def from_arrays(cls, shape, values, col, group_ptr, row_ptr, group_value) -> CSERMatrix:
        """From Ω, column indices, group pointers, row pointers and group value indices; validated."""
        r, c = (int(v) for v in shape)
        return cls(
            _core.RowGroupMatrix.from_arrays(
                "cser",
                r,
                c,
                np.asarray(values, np.float32),
                _u32(col),
                _u32(group_ptr),
                _u32(row_ptr),
                _u32(group_value),
            )
        )


def _u32(a: Any) -> np.ndarray:
    x = np.asarray(a)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"index arrays must be integer, got dtype {x.dtype}")
    x = x.astype(np.int64).ravel()
    if x.size and (x.min() < 0 or x.max() > 0xFFFFFFFF):
        raise FormatError("index array has entries outside 0..2^32-1")
    return x.astype(np.uint32)


class CodebookMatrix(_Matrix):
    """Dense codebook: a 4-bit index per weight into a 16-entry table of values (<= 16 values)."""

    _format = "codebook"

    @classmethod
    def from_dense(cls, w: Any) -> CodebookMatrix:
        return cls(_core.CodebookMatrix.from_dense(_as_matrix(w)))

    @classmethod
    def from_levels(cls, levels: Any, step: float) -> CodebookMatrix:
        return cls(_core.CodebookMatrix.from_levels(_as_levels(levels), _as_step(step)))

    @classmethod
    def from_scipy(cls, m: Any) -> CodebookMatrix:
        return cls.from_dense(m.toarray())

    @classmethod
    def from_arrays(cls, shape, values, packed) -> CodebookMatrix:
        r, c = (int(v) for v in shape)
        return cls(_core.CodebookMatrix.from_arrays(r, c, np.asarray(values, np.float32), np.asarray(packed, np.uint8)))

    @property
    def values(self) -> np.ndarray:
        return self._m.lut

    @property
    def packed(self) -> np.ndarray:
        return self._m.packed

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.to_dense() != self.values[0]))

    def op_counts(self, row: int | None = None, memory: str = "sram") -> dict:
        rows, cols = self.shape
        row = _check_row(row, rows)
        one = np.ones(rows, np.int64)
        return _finish(one * 2 * cols, one * cols, one * max(cols - 1, 0), one, row, memory)


_CLASSES = {"cer": CERMatrix, "cser": CSERMatrix, "codebook": CodebookMatrix}


def choose_format(shape: tuple[int, int], nnz: int, num_values: int, batch: int = 1, allow_dense: bool = False) -> str:
    """The representation expected to be fastest: "cser" or "codebook" (never "cer": it is at most as
    fast as CSER), or "dense" (keep the float matrix) when ``allow_dense``; rules in kernels.h."""
    r, c = (int(v) for v in shape)
    return _core.choose_format(r, c, int(nnz), int(num_values), max(int(batch), 1), bool(allow_dense))


def compress_matrix(
    w: Any = None, *, levels: Any = None, step: float | None = None, format: str = "auto", batch: int = 1
) -> _Matrix:
    """Build a CER/CSER/codebook matrix from ``w`` or from ``levels`` and ``step``.

    ``format="auto"`` picks with :func:`choose_format` for products with ``batch`` input columns.
    """
    if (w is None) == (levels is None):
        raise ValueError("give exactly one of w or levels (+ step)")
    if levels is not None and step is None:
        raise ValueError("levels need a step")
    if format != "auto" and format not in _CLASSES:
        raise ValueError(f"format must be 'auto', 'cer', 'cser' or 'codebook', got {format!r}")

    def build(name: str) -> _Matrix:
        cls = _CLASSES[name]
        return cls.from_dense(w) if levels is None else cls.from_levels(levels, step)

    if format != "auto":
        return build(format)
    cser = build("cser")
    pick = choose_format(cser.shape, cser.nnz, len(cser.values), batch)
    return cser if pick == "cser" else build(pick)
