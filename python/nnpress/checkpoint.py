"""Checkpoints on disk, read and written one tensor at a time: ``.safetensors`` files and Hugging
Face sharded checkpoints (numpy only).

Contract
--------
- ``SafetensorsFile(path)`` parses and checks the header only (length against the real file size
  before anything is read, JSON object, duplicate names, dtypes, shapes, and that the tensors tile
  the data region exactly as the safetensors format requires); nothing else is read until
  ``read(name)``, which reads that tensor's bytes into a new array (bfloat16 as uint16 bit
  patterns). ``metadata`` is the header's ``__metadata__`` (``{str: str}``) or None.
- ``open_checkpoint(path)`` -> :class:`Checkpoint` for a ``.safetensors`` file, an
  ``*.safetensors.index.json`` file, or a folder holding ``model.safetensors.index.json`` (or one
  other ``*.safetensors.index.json``), ``model.safetensors``, or shards named
  ``<prefix>-0000k-of-0000N.safetensors``. Its ``names`` are in file order (shards in order, each in
  its header's order), ``read(name)`` reads one tensor, ``metadata`` is the shards' ``__metadata__``
  (merged, the first shard's value winning). Inconsistencies raise :class:`FormatError` naming the
  files: a missing shard, an index naming a tensor its shard does not hold, a tensor in a shard
  but not in the index, the same name in two shards, an index naming a file outside its folder.
- ``is_checkpoint_path(path)``: whether ``open_checkpoint`` handles ``path`` (the lazy route of
  ``traverse.load_source`` and of ``compress``).
- Writing: ``write_safetensors(path, specs, fill, metadata)`` writes the header first (every size is
  known), then each tensor's bytes as ``fill`` produces them, one tensor at a time, to a temporary
  file renamed when complete. ``plan_shards`` and ``parse_size`` ("5GB", "500MB", "2GiB", bytes)
  serve ``nnpress decompress x.nnp out_dir/``.

Surprises
---------
- Tensors are read with ``readinto`` rather than memory-mapped: a mapped page that was touched
  stays in the resident set until the mapping goes, so reading a whole checkpoint through one map
  would grow the process to the checkpoint's size. Each array read is owned by its caller.
- Output files place the tensors' data by element size (8-byte types first), as the safetensors
  library does, so that every tensor is aligned for zero-copy loaders; the header lists them in
  the given order, which readers keep.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import FormatError

__all__ = [
    "SAFETENSORS_DTYPES",
    "Checkpoint",
    "SafetensorsFile",
    "TensorInfo",
    "is_checkpoint_path",
    "open_checkpoint",
    "parse_size",
    "plan_shards",
    "write_safetensors",
]

# safetensors dtype tag -> (our dtype name, numpy dtype used to hold it)
SAFETENSORS_DTYPES = {
    "F32": ("float32", np.dtype("<f4")),
    "F16": ("float16", np.dtype("<f2")),
    "BF16": ("bfloat16", np.dtype("<u2")),
    "F64": ("float64", np.dtype("<f8")),
    "I8": ("int8", np.dtype("i1")),
    "U8": ("uint8", np.dtype("u1")),
    "I16": ("int16", np.dtype("<i2")),
    "I32": ("int32", np.dtype("<i4")),
    "I64": ("int64", np.dtype("<i8")),
    "BOOL": ("bool", np.dtype("?")),
    "U16": ("uint16", np.dtype("<u2")),
    "U32": ("uint32", np.dtype("<u4")),
    "U64": ("uint64", np.dtype("<u8")),
}
TAG_OF = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}
MAX_HEADER = 100 << 20  # the safetensors format's own limit on the JSON header
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_SHARD = re.compile(r"^(?P<prefix>.+)-(?P<k>\d+)-of-(?P<n>\d+)\.safetensors$")
MAX_INDEX_BYTES = 256 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a safetensors file lies: ``offset`` is absolute in ``path``."""

    name: str
    dtype: str  # our dtype name ("bfloat16", "float32", ...)
    shape: tuple
    offset: int
    nbytes: int
    path: str

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _no_duplicates(what: str):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise FormatError(f"{what}: the name {k!r} appears twice")
            d[k] = v
        return d

    return hook


class SafetensorsFile:
    """One ``.safetensors`` file: header parsed and checked, tensors read on demand."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"{self.path!r} is a directory, not a .safetensors file")
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise FormatError(f"{self.path}: not a safetensors file (too short: {size} bytes)")
            (hlen,) = struct.unpack("<Q", f.read(8))
            if hlen > size - 8 or hlen > MAX_HEADER:
                raise FormatError(
                    f"{self.path}: safetensors header length {hlen} exceeds the file ({size} bytes) "
                    f"or the format's limit ({MAX_HEADER})"
                )
            raw = f.read(hlen)
        if len(raw) != hlen:
            raise FormatError(f"{self.path}: file shrank while reading its header")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates(self.path))
        except (UnicodeDecodeError, ValueError) as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"{self.path}: safetensors header is not valid JSON: {e}") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: safetensors header is not a JSON object")
        self.file_size = size
        self.data_start = 8 + hlen
        meta = header.pop("__metadata__", None)
        if meta is not None and (
            not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
        ):
            raise FormatError(f"{self.path}: __metadata__ must be an object of strings")
        self.metadata: dict | None = meta
        self._infos: dict[str, TensorInfo] = {}
        spans = []
        body = size - self.data_start
        for name, spec in header.items():
            if not name:
                raise FormatError(f"{self.path}: a tensor has an empty name")
            try:
                tag, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
                if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
                    raise TypeError
                if not all(type(d) is int for d in shape) or not all(type(o) is int for o in offsets):
                    raise TypeError
            except (KeyError, TypeError):
                raise FormatError(
                    f"{self.path}: bad header entry for {name!r} (want dtype, shape, data_offsets)"
                ) from None
            if tag not in SAFETENSORS_DTYPES:
                raise FormatError(f"{self.path}: tensor {name!r} has unsupported dtype {tag!r}")
            dname, npd = SAFETENSORS_DTYPES[tag]
            count = 1
            for d in shape:
                if d < 0:
                    raise FormatError(f"{self.path}: tensor {name!r} has a negative dimension {shape}")
                count *= d
            lo, hi = offsets
            if not (0 <= lo <= hi <= body) or hi - lo != count * npd.itemsize:
                raise FormatError(
                    f"{self.path}: tensor {name!r} ({tag}{shape}) has bad data offsets [{lo}, {hi}) "
                    f"(data region: {body} bytes)"
                )
            self._infos[name] = TensorInfo(name, dname, tuple(shape), self.data_start + lo, hi - lo, self.path)
            spans.append((lo, hi, name))
        # the format's rule: the tensors tile the data region, no gaps, no overlap, nothing after
        end = 0
        for lo, hi, name in sorted(spans):
            if lo != end:
                raise FormatError(
                    f"{self.path}: tensor {name!r} starts at data offset {lo}, expected {end} "
                    "(tensors must tile the data region without gaps or overlap)"
                )
            end = hi
        if end != body:
            raise FormatError(f"{self.path}: the tensors end at data offset {end}, the file's data region at {body}")

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def keys(self) -> list[str]:
        return self.names

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a new numpy array (bfloat16 as uint16 bit patterns)."""
        return read_tensor(self.info(name))


def read_tensor(info: TensorInfo) -> np.ndarray:
    """Read one tensor's bytes from its file into a new array (see :class:`TensorInfo`)."""
    npd = SAFETENSORS_DTYPES[TAG_OF[info.dtype]][1]
    out = np.empty(info.shape, dtype=npd)
    if info.nbytes:
        buf = out.reshape(-1).view(np.uint8)
        with open(info.path, "rb", buffering=0) as f:
            f.seek(info.offset)
            got = 0
            view = memoryview(buf)
            while got < info.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise FormatError(f"{info.path}: file ends inside tensor {info.name!r} (was it truncated?)")
                got += n
    return out


class Checkpoint:
    """A checkpoint of one or more safetensors files (see the module docstring)."""

    def __init__(self, files: Sequence[SafetensorsFile], source: str, index_path: str | None = None):
        self.files = list(files)
        self.source = source
        self.index_path = index_path
        self._where: dict[str, TensorInfo] = {}
        for f in self.files:
            for n in f.names:
                if n in self._where:
                    raise FormatError(f"tensor {n!r} is in two shards: {self._where[n].path} and {f.path}")
                self._where[n] = f.info(n)
        meta: dict | None = None
        for f in self.files:
            if f.metadata is not None:
                meta = dict(f.metadata, **(meta or {}))
        self.metadata = meta

    @property
    def names(self) -> list[str]:
        return list(self._where)

    def keys(self) -> list[str]:
        return self.names

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name) -> bool:
        return name in self._where

    def __iter__(self):
        return iter(self._where)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._where[name]
        except KeyError:
            raise KeyError(f"{self.source}: no tensor named {name!r}") from None

    def infos(self) -> list[TensorInfo]:
        return list(self._where.values())

    def read(self, name: str) -> np.ndarray:
        return read_tensor(self.info(name))


class LazyTensors(Mapping):
    """A read-only mapping name -> numpy array over a :class:`Checkpoint`; each lookup reads the
    tensor from disk (nothing is cached)."""

    def __init__(self, ckpt: Checkpoint):
        self.checkpoint = ckpt

    def __getitem__(self, name):
        return self.checkpoint.read(name)

    def __iter__(self):
        return iter(self.checkpoint.names)

    def __len__(self):
        return len(self.checkpoint)


def _find_in_folder(folder: str) -> tuple[str, str | list[str]]:
    """("index", path) | ("single", path) | ("shards", [paths]) | ("none", reason)."""
    idx = os.path.join(folder, INDEX_NAME)
    if os.path.isfile(idx):
        return "index", idx
    others = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors.index.json"))
    if len(others) == 1:
        return "index", os.path.join(folder, others[0])
    if len(others) > 1:
        raise FormatError(f"{folder}: several index files {others}, and none is {INDEX_NAME}: pass one of them")
    single = os.path.join(folder, SINGLE_NAME)
    if os.path.isfile(single):
        return "single", single
    shards = [n for n in os.listdir(folder) if _SHARD.match(n)]
    if shards:
        return "shards", [os.path.join(folder, n) for n in shards]
    plain = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if len(plain) == 1:
        return "single", os.path.join(folder, plain[0])
    return "none", ""


def _from_shard_names(paths: list[str], folder: str) -> Checkpoint:
    """Shards named <prefix>-k-of-N.safetensors without an index: all N must be there."""
    groups: dict[tuple[str, int], dict[int, str]] = {}
    for p in paths:
        m = _SHARD.match(os.path.basename(p))
        groups.setdefault((m["prefix"], int(m["n"])), {})[int(m["k"])] = p
    if len(groups) > 1:
        raise FormatError(f"{folder}: shards of several checkpoints {sorted(groups)}: pass the index file")
    (prefix, n), found = next(iter(groups.items()))
    missing = [k for k in range(1, n + 1) if k not in found]
    if missing:
        raise FormatError(
            f"{folder}: missing shard(s) {', '.join(f'{prefix}-{k:05d}-of-{n:05d}.safetensors' for k in missing)}"
            f" of {n}"
        )
    extra = sorted(k for k in found if not 1 <= k <= n)
    if extra:
        raise FormatError(f"{folder}: shard number(s) {extra} outside 1..{n}")
    return Checkpoint([SafetensorsFile(found[k]) for k in range(1, n + 1)], folder)


def _from_index(index_path: str) -> Checkpoint:
    folder = os.path.dirname(os.path.abspath(index_path))
    if os.path.getsize(index_path) > MAX_INDEX_BYTES:
        raise FormatError(f"{index_path}: index file larger than {MAX_INDEX_BYTES} bytes")
    try:
        with open(index_path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates(index_path))
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{index_path}: not a valid JSON index: {e}") from None
    wm = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise FormatError(f"{index_path}: no weight_map object of tensor name -> file name")
    order: dict[str, list[str]] = {}
    for name, fname in wm.items():
        if os.path.basename(fname) != fname or fname in ("", ".", ".."):
            raise FormatError(f"{index_path}: shard {fname!r} (of {name!r}) is not a file name in the index's folder")
        order.setdefault(fname, []).append(name)
    missing = [fn for fn in order if not os.path.isfile(os.path.join(folder, fn))]
    if missing:
        raise FormatError(f"{index_path}: missing shard(s) {missing} in {folder}")
    files = []
    for fname in sorted(order):  # shard names sort in shard order (zero-padded numbers)
        st = SafetensorsFile(os.path.join(folder, fname))
        listed = set(order[fname])
        absent = [n for n in order[fname] if n not in st]
        if absent:
            raise FormatError(f"{index_path} names tensor(s) {absent[:5]} in {st.path}, which does not hold them")
        unlisted = [n for n in st.names if n not in listed]
        if unlisted:
            other = [(n, wm[n]) for n in unlisted if n in wm]
            if other:
                n, fn = other[0]
                raise FormatError(
                    f"tensor {n!r} is in two shards: {st.path} and {os.path.join(folder, fn)} "
                    "(the index names the latter)"
                )
            raise FormatError(f"{st.path} holds tensor(s) {unlisted[:5]} that {index_path} does not list")
        files.append(st)
    return Checkpoint(files, index_path, index_path)


def is_checkpoint_path(path) -> bool:
    """Whether ``path`` is a safetensors file, an index file, or a folder of safetensors."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = os.fspath(path)
    low = p.lower()
    if os.path.isdir(p):
        return _find_in_folder(p)[0] != "none"
    return low.endswith(".safetensors") or low.endswith(".safetensors.index.json")


def open_checkpoint(path) -> Checkpoint:
    """A :class:`Checkpoint` for a safetensors file, an index file or a folder (module docstring)."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file or folder: {p!r}")
    if os.path.isdir(p):
        kind, found = _find_in_folder(p)
        if kind == "index":
            return _from_index(found)
        if kind == "single":
            return Checkpoint([SafetensorsFile(found)], p)
        if kind == "shards":
            return _from_shard_names(found, p)
        raise ValueError(f"{p!r} is a folder without safetensors files ({INDEX_NAME}, {SINGLE_NAME} or shards)")
    if p.lower().endswith(".json"):
        return _from_index(p)
    return Checkpoint([SafetensorsFile(p)], p)


# ------------------------------------------------------------------ writing
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(size) -> int:
    """Bytes from an int or a string like "5GB" (10**9), "500MB", "2GiB" (2**30), "100KB", "4096"."""
    if isinstance(size, bool):
        raise TypeError("size must be an int or a string like '5GB'")
    if isinstance(size, (int, np.integer)):
        n = int(size)
    elif isinstance(size, str):
        m = _SIZE.match(size)
        if not m:
            raise ValueError(f"cannot read size {size!r}: use bytes or a number with KB/MB/GB/TB (or KiB/MiB/GiB)")
        unit = (m[2] or "b").lower().rstrip("b")
        powers = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
        if unit.endswith("i"):
            mult = 1024 ** ("kmgt".index(unit[0]) + 1)
        else:
            mult = powers[unit]
        n = int(float(m[1]) * mult)
    else:
        raise TypeError(f"size must be an int or a string like '5GB', not {type(size).__name__}")
    if n < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return n


def plan_shards(sizes: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Names grouped into shards of at most ``max_bytes`` of tensor data, in order; a tensor bigger
    than the limit gets a shard of its own (as transformers does)."""
    shards: list[list[str]] = []
    current: list[str] = []
    total = 0
    for name, n in sizes:
        if current and total + n > max_bytes:
            shards.append(current)
            current, total = [], 0
        current.append(name)
        total += n
    if current or not shards:
        shards.append(current)
    return shards


@dataclass(frozen=True)
class OutSpec:
    """One tensor of a safetensors file to write."""

    name: str
    dtype: str
    shape: tuple

    @property
    def nbytes(self) -> int:
        n = SAFETENSORS_DTYPES[TAG_OF[self.dtype]][1].itemsize
        for d in self.shape:
            n *= d
        return n


def safetensors_layout(specs: Sequence[OutSpec], metadata: Mapping[str, str] | None) -> tuple[bytes, list[OutSpec]]:
    """(the 8-byte length + JSON header, the specs in data order): 8-byte types first, so that
    every tensor starts at a multiple of its element size."""
    ordered = sorted(specs, key=lambda s: -SAFETENSORS_DTYPES[TAG_OF[s.dtype]][1].itemsize)
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offsets = {}
    off = 0
    for s in ordered:
        offsets[s.name] = [off, off + s.nbytes]
        off += s.nbytes
    for s in specs:  # the header lists the tensors in the given order; only the data is reordered
        header[s.name] = {"dtype": TAG_OF[s.dtype], "shape": [int(d) for d in s.shape], "data_offsets": offsets[s.name]}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    return struct.pack("<Q", len(hjson)) + hjson, ordered


def write_safetensors(
    f,
    specs: Sequence[OutSpec],
    fill: Callable[[OutSpec], memoryview | np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write a safetensors file to the open binary file ``f``: the header, then for each tensor
    (in data order) the bytes ``fill(spec)`` returns (exactly ``spec.nbytes`` of them; the buffer
    may be reused for the next tensor once ``fill`` is called again). Returns the bytes written."""
    head, ordered = safetensors_layout(specs, metadata)
    f.write(head)
    total = len(head)
    for s in ordered:
        if s.nbytes == 0:
            continue
        buf = fill(s)
        view = memoryview(buf).cast("B")
        if view.nbytes != s.nbytes:
            raise RuntimeError(f"{s.name!r}: {view.nbytes} bytes produced, {s.nbytes} expected")
        f.write(view)
        total += s.nbytes
    return total
