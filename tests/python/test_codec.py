"""The DeepCABAC level coder through the Python API: round trips, limits, errors, golden streams."""

from pathlib import Path

import numpy as np
import pytest

import nnpress

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
I32 = np.iinfo(np.int32)


def entropy_bits(a: np.ndarray) -> float:
    _, c = np.unique(a, return_counts=True)
    p = c / c.sum()
    return float(-(c * np.log2(p)).sum())


def two_sided_geometric(n, theta, rng):
    mag = rng.geometric(1 - theta, n) - 1
    return (mag * (rng.integers(0, 2, n) * 2 - 1)).astype(np.int32)


def roundtrip(a):
    data = nnpress.encode_levels(a)
    out = nnpress.decode_levels(data)
    assert out.dtype == np.int32
    assert out.shape == np.shape(a)
    np.testing.assert_array_equal(out, np.asarray(a))
    return data


@pytest.mark.parametrize("scale", [0.1, 0.5, 1, 3, 10, 100, 1e3, 1e4])
def test_roundtrip_laplacian_scales(scale):
    rng = np.random.default_rng(int(scale * 10))
    a = np.clip(rng.laplace(0, scale, (300, 170)).round(), I32.min, I32.max).astype(np.int32)
    roundtrip(a)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_roundtrip_sparse(density):
    rng = np.random.default_rng(1)
    a = rng.integers(-20, 21, (128, 257)).astype(np.int32)
    a[rng.random(a.shape) >= density] = 0
    roundtrip(a)


def test_roundtrip_uniform_full_int32_range():
    rng = np.random.default_rng(2)
    roundtrip(rng.integers(I32.min, I32.max, 5000, endpoint=True, dtype=np.int64).astype(np.int32))
    roundtrip(rng.integers(-1000, 1001, (50, 50)).astype(np.int32))


def test_roundtrip_extremes_and_special():
    roundtrip(np.array([I32.min, I32.max, 0, -1, 1, I32.min + 1, I32.max - 1] * 7, np.int32))
    roundtrip(np.full((4, 5), I32.min, np.int32))
    roundtrip(np.full((4, 5), I32.max, np.int32))
    roundtrip(np.zeros((1000, 3), np.int32))
    roundtrip(np.array([42], np.int32))
    roundtrip(np.array(-3, np.int32))  # rank 0


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0), (0, 5), (4, 5), (2, 3, 4), (2, 1, 3, 5), (2, 2, 1, 3, 2)])
def test_every_rank(shape):
    rng = np.random.default_rng(len(shape))
    a = rng.integers(-5, 6, shape).astype(np.int32) if shape else np.array(rng.integers(-5, 6), np.int32)
    roundtrip(a)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_integer_dtypes_accepted(dtype):
    a = np.arange(0, 100, dtype=dtype).reshape(10, 10)
    out = nnpress.decode_levels(nnpress.encode_levels(a))
    np.testing.assert_array_equal(out, a.astype(np.int64))


def test_lists_and_non_contiguous():
    assert nnpress.decode_levels(nnpress.encode_levels([1, -2, 3])).tolist() == [1, -2, 3]
    assert nnpress.decode_levels(nnpress.encode_levels([])).shape == (0,)
    a = np.arange(60, dtype=np.int32).reshape(6, 10)[:, ::3]
    roundtrip(np.ascontiguousarray(a))
    np.testing.assert_array_equal(nnpress.decode_levels(nnpress.encode_levels(a)), a)
    np.testing.assert_array_equal(nnpress.decode_levels(nnpress.encode_levels(a.T)), a.T)


def test_out_of_range_rejected_not_wrapped():
    with pytest.raises(ValueError, match="outside the codable range"):
        nnpress.encode_levels(np.array([0, 2**31], np.int64))
    with pytest.raises(ValueError, match="outside the codable range"):
        nnpress.encode_levels(np.array([-(2**31) - 1], np.int64))
    with pytest.raises(ValueError, match="outside the codable range"):
        nnpress.encode_levels(np.array([2**32 - 1], np.uint32))
    with pytest.raises(ValueError, match="outside the codable range"):
        nnpress.estimate_bits(np.array([2**40], np.int64))


def test_bad_argument_types():
    with pytest.raises(TypeError, match="integer"):
        nnpress.encode_levels(np.array([0.5, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        nnpress.encode_levels(np.array([True, False]))
    with pytest.raises(TypeError):
        nnpress.decode_levels("not bytes")
    with pytest.raises(TypeError):
        nnpress.decode_levels(12345)
    with pytest.raises(ValueError, match="dimensions"):
        nnpress.encode_levels(np.zeros((1,) * 9, np.int32))


def test_determinism():
    rng = np.random.default_rng(5)
    a = rng.laplace(0, 7, (200, 300)).round().astype(np.int32)
    assert nnpress.encode_levels(a) == nnpress.encode_levels(a.copy())
    assert nnpress.estimate_bits(a) == nnpress.estimate_bits(a.copy())


def test_format_error_is_value_error():
    assert issubclass(nnpress.FormatError, ValueError)


def test_truncated_and_garbage_raise_format_error():
    rng = np.random.default_rng(6)
    data = nnpress.encode_levels(rng.laplace(0, 2, (50, 40)).round().astype(np.int32))
    for cut in list(range(0, 40)) + list(range(40, len(data), 7)):
        with pytest.raises(nnpress.FormatError):
            nnpress.decode_levels(data[:cut])
    with pytest.raises(nnpress.FormatError):
        nnpress.decode_levels(data + b"\x00")
    for i in range(len(data)):
        for bit in (0, 3, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(nnpress.FormatError):
                nnpress.decode_levels(bytes(bad))
    for n in (0, 1, 5, 17, 100, 4096):
        with pytest.raises(nnpress.FormatError):
            nnpress.decode_levels(rng.bytes(n))
        with pytest.raises(nnpress.FormatError):
            nnpress.decode_levels(b"NPL\x01" + rng.bytes(n))


def test_payload_cut_or_extended_behind_a_valid_checksum_raises_format_error():
    # The CRC is recomputed, so only the arithmetic decoder's own end-of-stream check (which must
    # judge by the bytes it consumed, not the ones it read ahead) can catch these.
    import struct

    rng = np.random.default_rng(8)
    for levels in (
        rng.laplace(0, 2, (30, 50)).round().astype(np.int32),
        np.zeros((3, 7), np.int32),
        rng.geometric(0.6, 2000).astype(np.int32) - 1,
    ):
        data = nnpress.encode_levels(levels)
        body = data[:-4]
        start = len(body) - nnpress.level_stream_info(data)["payload_bytes"]

        def framed(b: bytes) -> bytes:
            return b + struct.pack("<I", _crc32c(b))

        assert np.array_equal(nnpress.decode_levels(framed(body)), levels)
        for cut in range(1, min(12, len(body) - start + 1)):
            with pytest.raises(nnpress.FormatError):
                nnpress.decode_levels(framed(body[:-cut]))
        for extra in (b"\x00", b"\x00" * 3, b"\x80", b"\xff" * 5, b"\x00" * 8):
            with pytest.raises(nnpress.FormatError):
                nnpress.decode_levels(framed(body + extra))
        assert start > 0


def test_hostile_header_claims_are_refused_before_allocation():
    import struct

    # A valid stream for shape (2,) re-labelled to claim 2**60 elements with a fixed checksum
    # must be refused for the claim, not by trying to allocate it.
    base = bytearray(nnpress.encode_levels(np.array([1, 2], np.int32)))
    assert base[4] == 1 and base[5] == 2
    claim = bytearray(base[:5]) + bytearray([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]) + base[6:-4]
    crc = _crc32c(bytes(claim))
    with pytest.raises(nnpress.FormatError, match=r"claims|limit|fit"):
        nnpress.decode_levels(bytes(claim) + struct.pack("<I", crc))
    with pytest.raises(nnpress.FormatError, match="limit"):
        nnpress.decode_levels(nnpress.encode_levels(np.zeros(1000, np.int32)), max_elements=999)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_stream_checksum_is_crc32c():
    data = nnpress.encode_levels(np.arange(10, dtype=np.int32))
    assert int.from_bytes(data[-4:], "little") == _crc32c(data[:-4])


@pytest.mark.parametrize("theta", [0.45, 0.6, 0.75, 0.85, 0.9, 0.93])
def test_size_close_to_entropy_iid(theta):
    """1M i.i.d. two-sided geometric levels, H0 between ~2 and ~6 bits: within 1.5% of n*H0 + 64 B."""
    rng = np.random.default_rng(int(theta * 100))
    a = two_sided_geometric(1_000_000, theta, rng)
    h0_bytes = entropy_bits(a) / 8
    assert 2.0 <= 8 * h0_bytes / a.size <= 6.5
    size = len(nnpress.encode_levels(a))
    assert size <= 1.015 * h0_bytes + 64, (size, h0_bytes)


def test_contexts_beat_zeroth_order_entropy_on_correlated_levels():
    """Neighbour contexts must pay off: runs of zeros and sign-correlated neighbours."""
    rng = np.random.default_rng(9)
    rows, cols = 400, 1000
    active = rng.random(rows) < 0.5  # whole rows pruned or alive, as after channel pruning
    on = rng.random((rows, cols)) < 0.8
    signs = np.where(rng.random((rows, 1)) < 0.5, -1, 1) * np.where(rng.random((rows, cols)) < 0.9, 1, -1)
    mags = rng.geometric(0.5, (rows, cols))
    a = (active[:, None] & on) * signs * mags
    a = a.astype(np.int32)
    size = len(nnpress.encode_levels(a))
    assert size < 0.9 * entropy_bits(a) / 8


def test_rate_estimate_within_one_percent_on_layer_like_weights():
    rng = np.random.default_rng(11)
    for rows, cols, step in [(512, 768, 0.02), (1536, 384, 0.05), (64, 3 * 3 * 32, 0.01)]:
        row_scale = rng.lognormal(0, 0.3, (rows, 1)) * 0.05
        w = rng.standard_normal((rows, cols)) * row_scale
        w[rng.random(w.shape) < 0.3] = 0  # pruned weights
        q = np.rint(w / step).astype(np.int32)
        data = nnpress.encode_levels(q)
        payload_bits = 8 * nnpress.level_stream_info(data)["payload_bytes"]
        est = nnpress.estimate_bits(q)
        assert abs(est - payload_bits) <= 0.01 * payload_bits, (est, payload_bits)


def test_stream_info():
    info = nnpress.level_stream_info(nnpress.encode_levels(np.ones((3, 4, 5), np.int32)))
    assert info["shape"] == (3, 4, 5) and info["count"] == 60


GOLDEN_NAMES = ["empty", "scalar", "extremes", "laplace_conv", "sparse_fc", "wide"]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_streams(name):
    """Frozen bitstreams (format v1): today's encoder writes them byte for byte, today's decoder
    reads them. A failure here means the format changed: that needs a new version number."""
    levels = np.load(GOLDEN / f"levels_{name}.npy")
    stream = (GOLDEN / f"levels_{name}.npl").read_bytes()
    np.testing.assert_array_equal(nnpress.decode_levels(stream), levels)
    assert nnpress.encode_levels(levels) == stream
