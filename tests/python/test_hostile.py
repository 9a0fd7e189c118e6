"""Hostile input and faults through the Python API (issue 7): garbage and mutated level streams,
corrupted / truncated / extended .nnp files, hostile sparse structures, interrupted writes,
malicious .pt pickles, and determinism of the written bytes.

Property tests use hypothesis with fixed seeds (derandomize=True, no example database) and bounded
example counts, so every run checks the same inputs in a few seconds. The exhaustive tests flip
every byte / cut at every length of real files: nothing may slip through as silently wrong data.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnpress
from nnpress import FormatError

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FIXED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- helpers
def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _CRC_TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def test_crc32c_helper_matches_the_format():
    assert crc32c(b"123456789") == 0xE3069283
    s = nnpress.encode_levels(np.arange(10, dtype=np.int32))
    assert struct.unpack("<I", s[-4:])[0] == crc32c(s[:-4])


def with_valid_crc(stream: bytes) -> bytes:
    """The same bytes with the trailing level-stream CRC recomputed (so the decoder proper sees
    them)."""
    if len(stream) < 4:
        return stream
    return stream[:-4] + struct.pack("<I", crc32c(stream[:-4]))


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def level_stream(dims, params=(0, 0), payload=b"\x00\x00") -> bytes:
    body = b"NPL\x01" + bytes([len(dims)]) + b"".join(varint(d) for d in dims) + bytes(params) + payload
    return body + struct.pack("<I", crc32c(body))


def decode_or_format_error(data):
    """decode_levels must return an int32 array or raise FormatError; nothing else."""
    try:
        out = nnpress.decode_levels(data)
    except FormatError as e:
        assert str(e)
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.int32
    return out


def sample_levels():
    rng = np.random.default_rng(3)
    i32 = np.iinfo(np.int32)
    return [
        rng.laplace(0, 2, (12, 20)).round().astype(np.int32),
        rng.integers(-3, 4, (4, 3, 3, 3)).astype(np.int32),
        np.array([i32.min, i32.max, 0, -1, 1], np.int32),
        np.array(7, np.int32),
        np.zeros((3, 0), np.int32),
        rng.integers(i32.min, i32.max, 50, dtype=np.int64).astype(np.int32),
    ]


STREAMS = [nnpress.encode_levels(a) for a in sample_levels()]
GOLDEN_STREAMS = [p.read_bytes() for p in sorted(GOLDEN.glob("*.npl"))]


# ---------------------------------------------------------------- level streams
@FIXED
@given(st.binary(max_size=400))
def test_decode_levels_arbitrary_bytes(data):
    decode_or_format_error(data)
    decode_or_format_error(with_valid_crc(data))
    decode_or_format_error(b"NPL\x01" + data)
    decode_or_format_error(with_valid_crc(b"NPL\x01" + data))


@FIXED
@given(
    st.sampled_from(range(len(STREAMS))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-8, 8),
)
def test_decode_levels_mutated_valid_streams(which, edits, resize):
    """Mutations of real streams, CRC repaired so they reach the header parser and CABAC decoder."""
    s = bytearray(STREAMS[which][:-4])
    for pos, val in edits:
        s[pos % len(s)] = val
    if resize < 0:
        del s[max(0, len(s) + resize) :]
    else:
        s.extend(bytes([0xA5]) * resize)
    out = decode_or_format_error(with_valid_crc(bytes(s) + b"\0\0\0\0"))
    if out is not None:
        assert out.size <= 3200 * (len(s) + 2)


@pytest.mark.parametrize("stream", STREAMS + GOLDEN_STREAMS)
def test_every_single_byte_change_truncation_and_extension_is_a_format_error(stream):
    for pos in range(len(stream)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(stream)
            bad[pos] ^= flip
            with pytest.raises(FormatError):
                nnpress.decode_levels(bytes(bad))
    for n in range(len(stream)):
        with pytest.raises(FormatError):
            nnpress.decode_levels(stream[:n])
    for extra in (b"\0", b"\xff" * 3, bytes(range(17))):
        with pytest.raises(FormatError):
            nnpress.decode_levels(stream + extra)


@pytest.mark.parametrize(
    "dims",
    [
        [2**34, 0],  # empty, but rows = 2^34: used to loop for 33 s
        [2**60, 0],  # used to hang
        [2**63, 0],  # used to raise a plain ValueError (negative numpy dimension)
        [2**40, 2**40, 0],  # numpy cannot represent the shape
        [2**30, 2**30],  # claims 2^60 levels from 2 bytes
        [10**6],  # claims more levels than 2 bytes can hold
        [2**64 - 1],
    ],
)
def test_headers_claiming_huge_shapes_fail_fast_without_allocating(dims):
    t = time.perf_counter()
    with pytest.raises(FormatError):
        nnpress.decode_levels(level_stream(dims))
    assert time.perf_counter() - t < 5  # generous; these return in microseconds


def test_level_stream_limit_is_configurable():
    a = np.zeros((100, 100), np.int32)
    s = nnpress.encode_levels(a)
    with pytest.raises(FormatError, match="limit"):
        nnpress.decode_levels(s, max_elements=9999)
    np.testing.assert_array_equal(nnpress.decode_levels(s, max_elements=10000), a)


@pytest.mark.parametrize("bad", ["NPL", 12, None, 1.5, [1, 2]])
def test_decode_levels_bad_argument_types(bad):
    with pytest.raises(TypeError):
        nnpress.decode_levels(bad)


def test_decode_levels_accepts_any_buffer():
    s = STREAMS[0]
    ref = nnpress.decode_levels(s)
    for buf in (bytearray(s), memoryview(s), np.frombuffer(s, np.uint8)):
        np.testing.assert_array_equal(nnpress.decode_levels(buf), ref)


# ---------------------------------------------------------------- .nnp files
def small_state():
    rng = np.random.default_rng(0)
    sd = {
        "fc1.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "fc1.bias": rng.standard_normal(64).astype(np.float32),
        "fc2.weight": rng.standard_normal((10, 64)).astype(np.float16),
        "norm.weight": (1 + 0.1 * rng.standard_normal(10)).astype(np.float32),
        "steps": np.array([3], np.int64),
        "scalar": np.array(0.5, np.float64),
    }
    sd["head.weight"] = sd["fc2.weight"]  # tied: stored as an alias
    return sd


@pytest.fixture(scope="module")
def nnp_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nnp") / "model.nnp"
    nnpress.compress(small_state(), path, nnpress.CodecConfig(block_elements=500, threads=1))
    data = path.read_bytes()
    ref = nnpress.decompress(path, as_numpy=True)
    return path, data, ref


def read_everything(data: bytes):
    f = nnpress.NnpFile(data)
    return f.read_all(threads=2)


def test_nnp_reference_decodes(nnp_file):
    _, data, ref = nnp_file
    out = read_everything(data)
    assert set(out) == set(ref)
    for k in ref:
        assert np.array_equal(out[k], ref[k])


def test_nnp_every_single_byte_corruption_is_a_format_error(nnp_file):
    """Flip each byte of a real file (3 patterns): all must be FormatError, none silently wrong."""
    _, data, _ = nnp_file
    slipped = []
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            try:
                read_everything(bytes(bad))
            except FormatError:
                continue
            slipped.append((pos, flip))
    assert not slipped, f"corruptions not detected at (offset, xor): {slipped[:10]}"


@FIXED
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=3))
def test_nnp_random_multi_byte_corruption_is_a_format_error(nnp_file, edits):
    _, data, _ = nnp_file
    bad = bytearray(data)
    for pos, val in edits:
        bad[pos % len(bad)] = val
    if bytes(bad) == data:
        return
    with pytest.raises(FormatError):
        read_everything(bytes(bad))


def test_nnp_every_truncation_and_appended_garbage_is_a_format_error(nnp_file, tmp_path):
    _, data, _ = nnp_file
    for n in range(len(data)):
        with pytest.raises(FormatError):
            read_everything(data[:n])
    for extra in (b"\0", b"\x89NNP", bytes(range(256)) * 3, data):
        with pytest.raises(FormatError):
            read_everything(data + extra)
    # Through the file path API too.
    p = tmp_path / "cut.nnp"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        nnpress.decompress(p, as_numpy=True)


def test_nnp_chunk_corruption_names_the_tensor(nnp_file):
    _, data, _ = nnp_file
    f = nnpress.NnpFile(data)
    offset = 40  # chunks tile the data region, in table order (docs/FORMAT.md)
    for e in f.entries:
        if e["stored_bytes"] == 0:
            continue
        bad = bytearray(data)
        bad[offset + e["stored_bytes"] // 2] ^= 0x10
        with pytest.raises(FormatError, match=e["name"].replace(".", r"\.")):
            nnpress.NnpFile(bytes(bad)).read(e["name"])
        offset += e["stored_bytes"]


def test_nnp_level_rows_of_a_corrupt_chunk_are_a_format_error(nnp_file):
    """NnpFile.iter_level_rows (chunked level decode, as nn.convert builds embeddings): every
    single-byte change inside a chunk of fc1.weight fails with FormatError naming the tensor, when
    the block holding that chunk is decoded; the blocks before it are the true levels."""
    _, data, _ = nnp_file
    f = nnpress.NnpFile(data)
    full = f.read_levels("fc1.weight")
    blocks = f._r.level_row_blocks(f.entry("fc1.weight")["index"])
    assert len(blocks) > 2  # several chunks: 64 x 48 in blocks of ~500 elements
    got = list(f.iter_level_rows("fc1.weight", max_elements=48 * 10))
    assert np.array_equal(np.concatenate([b for _, b in got]), full.reshape(64, -1))
    offset = 40 + sum(e["stored_bytes"] for e in f.entries[: f.entry("fc1.weight")["index"]])
    for pos in range(offset, offset + f.entry("fc1.weight")["stored_bytes"], 7):
        bad = bytearray(data)
        bad[pos] ^= 0x44
        rows = nnpress.NnpFile(bytes(bad)).iter_level_rows("fc1.weight", max_elements=1)
        good = []
        with pytest.raises(FormatError, match=r"fc1\.weight"):
            good.extend(rows)  # stops at the corrupt chunk's block
        for first, block in good:
            assert np.array_equal(block, full.reshape(64, -1)[first : first + block.shape[0]])
    with pytest.raises(ValueError, match="not quantized"):
        next(f.iter_level_rows("steps"))


@FIXED
@given(st.binary(max_size=600))
def test_nnp_arbitrary_bytes(data):
    for blob in (data, b"\x89NNP\r\n\x1a\n" + data):
        try:
            read_everything(blob)
        except FormatError as e:
            assert str(e)


# ---------------------------------------------------------------- sparse builders
def _sparse_call(fn, *args):
    try:
        m = fn(*args)
    except (FormatError, ValueError, TypeError, OverflowError) as e:
        assert str(e)
        return None
    d = m.to_dense()
    assert d.shape == m.shape
    _check_products(m, d)
    return m


def _check_products(m, d):
    """``m @ x`` (every ISA this machine runs, 1 and 3 columns) and, for CER/CSER, scipy's product
    of ``m.to_scipy()`` equal ``to_dense() @ x`` in float64. x holds small integers, so the
    reference is exact; rows with a NaN/inf or a magnitude near float32 overflow are left out
    (their float32 sum depends on the order of summation). The kernels multiply by
    value - values[0] and add values[0] * sum(x) (matrix.h), so the float32 rounding they may add
    scales with (|W| + |values[0]|) @ |x|."""
    rows, cols = m.shape
    rng = np.random.default_rng(rows * 1009 + cols)
    omega0 = abs(float(m.values[0])) if m.values.size else 0.0
    for x in (
        rng.integers(-3, 4, cols).astype(np.float32),
        rng.integers(-3, 4, (cols, 3)).astype(np.float32),
    ):
        d64, x64 = d.astype(np.float64), x.astype(np.float64)
        with np.errstate(all="ignore"):
            ref = d64 @ x64
            scale = (np.abs(d64) + omega0) @ np.abs(x64)
        ok = np.isfinite(scale) & (scale < 1e30)
        tol = 1e-5 * scale[ok] + 1e-37  # float32 summation; a flushed denormal
        products = [(f"isa={isa}", m.matmul(x, isa=isa)) for isa in nnpress.sparse.available_isas()]
        products.append(("@", m @ x))
        if not isinstance(m, nnpress.CodebookMatrix):
            products.append(("scipy", np.asarray(m.to_scipy() @ x, np.float32)))
        for how, y in products:
            assert y.shape == ref.shape, how
            err = np.abs(y[ok].astype(np.float64) - ref[ok])
            assert np.all(err <= tol), (how, m, d, x, y, ref)


small_u32 = st.integers(0, 40) | st.integers(0, 2**32 - 1) | st.integers(-3, -1)
index_lists = st.lists(small_u32, max_size=30)
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@FIXED
@given(
    st.tuples(st.integers(0, 8), st.integers(0, 70_000)),
    st.lists(floats, max_size=8),
    index_lists,
    index_lists,
    index_lists,
)
def test_cer_from_arrays_hostile(shape, values, col, omega_ptr, row_ptr):
    _sparse_call(nnpress.CERMatrix.from_arrays, shape, values, col, omega_ptr, row_ptr)


@FIXED
@given(
    st.tuples(st.integers(0, 8), st.integers(0, 70_000)),
    st.lists(floats, max_size=8),
    index_lists,
    index_lists,
    index_lists,
    index_lists,
)
def test_cser_from_arrays_hostile(shape, values, col, group_ptr, row_ptr, group_value):
    _sparse_call(nnpress.CSERMatrix.from_arrays, shape, values, col, group_ptr, row_ptr, group_value)


@FIXED
@given(
    st.sampled_from(["cer", "cser"]),
    st.integers(1, 6),
    st.integers(1, 9),
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 10_000), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=3,
    ),
)
def test_row_group_arrays_near_valid_mutations(fmt, rows, cols, edits):
    """Real structures with one to three entries overwritten: valid or a clean error."""
    rng = np.random.default_rng(rows * 31 + cols)
    w = rng.integers(-2, 3, (rows, cols)).astype(np.float32) * 0.5
    cls = nnpress.CERMatrix if fmt == "cer" else nnpress.CSERMatrix
    m = cls.from_dense(w)
    arrays = {
        "col": m.col.astype(np.int64),
        "gp": m.group_ptr.astype(np.int64),
        "rp": m.row_ptr.astype(np.int64),
        "gv": None if m.group_value is None else m.group_value.astype(np.int64),
    }
    names = ["col", "gp", "rp", "gv", "values"]
    values = np.array(m.values, np.float32)
    for which, pos, val in edits:
        name = names[which]
        if name == "values":
            if values.size:
                values[pos % values.size] = np.frombuffer(struct.pack("<I", val), np.float32)[0]
            continue
        a = arrays[name]
        if a is not None and a.size:
            a[pos % a.size] = val
    if fmt == "cer":
        out = _sparse_call(cls.from_arrays, w.shape, values, arrays["col"], arrays["gp"], arrays["rp"])
    else:
        out = _sparse_call(
            cls.from_arrays,
            w.shape,
            values,
            arrays["col"],
            arrays["gp"],
            arrays["rp"],
            arrays["gv"],
        )
    if out is not None:
        assert np.all(np.isfinite(out.to_dense()))


@FIXED
@given(st.integers(0, 6), st.integers(0, 6), st.lists(floats, min_size=36, max_size=36))
def test_sparse_from_dense_hostile_values(rows, cols, vals):
    w = np.array(vals[: rows * cols], np.float32).reshape(rows, cols)
    for cls in (nnpress.CERMatrix, nnpress.CSERMatrix, nnpress.CodebookMatrix):
        m = _sparse_call(cls.from_dense, w)
        if m is not None:
            assert np.array_equal(m.to_dense(), w + 0.0)  # -0.0 becomes +0.0


@FIXED
@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=24),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_sparse_from_levels_hostile(levels, step):
    lv = np.array(levels, np.int32).reshape(1, -1)
    for cls in (nnpress.CERMatrix, nnpress.CSERMatrix, nnpress.CodebookMatrix):
        _sparse_call(cls.from_levels, lv, step)


# ---------------------------------------------------------------- interrupted writes
CHILD = textwrap.dedent(r"""
    import os, sys, time
    import numpy as np
    import nnpress
    mode, dest, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(5)
    state = {"big.weight": rng.standard_normal((n, 256)).astype(np.float32),
             "big.bias": rng.standard_normal(n).astype(np.float32)}
    if mode == "mid-write":          # stop for good after writing half of the bytes
        real_fdopen = os.fdopen
        class Half:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *a): return self.f.__exit__(*a)
            def __getattr__(self, k): return getattr(self.f, k)
            def write(self, data):
                self.f.write(data[: len(data) // 2]); self.f.flush()
                print("READY", flush=True); time.sleep(120)
        os.fdopen = lambda *a, **k: Half(real_fdopen(*a, **k))
    elif mode == "before-rename":    # everything written and synced, not yet renamed
        real_fsync = os.fsync
        def fsync(fd):
            real_fsync(fd); print("READY", flush=True); time.sleep(120)
        os.fsync = fsync
    else:
        print("READY", flush=True)
    nnpress.compress(state, dest, nnpress.CodecConfig(threads=1))
    print("DONE", flush=True)
""")


def _run_and_kill(tmp_path, mode, dest, rows=64, delay=0.0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.Popen(
        [sys.executable, str(script), mode, str(dest), str(rows)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(tmp_path),
    )
    try:
        line = p.stdout.readline()
        assert line.strip() == "READY", (line, p.stderr.read() if p.poll() is not None else "")
        if delay:
            time.sleep(delay)
    finally:
        p.kill()
        p.wait(timeout=60)
        p.stdout.close()
        p.stderr.close()


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_killed_compression_leaves_previous_file_byte_identical(tmp_path, mode):
    dest = tmp_path / "model.nnp"
    nnpress.compress(small_state(), dest, nnpress.CodecConfig(threads=1))
    before = dest.read_bytes()
    _run_and_kill(tmp_path, mode, dest)
    assert dest.read_bytes() == before
    # The interrupted write really happened: its temp file is there (never at dest).
    leftovers = [p for p in tmp_path.iterdir() if p.name not in ("model.nnp", "child.py")]
    assert leftovers
    nnpress.decompress(dest, as_numpy=True)


def test_killed_first_compression_leaves_no_file(tmp_path):
    dest = tmp_path / "new.nnp"
    _run_and_kill(tmp_path, "mid-write", dest)
    assert not dest.exists()


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_compression_killed_at_a_random_moment_leaves_old_or_complete_file(tmp_path, delay):
    """No hooks: kill a larger compression after a delay. The destination is either untouched or the
    complete new file (if the child was faster), never anything in between."""
    dest = tmp_path / "model.nnp"
    nnpress.compress(small_state(), dest, nnpress.CodecConfig(threads=1))
    before = dest.read_bytes()
    _run_and_kill(tmp_path, "timed", dest, rows=2048, delay=delay)
    after = dest.read_bytes()
    if after != before:
        out = nnpress.decompress(dest, as_numpy=True)
        assert set(out) == {"big.weight", "big.bias"}


# ---------------------------------------------------------------- malicious .pt
class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pt_file_with_code_is_refused_without_running_it(tmp_path):
    import torch  # an extra, installed by scripts/test.sh

    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(3), "x": _Evil()}, path)
    with pytest.raises((FormatError, ValueError)):
        nnpress.compress(path, tmp_path / "out.nnp")
    assert not marker.exists()
    assert not (tmp_path / "out.nnp").exists()


# ---------------------------------------------------------------- determinism
def test_same_input_and_config_give_identical_bytes_for_any_thread_count(tmp_path):
    state = small_state()
    rng = np.random.default_rng(9)
    state["big.weight"] = rng.standard_normal((700, 300)).astype(np.float32)  # several row blocks
    blobs = []
    for threads in (1, 2, 3, 1):
        for method in ("rdoq",):
            p = tmp_path / f"t{threads}_{len(blobs)}.nnp"
            nnpress.compress(state, p, nnpress.CodecConfig(method=method, threads=threads, block_elements=20_000))
            blobs.append(p.read_bytes())
    assert all(b == blobs[0] for b in blobs)
    for method in ("nearest", "trellis"):
        a, b = tmp_path / "a.nnp", tmp_path / "b.nnp"
        nnpress.compress(state, a, nnpress.CodecConfig(method=method, threads=1, block_elements=20_000))
        nnpress.compress(state, b, nnpress.CodecConfig(method=method, threads=2, block_elements=20_000))
        assert a.read_bytes() == b.read_bytes()


def test_identical_bytes_across_processes(tmp_path):
    code = textwrap.dedent(r"""
        import sys, numpy as np, nnpress
        rng = np.random.default_rng(1)
        w = {f"layer{i}.weight": rng.standard_normal((40, 30)).astype(np.float32) for i in range(6)}
        b = {f"layer{i}.bias": rng.standard_normal(40).astype(np.float32) for i in range(6)}
        state = {**w, **b}
        nnpress.compress(state, sys.argv[1], nnpress.CodecConfig(threads=int(sys.argv[2])))
    """)
    outs = []
    for seed, threads in (("0", 1), ("123", 2)):
        p = tmp_path / f"{seed}.nnp"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run(
            [sys.executable, "-c", code, str(p), str(threads)],
            check=True,
            env=env,
            cwd=str(tmp_path),
            timeout=300,
        )
        outs.append(p.read_bytes())
    assert outs[0] == outs[1]


def test_nnp_limits_are_checked_and_configurable(nnp_file):
    _, data, ref = nnp_file
    biggest = max(v.size for v in ref.values())
    with pytest.raises(FormatError, match=r"limit|exceed"):
        nnpress.NnpFile(data, max_elements=biggest - 1)
    total = sum(e["count"] for e in nnpress.NnpFile(data).entries if e["storage"] != "alias")
    with pytest.raises(FormatError, match=r"limit|exceed|more than"):
        nnpress.NnpFile(data, max_total_elements=total - 1)
    out = nnpress.NnpFile(data, max_elements=biggest, max_total_elements=total).read_all()
    assert set(out) == set(ref)
