"""Write the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/ from real streams.

Usage: python tests/fuzz/make_corpus.py   (needs an installed nnpress with the encoder)

Seeds are named by the SHA-1 of their content, as libFuzzer names the inputs it saves, so
re-running adds nothing twice. Crash reproducers live next to the seeds under a descriptive name
(``crash-<what>``); this script never removes files.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

import nnpress

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def save(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def level_arrays():
    rng = np.random.default_rng(7)
    i32 = np.iinfo(np.int32)
    yield np.array(5, np.int32)  # rank 0
    yield np.zeros(0, np.int32)  # empty
    yield np.zeros((3, 0), np.int32)
    yield np.zeros((0, 4), np.int32)
    yield np.zeros((16, 16), np.int32)  # all zero
    yield np.array([i32.min, i32.max, 0, -1, 1], np.int32)  # extremes
    yield rng.laplace(0, 1.5, (8, 24)).round().astype(np.int32)  # typical quantized weights
    yield rng.laplace(0, 40, (4, 3, 3, 3)).round().astype(np.int32)  # conv kernel
    a = rng.integers(-3, 4, (20, 30)).astype(np.int32)
    a[rng.random(a.shape) < 0.9] = 0
    yield a  # sparse
    yield rng.integers(i32.min, i32.max, 40, dtype=np.int64).astype(np.int32)
    yield rng.integers(-1000, 1000, (2, 2, 2, 2, 2, 2, 2, 2)).astype(np.int32)  # 8 dims
    yield np.full(2000, 1, np.int32)


def scaled_container_seeds() -> list[bytes]:
    """Format 1.1 files: quantized tensors with row and/or column scale exponents (storage 3)."""
    from nnpress.container import TensorRecord, nnp_bytes

    rng = np.random.default_rng(99)
    lv = rng.integers(-3, 4, (12, 10)).astype(np.int32)
    re = rng.integers(-40, 40, 12).astype(np.int8)
    ce = rng.integers(-40, 40, 10).astype(np.int8)
    both = TensorRecord(
        "w",
        "float32",
        "weight",
        "quantized",
        lv.shape,
        data=lv,
        step=0.05,
        method="trellis",
        row_scale_exp=re,
        col_scale_exp=ce,
    )
    rows = TensorRecord(
        "r", "float16", "weight", "quantized", (12, 2, 5), data=lv.reshape(12, 2, 5), step=0.5, row_scale_exp=re
    )
    cols = TensorRecord(
        "c",
        "bfloat16",
        "weight",
        "quantized",
        (10,),
        data=lv[0],
        method="rdoq",
        step=2.0,
        col_scale_exp=np.array([-128, 127, 0, 1, -1, 8, -8, 64, -64, 3], np.int8),
    )
    tied = TensorRecord("t", "float32", "weight", "alias", lv.shape, alias_of="w")
    plain = TensorRecord("p", "float64", "weight", "quantized", (3, 4), data=lv[:3, :4], step=1e-3)
    return [
        nnp_bytes([both, rows, cols, tied, plain], block_elements=30, threads=1)[0],
        nnp_bytes([both], threads=1)[0],
        nnp_bytes([cols], threads=1)[0],
    ]


def main() -> None:
    for levels in level_arrays():
        stream = nnpress.encode_levels(levels)
        save("level_stream", stream)
        info = nnpress.level_stream_info(stream)
        payload = stream[len(stream) - 4 - info["payload_bytes"] : len(stream) - 4]
        shape = levels.shape
        rows = shape[0] if levels.ndim >= 2 else (1 if levels.size else 0)
        cols = levels.size // rows if rows else 0
        if rows < 65536 and cols < 65536:
            header = struct.pack("<HHBB", rows, cols, info["unary_len"], info["eg_order"])
            save("level_payload", header + payload)
    for golden in sorted((HERE.parent / "golden").glob("*.npl")):
        data = golden.read_bytes()
        if len(data) <= 4096:
            save("level_stream", data)
    # round_trip: ndim, dims, distribution, unary_len, eg_order, value bytes.
    rng = np.random.default_rng(11)
    for ndim in range(5):
        for dist in range(6):
            dims = bytes(int(x) for x in rng.integers(1, 12, ndim))
            values = bytes(int(x) for x in rng.integers(0, 256, 64))
            save("round_trip", bytes([ndim]) + dims + bytes([dist, (ndim * 7 + dist) % 65, dist]) + values)
    save("round_trip", bytes([2, 250, 3, 0, 10, 0]))  # 1000 x 3 from the generator
    # container: the golden files and small files of every storage kind, several row blocks.
    from nnpress.container import TensorRecord, nnp_bytes

    for golden in sorted((HERE.parent / "golden").glob("*.nnp")):
        if golden.stat().st_size <= 8192:
            save("container", golden.read_bytes())
    lv = rng.integers(-3, 4, (12, 10)).astype(np.int32)
    records = [
        TensorRecord("w", "float32", "weight", "quantized", lv.shape, data=lv, step=0.05),
        TensorRecord("b", "float32", "bias", "raw", (10,), data=rng.standard_normal(10).astype(np.float32)),
        TensorRecord("h", "float16", "weight", "quantized", (3, 4), data=lv[:3, :4], method="trellis", step=0.5),
        TensorRecord("bf", "bfloat16", "norm", "quantized", (5,), data=lv[0, :5], method="rdoq", step=2.0),
        TensorRecord("d", "float64", "weight", "quantized", (2, 2, 2), data=lv[:2, :4].reshape(2, 2, 2), step=1e-3),
        TensorRecord("i", "int64", "buffer", "raw", (3,), data=np.array([1, -2, 3], np.int64)),
        TensorRecord("t", "float32", "weight", "alias", lv.shape, alias_of="w"),
        TensorRecord("e", "float32", "weight", "quantized", (0, 4), data=np.zeros((0, 4), np.int32), step=1.0),
        TensorRecord("s", "float32", "other", "quantized", (), data=np.array(7, np.int32), step=0.25),
    ]
    for block in (1 << 18, 20, 10):
        save("container", nnp_bytes(records, block_elements=block, threads=1, metadata={"k": "v"})[0])
    for rec in records[:6]:
        save("container", nnp_bytes([rec], threads=1)[0])
    save("container", nnp_bytes([], threads=1)[0])
    for f in scaled_container_seeds():
        save("container", f)

    # sparse: every mode (CER/CSER, 16/32-bit columns, raw/small values, plausible/raw/mutated
    # structures) with random bytes; the fuzzer's coverage feedback takes it from there.
    for mode in range(32):
        body = bytes(int(x) for x in rng.integers(0, 256, 300))
        save("sparse", bytes([mode, 6, 20, 0, 4]) + body)


if __name__ == "__main__":
    main()
