"""Streaming compress and decompress: checkpoints bigger than memory, one tensor at a time (numpy only).

Contract
--------
- ``compress_checkpoint(ckpt, dest, config, metadata, *, entries, importance, hessians,
  row_hessians, progress)`` compresses a :class:`~nnpress.checkpoint.Checkpoint` (a safetensors
  file or a sharded folder) into ``dest``. First pass: the tensors' names, dtypes and shapes (from
  the headers, no data) give the model-level statistics of the step rules (``encode.model_stats``).
  Second pass: tensors are read one at a time by a reader thread (one tensor ahead of the
  encoders), each goes through the one encode path (``encode.encode_tensor``) and is appended to
  the file in order (``_core.NnpFileWriter``, which writes to a temporary file renamed by
  ``finish``; consecutive finished tensors go in one ``add_many``). Small tensors are encoded
  concurrently, as ``encode_model`` does, as long as the tensors in flight hold no more elements
  than the largest one; so peak memory is a small multiple of the largest tensor whatever the model
  size. The file is byte-identical to ``compress`` of the same tensors held in memory with the same
  config and metadata.
- ``decompress_to_safetensors(f, out_path)`` and ``decompress_to_folder(f, out_dir, max_shard_size)``
  write the tensors of an :class:`~nnpress.NnpFile` as one safetensors file, or as shards of at
  most ``max_shard_size`` bytes of tensor data plus ``model.safetensors.index.json`` (one shard:
  ``model.safetensors`` alone, as transformers writes it). Each header is written first (every
  size is known from the table); tensors are decoded in batches of at most max(largest tensor,
  64 MiB), row blocks of all tensors of a batch in parallel, while the previous batch is written.
  dtypes are kept; ``__metadata__`` is the source checkpoint's (kept in the ``.nnp`` metadata under
  ``safetensors_metadata``), else ``{"format": "pt"}`` (what transformers requires).
- Outputs are complete or absent: every file is written under a temporary name in its folder and
  renamed when complete; on any error (a full disk included) the temporary files are removed and
  an existing output is untouched. A new folder is built as a hidden temporary folder beside it and
  renamed into place. Into an existing folder (e.g. one holding config.json and a tokenizer) the
  shards and index are written under temporary names, renamed into place once all are complete
  (index last), and then the weight files of an earlier checkpoint that the new index does not
  name (``model.safetensors``, ``model.safetensors.index.json``, ``model-*-of-*.safetensors``)
  are removed, so transformers cannot pick up stale weights. A run killed during those renames
  (after every byte was written) can leave new shards beside the old index.

Surprises
---------
- A killed process (SIGKILL) cannot clean up: its hidden ``.<name>.*.tmp`` files stay behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import _core
from .checkpoint import (
    INDEX_NAME,
    SINGLE_NAME,
    Checkpoint,
    OutSpec,
    parse_size,
    plan_shards,
    read_tensor,
    write_safetensors,
)
from .config import CodecConfig
from .container import NnpFile, _tensor_input, _umask, file_destination, writer_options
from .encode import encode_tensor, model_stats
from .report import CompressionReport
from .traverse import TensorEntry, guess_roles

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "SAFETENSORS_METADATA_KEY",
    "checkpoint_entries",
    "compress_checkpoint",
    "decompress_to_folder",
    "decompress_to_safetensors",
    "source_metadata",
]

DEFAULT_MAX_SHARD_SIZE = "5GB"  # transformers' save_pretrained default
SAFETENSORS_METADATA_KEY = "safetensors_metadata"  # .nnp metadata key holding the source's __metadata__
DEFAULT_OUT_METADATA = {"format": "pt"}
MIN_BATCH_BYTES = 64 << 20  # decode batches: at least this many bytes, so small tensors decode in parallel
MIN_WINDOW_ELEMENTS = 1 << 22  # compress: small tensors in flight together up to this many elements


# ------------------------------------------------------------------ compress
def _to_float(values: np.ndarray, dtype: str) -> np.ndarray:
    """The float32/float64 values ``encode_tensor`` quantizes (bfloat16 widened exactly, shifted in
    place; the same values as ``TensorEntry.float_values``)."""
    if dtype == "bfloat16":
        u = values.astype(np.uint32)
        u <<= 16
        return u.view(np.float32)
    if dtype == "float16":
        return values.astype(np.float32)
    return values


class _LoadedEntry(TensorEntry):
    """A tensor read from disk. A bfloat16 tensor holds one array at a time: its bit patterns until
    ``float_values()`` widens them, then only the float32 values, from which ``values`` re-derives
    the bit patterns exactly (integer shift) if the tensor ends up stored raw."""

    def __init__(self, e: TensorEntry, raw: np.ndarray):
        self.name, self.dtype, self.shape, self.role, self.alias_of = e.name, e.dtype, e.shape, e.role, None
        self._raw: np.ndarray | None = raw
        self._float: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        if self._raw is not None:
            return self._raw
        return (self._float.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 only (see float_values)

    def float_values(self) -> np.ndarray:
        if self._float is None:
            self._float = _to_float(self._raw, self.dtype)
            if self.dtype == "bfloat16":
                self._raw = None
        return self._float


def checkpoint_entries(ckpt: Checkpoint) -> list[TensorEntry]:
    """The checkpoint's tensors as entries without values (names, dtypes, shapes, roles as
    ``traverse.collect`` gives them)."""
    infos = ckpt.infos()
    for i in infos:
        if len(i.name.encode("utf-8")) > 65535:
            raise ValueError(f"tensor name too long ({len(i.name)} characters): {i.name[:40]!r}...")
        if len(i.shape) > 8:
            raise ValueError(f"tensor {i.name!r} has {len(i.shape)} dimensions; at most 8 are supported")
    roles = guess_roles((i.name, i.dtype, i.shape) for i in infos)
    return [TensorEntry(i.name, i.dtype, i.shape, role, None) for i, role in zip(infos, roles)]


class _Sink:
    """Appends records to the .nnp file through ``_core.NnpFileWriter`` (a temporary file renamed by
    ``finish``, removed by ``abort``)."""

    def __init__(self, dest: str, options):
        if not _core.HAS_ENCODER:
            raise RuntimeError("this nnpress build has no encoder (NNPRESS_ENCODER=OFF)")
        self.index: dict[str, int] = {}
        self.count = 0
        self.stored: list[int] = []
        self._w = _core.NnpFileWriter(file_destination(dest), options)

    def add_many(self, records) -> None:
        """Several records in order (``NnpFileWriter.add_many``: one pool for their row blocks)."""
        inputs = []
        for r in records:
            inputs.append(_tensor_input(r, self.index))
            self.index.setdefault(r.name, self.count)
            self.count += 1
        self._w.add_many(inputs)

    def finish(self) -> int:
        self.stored = [int(s) for s in self._w.stored_bytes]
        return int(self._w.finish())

    def abort(self) -> None:
        self._w.abort()


def compress_checkpoint(
    ckpt: Checkpoint,
    dest: str,
    config: CodecConfig,
    metadata: dict,
    *,
    entries: list[TensorEntry] | None = None,
    importance: Mapping[str, Any] | None = None,
    hessians: Mapping[str, Any] | None = None,
    row_hessians: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> CompressionReport:
    """Compress ``ckpt`` into ``dest`` tensor by tensor (module docstring). ``metadata``: the
    ``.nnp`` metadata object; ``entries``: ``checkpoint_entries(ckpt)`` if the caller has them."""
    t0 = time.perf_counter()
    entries = checkpoint_entries(ckpt) if entries is None else entries
    stats = model_stats(entries, config)  # first pass: names, dtypes, shapes only
    total = len(entries)
    counts = [e.count for e in entries]
    window = max(max(counts, default=0), MIN_WINDOW_ELEMENTS)
    workers = max(1, min(config.n_threads, total))
    times = {"load": 0.0, "quantize": 0.0, "encode": 0.0}
    lock = threading.Lock()

    # reader: one tensor ahead of the encoders (a token per loaded tensor not yet taken)
    tokens = threading.Semaphore(1)
    loaded: dict[int, Any] = {}
    ready = threading.Condition()
    stop = threading.Event()

    def reader() -> None:
        for k, e in enumerate(entries):
            tokens.acquire()
            if stop.is_set():
                return
            try:
                t = time.perf_counter()
                item: Any = _LoadedEntry(e, read_tensor(ckpt.info(e.name)))
                with lock:
                    times["load"] += time.perf_counter() - t
            except BaseException as exc:  # handed to the consumer, which raises it
                item = exc
            with ready:
                loaded[k] = item
                ready.notify_all()
            if isinstance(item, BaseException):
                return

    def take(k: int) -> _LoadedEntry:
        with ready:
            while k not in loaded:
                if stop.is_set():
                    raise RuntimeError("compression stopped")
                ready.wait()
            item = loaded.pop(k)
        tokens.release()
        if isinstance(item, BaseException):
            raise item
        return item

    def encode(k: int):
        e = take(k)
        t = time.perf_counter()
        name = e.name
        out = encode_tensor(
            e,
            config,
            stats,
            importance=None if importance is None else importance.get(name),
            hessian=None if hessians is None else hessians.get(name),
            row_hessian=None if row_hessians is None else row_hessians.get(name),
        )
        out.recon = None  # only the report's error needed it
        with lock:
            times["quantize"] += time.perf_counter() - t
        return out

    options = writer_options(block_elements=config.block_elements, threads=config.threads, metadata=metadata)
    sink = _Sink(dest, options)
    reports = []
    if progress is not None:
        progress(0, total, "")
    rthread = threading.Thread(target=reader, name="nnpress-read", daemon=True)
    rthread.start()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnpress-encode")
    inflight: deque = deque()
    inflight_elems = 0
    nxt = 0
    try:
        while True:
            while nxt < total and len(inflight) < workers and (not inflight or inflight_elems + counts[nxt] <= window):
                inflight.append((nxt, pool.submit(encode, nxt)))
                inflight_elems += counts[nxt]
                nxt += 1
            if not inflight:
                break
            # the next tensor in order, plus those after it that are already encoded: coded as one
            # batch (their row blocks on one pool), so many small tensors are not coded one by one
            k, fut = inflight.popleft()
            batch = [(k, fut.result())]
            while inflight and inflight[0][1].done() and sum(counts[j] for j, _ in batch) < MIN_WINDOW_ELEMENTS:
                j, f = inflight.popleft()
                batch.append((j, f.result()))
            del fut
            t = time.perf_counter()
            sink.add_many([enc.record for _, enc in batch])
            times["encode"] += time.perf_counter() - t
            for j, enc in batch:
                inflight_elems -= counts[j]
                reports.append(enc.report)
                if progress is not None:
                    progress(len(reports), total, entries[j].name)
            del batch
        t = time.perf_counter()
        file_bytes = sink.finish()
        times["write"] = time.perf_counter() - t
    except BaseException:
        stop.set()
        for _, f in inflight:
            f.cancel()
        sink.abort()
        raise
    finally:
        stop.set()
        tokens.release()  # wake the reader and the encoders so that they see stop
        with ready:
            ready.notify_all()
        pool.shutdown(wait=True, cancel_futures=True)
        rthread.join()
    for r, s in zip(reports, sink.stored):
        r.stored_bytes = s
    times["total"] = time.perf_counter() - t0
    return CompressionReport(
        path=dest,
        tensors=reports,
        file_bytes=file_bytes,
        original_bytes=sum(r.original_bytes for r in reports if r.storage != "alias"),
        params=sum(r.params for r in reports if r.storage != "alias"),
        times=times,
        config=config.to_dict(),
    )


def source_metadata(metadata: dict, safetensors_meta: dict | None) -> dict:
    """The ``.nnp`` metadata ``metadata`` plus the source checkpoint's safetensors ``__metadata__``
    (under ``SAFETENSORS_METADATA_KEY``, when the source has one), which decompress writes back."""
    if safetensors_meta is None:
        return metadata
    return dict(metadata, **{SAFETENSORS_METADATA_KEY: dict(safetensors_meta)})


# ------------------------------------------------------------------ decompress
def _out_metadata(f: NnpFile) -> dict:
    meta = f.metadata.get(SAFETENSORS_METADATA_KEY)
    if isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        return meta
    return dict(DEFAULT_OUT_METADATA)


def _specs(f: NnpFile) -> list[OutSpec]:
    return [OutSpec(e["name"], e["dtype"], tuple(int(d) for d in e["shape"])) for e in f.entries]


class _Decoder:
    """``fill`` for :func:`write_safetensors`: decodes batches of consecutive tensors (row blocks
    of a whole batch in parallel) one batch ahead of the writer, so at most two batches are held."""

    def __init__(self, f: NnpFile, order: list[OutSpec], threads: int | None):
        self.f = f
        self.threads = threads
        budget = max([s.nbytes for s in order] + [MIN_BATCH_BYTES])
        self.batches: list[list[OutSpec]] = []
        cur: list[OutSpec] = []
        size = 0
        for s in order:
            if s.nbytes == 0:
                continue
            if cur and size + s.nbytes > budget:
                self.batches.append(cur)
                cur, size = [], 0
            cur.append(s)
            size += s.nbytes
        if cur:
            self.batches.append(cur)
        self.pos = 0
        self.current: dict[str, np.ndarray] = {}
        self.decode_seconds = 0.0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnpress-decode")
        self.next = self.pool.submit(self._decode, 0) if self.batches else None

    def _decode(self, b: int) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        f = self.f
        outs: list = [None] * len(f.entries)
        arrays = {}
        for s in self.batches[b]:
            e = f.entry(s.name)
            a = np.empty(s.nbytes, dtype=np.uint8)
            outs[e["index"]] = a
            arrays[s.name] = a
        f._decode_all_into(outs, self.threads)
        self.decode_seconds += time.perf_counter() - t
        return arrays

    def __call__(self, s: OutSpec):
        if s.name not in self.current:
            self.current = self.next.result()  # the previous batch is released here
            self.pos += 1
            self.next = self.pool.submit(self._decode, self.pos) if self.pos < len(self.batches) else None
        return self.current.pop(s.name)

    def close(self) -> None:
        if self.next is not None:
            self.next.cancel()
        self.pool.shutdown(wait=True)


def _tmp_file(path: str):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.fchmod(fd, 0o666 & ~_umask())
    return os.fdopen(fd, "wb"), tmp


def _write_one(
    f: NnpFile, specs: list[OutSpec], tmp_path_out: list, dest: str, meta: dict, threads
) -> tuple[int, float]:
    """Write one safetensors file of ``specs`` under a temporary name beside ``dest`` (appended to
    ``tmp_path_out`` before writing, so the caller can remove it); returns (bytes, decode seconds)."""
    fh, tmp = _tmp_file(dest)
    tmp_path_out.append(tmp)
    from .checkpoint import safetensors_layout

    _, order = safetensors_layout(specs, meta)
    dec = _Decoder(f, order, threads)
    try:
        with fh:
            n = write_safetensors(fh, specs, dec, meta)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        dec.close()
    return n, dec.decode_seconds


def _unlink_quietly(paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass


def decompress_to_safetensors(f: NnpFile, out_path: str, *, threads: int | None = None) -> dict:
    """``f``'s tensors into one ``.safetensors`` file, streamed (module docstring)."""
    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"destination folder does not exist: {folder!r}")
    t0 = time.perf_counter()
    tmps: list[str] = []
    try:
        n, dsec = _write_one(f, _specs(f), tmps, out_path, _out_metadata(f), threads)
        os.replace(tmps[0], out_path)
    except BaseException:
        _unlink_quietly(tmps)
        raise
    total = time.perf_counter() - t0
    return {
        "path": out_path,
        "files": [out_path],
        "tensors": len(f),
        "bytes": n,
        "decode_seconds": dsec,
        "write_seconds": total - dsec,
    }


_OLD_WEIGHTS = re.compile(r"^model(-\d+-of-\d+)?\.safetensors(\.index\.json)?$")


def decompress_to_folder(
    f: NnpFile, out_dir: str, *, max_shard_size=DEFAULT_MAX_SHARD_SIZE, threads: int | None = None
) -> dict:
    """``f``'s tensors as a Hugging Face checkpoint folder: shards + ``model.safetensors.index.json``
    (module docstring)."""
    out_dir = os.fspath(out_dir).rstrip(os.sep) or os.sep
    limit = parse_size(max_shard_size)
    specs = _specs(f)
    by_name = {s.name: s for s in specs}
    shards = plan_shards([(s.name, s.nbytes) for s in specs], limit)
    n = len(shards)
    names = [SINGLE_NAME] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
    meta = _out_metadata(f)
    index = None
    if n > 1:
        weight_map = {nm: names[k] for k, shard in enumerate(shards) for nm in shard}
        index = {
            "metadata": {"total_size": sum(s.nbytes for s in specs)},
            "weight_map": dict(sorted(weight_map.items())),
        }
    t0 = time.perf_counter()
    dsec = 0.0
    fresh = not os.path.exists(out_dir)
    if not fresh and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"{out_dir!r} exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"destination folder does not exist: {parent!r}")
    if fresh:
        work = tempfile.mkdtemp(
            prefix="." + os.path.basename(os.path.abspath(out_dir)) + ".", suffix=".tmp", dir=parent
        )
        os.chmod(work, 0o777 & ~_umask())
    else:
        work = out_dir
    tmps: list[str] = []  # temporary files, in the order of `finals`
    finals: list[str] = []
    total_bytes = 0
    try:
        for k, shard in enumerate(shards):
            dest = os.path.join(out_dir, names[k])
            nb, d = _write_one(f, [by_name[nm] for nm in shard], tmps, os.path.join(work, names[k]), meta, threads)
            finals.append(dest)
            total_bytes += nb
            dsec += d
        if index is not None:
            fh, tmp = _tmp_file(os.path.join(work, INDEX_NAME))
            tmps.append(tmp)
            with fh:
                fh.write((json.dumps(index, indent=2) + "\n").encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            finals.append(os.path.join(out_dir, INDEX_NAME))
        if fresh:
            for tmp, final in zip(tmps, finals):
                os.replace(tmp, os.path.join(work, os.path.basename(final)))
            os.rename(work, out_dir)
        else:
            for tmp, final in zip(tmps, finals):  # shards first, the index last
                os.replace(tmp, final)
            keep = {os.path.basename(p) for p in finals}
            stale = [x for x in os.listdir(out_dir) if _OLD_WEIGHTS.match(x) and x not in keep]
            _unlink_quietly(os.path.join(out_dir, x) for x in stale)
    except BaseException:
        _unlink_quietly(tmps)
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        raise
    total = time.perf_counter() - t0
    return {
        "path": out_dir,
        "files": finals,
        "tensors": len(f),
        "bytes": total_bytes,
        "decode_seconds": dsec,
        "write_seconds": total - dsec,
    }
