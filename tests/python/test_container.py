"""The .nnp container from Python: write/read round trips, random access, determinism, golden
files, and corrupt / truncated / extended files raising nnpress.FormatError."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

import nnpress
from nnpress.container import NnpFile, TensorRecord, bfloat16_to_float32, float32_to_bfloat16, nnp_bytes, write_nnp

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden"


def _records(rng):
    big = rng.laplace(scale=3.0, size=(64, 50)).round().astype(np.int32)
    small = rng.laplace(scale=1.0, size=(3, 2, 4)).round().astype(np.int32)
    return (
        [
            TensorRecord("w.big", "float32", "weight", "quantized", (64, 50), data=big, method="nearest", step=0.01),
            TensorRecord(
                "w.trellis",
                "float16",
                "weight",
                "quantized",
                (3, 2, 4),
                data=small,
                method="trellis",
                step=0.25,
                lam=0.5,
            ),
            TensorRecord("scalar", "bfloat16", "other", "quantized", (), data=np.int32(-7), step=0.5),
            TensorRecord("empty", "float32", "weight", "quantized", (0, 5), data=np.zeros((0, 5), np.int32), step=1.0),
            TensorRecord("bias", "float32", "bias", "raw", (3,), data=np.array([1.5, -2.0, 0.25], np.float32)),
            TensorRecord("steps", "int64", "buffer", "raw", (), data=np.int64(123456789012)),
            TensorRecord("mask", "bool", "buffer", "raw", (2, 2), data=np.array([[True, False], [False, True]])),
            TensorRecord("tied", "float32", "weight", "alias", (64, 50), alias_of="w.big"),
        ],
        big,
        small,
    )


def test_round_trip_all_storage_kinds(tmp_path):
    rng = np.random.default_rng(0)
    recs, big, small = _records(rng)
    path = tmp_path / "m.nnp"
    stored = write_nnp(path, recs, block_elements=500, metadata={"k": "v"})
    assert stored[-1] == 0 and stored[0] > 0
    f = NnpFile(path)
    assert f.names == [r.name for r in recs]
    assert f.metadata == {"k": "v"}
    assert f.version == (1, 0)
    e = f.entry("w.big")
    assert e["chunks"] == 7 and e["rows_per_block"] == 10  # 500 // 50 rows per block, 64 rows
    np.testing.assert_array_equal(f.read_levels("w.big"), big)
    np.testing.assert_array_equal(f.read("w.big"), nnpress.dequantize(big, 0.01))
    trel = f.read("w.trellis")
    assert trel.dtype == np.float16
    np.testing.assert_array_equal(trel, nnpress.dequantize(small, 0.25, method="trellis").astype(np.float16))
    assert f.read("scalar").shape == () and bfloat16_to_float32(f.read("scalar")) == -3.5
    assert f.read("empty").shape == (0, 5)
    np.testing.assert_array_equal(f.read("bias"), [1.5, -2.0, 0.25])
    assert f.read("steps") == 123456789012
    np.testing.assert_array_equal(f.read("mask"), [[True, False], [False, True]])
    np.testing.assert_array_equal(f.read("tied"), f.read("w.big"))
    everything = f.read_all(threads=2)
    assert everything["tied"] is everything["w.big"]
    for n in f.names:
        np.testing.assert_array_equal(everything[n], f.read(n, threads=1))
    with pytest.raises(KeyError):
        f.read("missing")
    with pytest.raises(ValueError):
        f.read_levels("bias")


def test_bytes_identical_for_any_thread_count():
    recs, _, _ = _records(np.random.default_rng(1))
    a, _ = nnp_bytes(recs, block_elements=300, threads=1)
    b, _ = nnp_bytes(recs, block_elements=300, threads=2)
    c, _ = nnp_bytes(recs, block_elements=300, threads=5)
    assert a == b == c


def test_parameter_choice_keeps_size_and_fixed_params_are_kept():
    rng = np.random.default_rng(7)
    lv = rng.laplace(scale=20.0, size=(512, 256)).round().astype(np.int32)
    rec = [TensorRecord("w", "float32", "weight", "quantized", lv.shape, data=lv, step=0.01)]
    static, _ = nnp_bytes(rec, size_tolerance=-1.0)
    fast, _ = nnp_bytes(rec)
    assert len(fast) <= 1.01 * len(static)
    for data in (static, fast):
        np.testing.assert_array_equal(NnpFile(data).read_levels("w"), lv)
    pinned = [
        TensorRecord("w", "float32", "weight", "quantized", lv.shape, data=lv, step=0.01, unary_len=5, eg_order=2)
    ]
    e = NnpFile(nnp_bytes(pinned)[0]).entry("w")
    assert (e["unary_len"], e["eg_order"]) == (5, 2)


def test_bfloat16_helpers_round_to_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.inf], np.float32)
    bits = float32_to_bfloat16(x)
    np.testing.assert_array_equal(bits, [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80])
    np.testing.assert_array_equal(bfloat16_to_float32(bits)[:4], [1.0, 1.0, 1.015625, -2.5])


def test_writer_rejects_bad_records():
    recs, _, _ = _records(np.random.default_rng(2))
    with pytest.raises(ValueError):
        nnp_bytes(recs + [recs[0]])  # duplicate name
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord("x", "float32", "weight", "alias", (2,), alias_of="nope")])
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord("x", "float32", "weight", "quantized", (2,), data=np.zeros(2, np.int32), step=0.0)])
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord("x", "int8", "buffer", "quantized", (2,), data=np.zeros(2, np.int32), step=1.0)])
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord("x", "float32", "wrongrole", "raw", (1,), data=np.zeros(1, np.float32))])


def _decode_everything(data: bytes) -> None:
    f = NnpFile(data)
    f.read_all(threads=2)


def test_every_corruption_is_a_format_error():
    rng = np.random.default_rng(3)
    recs, _, _ = _records(rng)
    good, _ = nnp_bytes(recs, block_elements=500)
    _decode_everything(good)
    flips = rng.integers(0, len(good), size=400)
    positions = sorted(set(flips.tolist()) | set(range(0, 48)) | set(range(len(good) - 40, len(good))))
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(nnpress.FormatError):
            _decode_everything(bytes(bad))
    for n in sorted(set(rng.integers(0, len(good), size=200).tolist()) | {0, 1, 8, 39, 40, len(good) - 1}):
        with pytest.raises(nnpress.FormatError):
            _decode_everything(good[:n])
    for extra in (b"\x00", b"garbage", bytes(1000)):
        with pytest.raises(nnpress.FormatError):
            _decode_everything(good + extra)


def test_checksum_error_names_the_tensor():
    recs, _, _ = _records(np.random.default_rng(4))
    good, _ = nnp_bytes(recs, block_elements=500)
    f = NnpFile(good)
    # Chunks tile the data region in table order; w.big's chunks come first, starting at byte 40.
    bad = bytearray(good)
    bad[45] ^= 0x20
    f = NnpFile(bytes(bad))  # the table is intact: parsing succeeds
    with pytest.raises(nnpress.FormatError, match=r"w\.big"):
        f.read("w.big")
    f.read("bias")  # other tensors still decode (random access)
    with pytest.raises(nnpress.FormatError, match=r"w\.big"):
        f.verify()


def test_not_a_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        NnpFile(tmp_path / "missing.nnp")
    with pytest.raises(nnpress.FormatError):
        NnpFile(b"PK\x03\x04 this is a zip")
    with pytest.raises(nnpress.FormatError):
        NnpFile(b"")
    with pytest.raises(TypeError):
        NnpFile(12)


def test_limits_refuse_big_claims():
    recs, _, _ = _records(np.random.default_rng(5))
    good, _ = nnp_bytes(recs)
    with pytest.raises(nnpress.FormatError, match="limit"):
        NnpFile(good, max_elements=100)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.nnp"
    recs, _, _ = _records(np.random.default_rng(6))
    write_nnp(path, recs)
    before = path.read_bytes()
    bad = recs + [TensorRecord("x", "float32", "weight", "alias", (2,), alias_of="nope")]
    with pytest.raises(ValueError):
        write_nnp(path, bad)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.nnp"]  # no temp files left behind


# ---- golden files: bytes written by formats 1.0 and 1.1 must decode identically forever ----
def _golden_cases():
    manifest = GOLDEN / "nnp_manifest.json"
    return json.loads(manifest.read_text())["files"]


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: c["file"])
def test_golden_files_decode_identically(case):
    f = NnpFile(GOLDEN / case["file"])
    assert f.version == tuple(int(x) for x in case["format"].split("."))
    assert f.names == [t["name"] for t in case["tensors"]]
    arrays = f.read_all()
    for t in case["tensors"]:
        a = arrays[t["name"]]
        assert list(a.shape) == t["shape"]
        assert str(a.dtype) == t["numpy_dtype"]
        import hashlib

        assert hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() == t["sha256"], t["name"]


def test_golden_files_are_reproduced_by_the_writer():
    """The writer still produces the golden bytes from the same inputs (format drift is caught)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN.parents[1] / "scripts" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, data in mod.build_all().items():
        assert (GOLDEN / name).read_bytes() == data, name


def test_validate_checks_structure_and_every_crc():
    from nnpress.container import validate_nnp

    recs, _, _ = _records(np.random.default_rng(8))
    good, _ = nnp_bytes(recs, block_elements=500)
    validate_nnp(good)
    bad = bytearray(good)
    bad[50] ^= 1  # inside the first chunk: only a CRC check can see it
    with pytest.raises(nnpress.FormatError, match=r"w\.big"):
        validate_nnp(bytes(bad))
    with pytest.raises(nnpress.FormatError):
        validate_nnp(good[:-1])


def test_written_file_has_umask_permissions_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from nnpress.container import write_bytes_atomic

    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "x.nnp", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.nnp").st_mode) == 0o644


def test_reader_refuses_output_buffers_it_cannot_write_in_order():
    """The reader writes a tensor's bytes in order from the buffer's start: a strided or read-only
    output is an error, never a write past the view or into a temporary copy."""
    from nnpress import _core

    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    data, _ = nnp_bytes([TensorRecord("w", "float32", "weight", "raw", (3, 4), data=w)])
    r = _core.NnpReader.from_bytes(memoryview(data), 1 << 20, 1 << 20)
    base = np.zeros(24, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        r.decode_into(0, base[::2], 1)
    assert not base.any()
    levels = np.zeros((6, 4), np.int32)
    q, _ = nnp_bytes(
        [TensorRecord("q", "float32", "weight", "quantized", (3, 4), data=np.ones((3, 4), np.int32), step=0.5)]
    )
    rq = _core.NnpReader.from_bytes(memoryview(q), 1 << 20, 1 << 20)
    with pytest.raises(ValueError, match="C-contiguous"):
        rq.decode_levels_into(0, levels[::2], 1)
    with pytest.raises(TypeError, match="int32"):
        rq.decode_levels_into(0, np.zeros((3, 4), np.int64), 1)
    out = np.zeros((3, 4), np.int32)
    rq.decode_levels_into(0, out, 1)
    assert (out == 1).all()


def test_corrupt_file_errors_name_the_path(tmp_path):
    """Every public entry point that opens a .nnp file by path names it in a FormatError, also
    when the error comes from decoding a chunk (whose C++ message names only tensor and chunk);
    the class stays FormatError and the original error is the cause."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8))
    good = tmp_path / "good.nnp"
    nnpress.compress(model, good, nnpress.CodecConfig(method="nearest"))
    data = bytearray(good.read_bytes())
    data[45] ^= 0x20  # inside the first chunk (0.weight's): the header and table stay intact
    bad = tmp_path / "bad.nnp"
    bad.write_bytes(bytes(data))
    trunc = tmp_path / "trunc.nnp"
    trunc.write_bytes(bytes(data[:100]))
    f = NnpFile(bad)
    calls = {
        "read": lambda: f.read("0.weight"),
        "read_into": lambda: f.read_into("0.weight", np.empty((8, 16), np.float32)),
        "read_all": lambda: f.read_all(),
        "read_levels": lambda: f.read_levels("0.weight"),
        "iter_level_rows": lambda: list(f.iter_level_rows("0.weight")),
        "verify": lambda: f.verify(),
        "level_matrix": lambda: f.level_matrix("0.weight"),
        "lut_matrix": lambda: NnpFile(bad).lut_matrix("0.weight"),
        "decompress": lambda: nnpress.decompress(bad),
        "decompress numpy": lambda: nnpress.decompress(str(bad), as_numpy=True),
        "decompress_to_file safetensors": lambda: nnpress.decompress_to_file(bad, tmp_path / "o.safetensors"),
        "decompress_to_file folder": lambda: nnpress.decompress_to_file(bad, tmp_path / "o"),
        "decompress_to_file npz": lambda: nnpress.decompress_to_file(bad, tmp_path / "o.npz"),
        "load_state_dict": lambda: nnpress.load_state_dict(torch.nn.Sequential(torch.nn.Linear(16, 8)), bad),
        "nn.convert": lambda: nnpress.nn.convert(model, "dense", nnp=bad),
        "open truncated": lambda: NnpFile(trunc),
        "info truncated": lambda: nnpress.api.info(trunc),
    }
    for what, call in calls.items():
        with pytest.raises(nnpress.FormatError) as info:
            call()
        assert type(info.value) is nnpress.FormatError, what
        assert str(info.value).startswith(str(trunc if "truncated" in what else bad) + ": "), (what, info.value)
        assert str(info.value).count(str(bad)) <= 1, what  # named once
        if "truncated" not in what:
            assert "0.weight" in str(info.value), what  # and still the tensor
            assert isinstance(info.value.__cause__, nnpress.FormatError), what
    with pytest.raises(nnpress.FormatError) as info:  # bytes: no path to name
        NnpFile(bytes(data)).read("0.weight")
    assert str(info.value).startswith("nnp: ")


def test_corrupt_file_errors_name_the_path_when_the_message_contains_it(tmp_path, monkeypatch):
    """The path is put in front even where it already appears inside the C++ message (a file named
    "model" holding Hugging Face names such as "model.layers.0.mlp.weight")."""
    import torch

    monkeypatch.chdir(tmp_path)
    sd = {"model.layers.0.mlp.weight": torch.randn(8, 16)}
    nnpress.compress(sd, "model", nnpress.CodecConfig(method="nearest"))
    data = bytearray((tmp_path / "model").read_bytes())
    data[45] ^= 0x20  # inside the tensor's chunk
    (tmp_path / "model").write_bytes(bytes(data))
    with pytest.raises(nnpress.FormatError) as info:
        nnpress.decompress("model")
    assert str(info.value).startswith("model: "), info.value
    assert "model.layers.0.mlp.weight" in str(info.value)
