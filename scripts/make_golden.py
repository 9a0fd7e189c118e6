"""Regenerate the golden .nnp files in tests/golden/ (formats 1.0 and 1.1) and their manifest.

The golden files freeze the format: tests decode them and compare the values' SHA-256 with the
manifest, and check that the writer still produces the same bytes from the inputs below. Run this
only for a deliberate, versioned format change (then add new files; never rewrite old ones):

    python scripts/make_golden.py   # writes tests/golden/*.nnp, nnp_manifest.json, nnp_golden_crc.tsv

Inputs come from a fixed integer generator (not numpy's random distributions, whose streams may
change between numpy versions), and the binarization parameters are pinned, so that the bytes do
not depend on the encoder's parameter heuristics.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import numpy as np

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "tests" / "golden"


def _lcg_levels(n: int, seed: int, spread: int) -> np.ndarray:
    """Deterministic, roughly Laplacian int32 levels: many zeros, a few large values."""
    out = np.empty(n, dtype=np.int32)
    x = seed & 0xFFFFFFFF
    for i in range(n):
        x = (1664525 * x + 1013904223) & 0xFFFFFFFF
        u = x >> 8  # 24 bits
        mag = 0
        t = u & 0xFFFF
        while t < 0x8000 and mag < spread:  # geometric magnitude
            mag += 1
            t = (t * 2 + ((u >> 16) & 1)) & 0xFFFF
            u = (u * 1103515245 + 12345) & 0xFFFFFF
        out[i] = -mag if (x >> 31) else mag
    return out


def _cases():
    from nnpress.container import TensorRecord

    mixed = [
        TensorRecord("features.0.weight", "float32", "weight", "quantized", (6, 1, 3, 3),
                     data=_lcg_levels(54, 1, 12).reshape(6, 1, 3, 3), method="nearest", step=0.03125, unary_len=7, eg_order=0),
        TensorRecord("features.0.bias", "float32", "bias", "raw", (6,),
                     data=np.array([0.5, -0.25, 1e-3, -7.0, 3.14159, 0.0], np.float32)),
        TensorRecord("bn.running_mean", "float32", "buffer", "raw", (6,), data=np.arange(6, dtype=np.float32) / 7),
        TensorRecord("bn.num_batches_tracked", "int64", "buffer", "raw", (), data=np.int64(1234567)),
        TensorRecord("classifier.weight", "float16", "weight", "quantized", (10, 24),
                     data=_lcg_levels(240, 2, 20).reshape(10, 24), method="rdoq", step=0.0078125, lam=1e-5, unary_len=7, eg_order=0),
        TensorRecord("embed.\u00e9\u00f1.weight", "bfloat16", "embedding", "quantized", (5, 8),
                     data=_lcg_levels(40, 3, 6).reshape(5, 8), method="nearest", step=0.1, unary_len=4, eg_order=0),
        TensorRecord("head.weight", "bfloat16", "embedding", "alias", (5, 8), alias_of="embed.\u00e9\u00f1.weight"),
        TensorRecord("scale", "float32", "other", "quantized", (), data=np.int32(-3), method="nearest", step=0.2,
                     unary_len=2, eg_order=0),
        TensorRecord("empty", "float32", "weight", "quantized", (0, 4), data=np.zeros((0, 4), np.int32), step=1.0,
                     unary_len=10, eg_order=0),
        TensorRecord("mask", "bool", "buffer", "raw", (3,), data=np.array([True, False, True])),
        TensorRecord("ids", "int32", "buffer", "raw", (1, 4), data=np.array([[0, 1, -2, 2**31 - 1]], np.int32)),
    ]
    blocks = [
        TensorRecord("big.weight", "float32", "weight", "quantized", (40, 33),
                     data=_lcg_levels(1320, 4, 30).reshape(40, 33), method="nearest", step=0.001, unary_len=6, eg_order=0),
        TensorRecord("dq.weight", "float32", "weight", "quantized", (9, 17),
                     data=_lcg_levels(153, 5, 8).reshape(9, 17), method="trellis", step=0.05, lam=0.01, unary_len=7, eg_order=0),
        TensorRecord("f64.weight", "float64", "weight", "quantized", (12, 7),
                     data=_lcg_levels(84, 6, 15).reshape(12, 7), method="rdoq", step=1.0 / 3, unary_len=4, eg_order=0),
        TensorRecord("vector", "float32", "other", "quantized", (100,), data=_lcg_levels(100, 7, 10), step=0.5,
                     unary_len=9, eg_order=0),
    ]
    # Format 1.1: quantized tensors with channel scale exponents (storage code 3), mixed with a 1.0 entry.
    def exps(n, seed, lo=-24, hi=24):
        v = _lcg_levels(n, seed, 40)
        return np.clip(v * 3, lo, hi).astype(np.int8)

    scales = [
        TensorRecord("rc.weight", "float32", "weight", "quantized", (11, 13),
                     data=_lcg_levels(143, 8, 12).reshape(11, 13), method="nearest", step=0.02, unary_len=7,
                     eg_order=0, row_scale_exp=exps(11, 9), col_scale_exp=exps(13, 10)),
        TensorRecord("rows.dq.weight", "float32", "weight", "quantized", (9, 17),
                     data=_lcg_levels(153, 11, 8).reshape(9, 17), method="trellis", step=0.05, lam=0.01,
                     unary_len=7, eg_order=0, row_scale_exp=exps(9, 12)),
        TensorRecord("cols.conv", "float16", "weight", "quantized", (4, 2, 3, 3),
                     data=_lcg_levels(72, 13, 10).reshape(4, 2, 3, 3), method="rdoq", step=0.01, unary_len=5,
                     eg_order=0, col_scale_exp=exps(18, 14, -128, 127)),
        TensorRecord("plain.weight", "float32", "weight", "quantized", (3, 5),
                     data=_lcg_levels(15, 15, 6).reshape(3, 5), method="nearest", step=0.25, unary_len=4, eg_order=0),
        TensorRecord("bf.weight", "bfloat16", "embedding", "quantized", (6, 4),
                     data=_lcg_levels(24, 16, 9).reshape(6, 4), method="nearest", step=0.125, unary_len=6,
                     eg_order=0, row_scale_exp=exps(6, 17), col_scale_exp=exps(4, 18)),
        TensorRecord("f64.blocks", "float64", "weight", "quantized", (20, 7),
                     data=_lcg_levels(140, 19, 15).reshape(20, 7), method="trellis", step=1.0 / 3, unary_len=6,
                     eg_order=0, row_scale_exp=exps(20, 20), col_scale_exp=exps(7, 21)),
    ]
    return {
        "golden_v1_mixed.nnp": (mixed, dict(block_elements=1 << 18, metadata={"golden": "mixed", "format": "1.0"})),
        "golden_v1_blocks.nnp": (blocks, dict(block_elements=100, metadata={"golden": "blocks", "format": "1.0"})),
        "golden_v1_1_scales.nnp": (scales, dict(block_elements=40, metadata={"golden": "scales", "format": "1.1"})),
    }


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bitwise: the C++ golden test checks decoded values with it."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def build_all() -> dict[str, bytes]:
    from nnpress.container import nnp_bytes

    return {name: nnp_bytes(recs, threads=1, **kw)[0] for name, (recs, kw) in _cases().items()}


def main() -> int:
    from nnpress.container import NnpFile

    GOLDEN.mkdir(parents=True, exist_ok=True)
    files = []
    crc_lines = ["# file\ttensor\tdecoded bytes\tCRC-32C of the decoded little-endian values (C++ golden test)"]
    for name, data in build_all().items():
        (GOLDEN / name).write_bytes(data)
        f = NnpFile(data)
        arrays = f.read_all(threads=1)
        tensors = [{"name": n, "shape": list(arrays[n].shape), "numpy_dtype": str(arrays[n].dtype),
                    "dtype": f.entry(n)["dtype"],
                    "sha256": hashlib.sha256(np.ascontiguousarray(arrays[n]).tobytes()).hexdigest()}
                   for n in f.names]
        for n in f.names:
            raw = np.ascontiguousarray(arrays[n]).tobytes()
            crc_lines.append(f"{name}\t{n}\t{len(raw)}\t{crc32c(raw):08x}")
        files.append({"file": name, "format": "%d.%d" % f.version, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "tensors": tensors})
        print(f"{name}: {len(data)} bytes, {len(tensors)} tensors")
    (GOLDEN / "nnp_manifest.json").write_text(json.dumps({"files": files}, indent=1) + "\n")
    (GOLDEN / "nnp_golden_crc.tsv").write_text("\n".join(crc_lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
