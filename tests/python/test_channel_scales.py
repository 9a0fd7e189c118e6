"""Per-row / per-column step scales: quantize/dequantize, the .nnp format 1.1 (storage code 3),
compress/decompress, the tuner, and hostile files."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest

import nnpress
from nnpress import tune
from nnpress.conditioning import condition_importance
from nnpress.config import CodecConfig, TensorPlan
from nnpress.container import NnpFile, TensorRecord, float32_to_bfloat16, nnp_bytes, validate_nnp

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
METHODS = ("nearest", "rdoq", "trellis")


def _ref_scale(e: int) -> float:
    """2**(e/8) computed independently of the library (60-digit decimal, then correctly rounded)."""
    getcontext().prec = 60
    return float(Decimal(2) ** (Decimal(e) / Decimal(8)))


def _ref_dequantize(levels: np.ndarray, step: float, method: str, row, col) -> np.ndarray:
    """Independent reference of docs/FORMAT.md's rule, in float64: u * ((step * r_i) * c_j)."""
    q = levels.reshape(levels.shape[0], -1) if levels.ndim >= 2 else levels.reshape(1, -1)
    rows, cols = q.shape
    nxt = [(0, 2), (7, 5), (1, 3), (6, 4), (2, 0), (5, 7), (3, 1), (4, 6)]
    out = np.empty((rows, cols), np.float64)
    for i in range(rows):
        state = 0
        rs = step * (1.0 if row is None else row[i])
        for j in range(cols):
            k = int(q[i, j])
            if method == "trellis":
                u = 2 * k - ((k > 0) - (k < 0)) * (state & 1)
                state = nxt[state][k & 1]
            else:
                u = k
            out[i, j] = u * (rs * (1.0 if col is None else col[j]))
    return out.reshape(levels.shape)


def test_scale_table_is_exact():
    e = np.arange(-128, 128)
    s = nnpress.channel_scales(e)
    assert s.dtype == np.float64
    assert all(s[k] == _ref_scale(int(x)) for k, x in enumerate(e))
    assert np.array_equal(nnpress.channel_scale_exps(s), e)
    assert list(nnpress.channel_scale_exps([1e-40, 1e40, 1.0, 2.0, 0.5])) == [-128, 127, 0, 8, -8]
    with pytest.raises(ValueError):
        nnpress.channel_scales([200])
    with pytest.raises(TypeError):
        nnpress.channel_scales([1.5])
    with pytest.raises(ValueError):
        nnpress.channel_scale_exps([0.0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("wdtype", [np.float32, np.float64])
def test_quantize_reconstruction_is_what_dequantize_gives(method, wdtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((33, 4, 5)).astype(wdtype)
    f = rng.random((33, 4, 5)) + 0.1
    rs = nnpress.channel_scales(rng.integers(-20, 20, 33))
    cs = nnpress.channel_scales(rng.integers(-20, 20, 20))
    step = 0.07
    lam = 0.1 * step**2
    q, rec = nnpress.quantize(
        w,
        step,
        lam=lam,
        importance=f,
        method=method,
        row_scale=rs,
        col_scale=cs,
        rows_per_block=8,
        threads=2,
        return_reconstruction=True,
    )
    deq = nnpress.dequantize(q, step, method, row_scale=rs, col_scale=cs)
    assert rec.view(np.uint32).tolist() == deq.view(np.uint32).tolist()
    ref = _ref_dequantize(q, step, method, rs, cs).astype(np.float32)
    assert np.array_equal(deq.view(np.uint32), ref.view(np.uint32))
    q1 = nnpress.quantize(
        w, step, lam=lam, importance=f, method=method, row_scale=rs, col_scale=cs, rows_per_block=8, threads=1
    )
    assert np.array_equal(q, q1)
    plain = nnpress.quantize(w, step, lam=lam, importance=f, method=method, rows_per_block=8)
    assert not np.array_equal(q, plain)  # the scales take effect
    # each weight's error is bounded by its own step (nearest: half of it)
    if method == "nearest":
        steps = step * np.outer(rs, cs).reshape(w.shape)
        assert np.all(np.abs(w.astype(np.float64) - deq) <= 0.5 * steps * (1 + 1e-6))


def test_quantize_argument_errors():
    w = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="row_scale"):
        nnpress.quantize(w, 0.1, row_scale=np.ones(5))
    with pytest.raises(ValueError, match="col_scale"):
        nnpress.quantize(w, 0.1, col_scale=np.ones((2, 3)))
    for bad in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError):
            nnpress.quantize(w, 0.1, col_scale=np.array([1, 1, bad, 1, 1, 1.0]))
        with pytest.raises(ValueError):
            nnpress.dequantize(np.ones((4, 6), np.int32), 0.1, row_scale=np.array([1, bad, 1, 1.0]))
    with pytest.raises(TypeError):
        nnpress.quantize(w, 0.1, row_scale=np.array(["a"] * 4))
    with pytest.raises(ValueError):  # |w / step_ij| >= 2^30 through a tiny scale
        nnpress.quantize(w, 1e-3, row_scale=np.full(4, 1e-7))


def _scaled_records(rng):
    w = rng.standard_normal((40, 24)).astype(np.float32)
    re = rng.integers(-30, 30, 40).astype(np.int8)
    ce = rng.integers(-30, 30, 24).astype(np.int8)
    q = nnpress.quantize(
        w,
        0.05,
        lam=0.02 * 0.05**2,
        method="trellis",
        row_scale=nnpress.channel_scales(re),
        col_scale=nnpress.channel_scales(ce),
        rows_per_block=10,
    )
    recs = [
        TensorRecord(
            "a.weight",
            "float32",
            "weight",
            "quantized",
            w.shape,
            data=q,
            method="trellis",
            step=0.05,
            rows_per_block=10,
            row_scale_exp=re,
            col_scale_exp=ce,
        ),
        TensorRecord(
            "b.weight",
            "float16",
            "weight",
            "quantized",
            w.shape,
            data=q,
            method="trellis",
            step=0.05,
            rows_per_block=7,
            col_scale_exp=ce,
        ),
        TensorRecord(
            "c.weight",
            "bfloat16",
            "weight",
            "quantized",
            w.shape,
            data=q,
            method="trellis",
            step=0.05,
            row_scale_exp=re,
        ),
        TensorRecord(
            "d.weight",
            "float64",
            "weight",
            "quantized",
            w.shape,
            data=q,
            method="trellis",
            step=0.05,
            row_scale_exp=re,
            col_scale_exp=ce,
        ),
        TensorRecord("bias", "float32", "bias", "raw", (3,), data=np.arange(3, dtype=np.float32)),
        TensorRecord("tied", "float32", "weight", "alias", w.shape, alias_of="a.weight"),
    ]
    return recs, q, re, ce


def test_file_round_trip_format_1_1():
    recs, q, re, ce = _scaled_records(np.random.default_rng(2))
    data, _ = nnp_bytes(recs, threads=2)
    assert data == nnp_bytes(recs, threads=1)[0]
    f = NnpFile(data)
    assert f.version == (1, 1)
    assert [e.get("channel_scales") for e in f.entries[:4]] == ["rows+cols", "cols", "rows", "rows+cols"]
    r, c = f.channel_scale_exps("tied")
    assert np.array_equal(r, re) and np.array_equal(c, ce)
    assert f.channel_scale_exps("bias") == (None, None)
    arrays = f.read_all()
    rs, cs = nnpress.channel_scales(re), nnpress.channel_scales(ce)
    want32 = nnpress.dequantize(q, 0.05, "trellis", row_scale=rs, col_scale=cs)
    assert np.array_equal(arrays["a.weight"].view(np.uint32), want32.view(np.uint32))
    assert arrays["tied"] is arrays["a.weight"]
    want16 = nnpress.dequantize(q, 0.05, "trellis", col_scale=cs).astype(np.float16)
    assert np.array_equal(arrays["b.weight"].view(np.uint16), want16.view(np.uint16))
    wantbf = float32_to_bfloat16(nnpress.dequantize(q, 0.05, "trellis", row_scale=rs))
    assert np.array_equal(arrays["c.weight"], wantbf)
    assert np.array_equal(arrays["d.weight"], _ref_dequantize(q, 0.05, "trellis", rs, cs))
    assert np.array_equal(f.read_levels("a.weight"), q)
    # without scales the same file is format 1.0 and smaller by the exponent bytes
    plain = [TensorRecord(**{**r.__dict__, "row_scale_exp": None, "col_scale_exp": None}) for r in recs]
    data0, _ = nnp_bytes(plain)
    assert NnpFile(data0).version == (1, 0)
    assert len(data) - len(data0) == 4 + 3 * 40 + 3 * 24  # 4 flag bytes, 3 row and 3 column vectors


def test_writer_rejects_bad_exponents():
    recs, _, re, _ = _scaled_records(np.random.default_rng(3))
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord(**{**recs[0].__dict__, "row_scale_exp": re[:-1]})])
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord(**{**recs[0].__dict__, "row_scale_exp": np.full(40, 300)})])
    with pytest.raises(TypeError):
        nnp_bytes([TensorRecord(**{**recs[0].__dict__, "row_scale_exp": np.full(40, 0.5)})])
    with pytest.raises(ValueError):
        nnp_bytes([TensorRecord(**{**recs[4].__dict__, "row_scale_exp": np.zeros(1, np.int8)})])
    with pytest.raises(ValueError):  # step x scales overflows
        nnp_bytes([TensorRecord(**{**recs[0].__dict__, "step": 1e308, "row_scale_exp": np.full(40, 127, np.int8)})])


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for x in data:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _with_table(data: bytes, table: bytes) -> bytes:
    """The file with its table replaced (header fields and CRCs recomputed)."""
    toff = struct.unpack_from("<Q", data, 16)[0]
    head = bytearray(data[:toff])
    struct.pack_into("<QQI", head, 16, toff, len(table), _crc32c(table))
    struct.pack_into("<I", head, 36, _crc32c(bytes(head[:36])))
    return bytes(head) + table


def test_hostile_scaled_files():
    recs, _, _, _ = _scaled_records(np.random.default_rng(4))
    data, _ = nnp_bytes(recs[:1], block_elements=10**9)
    # every truncation and every single-byte change is a FormatError (on open or on decode)
    for n in range(0, len(data), 5):
        with pytest.raises(nnpress.FormatError):
            NnpFile(data[:n]).read_all()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x20
        with pytest.raises(nnpress.FormatError):
            validate_nnp(bytes(bad))
        with pytest.raises(nnpress.FormatError):  # the reader alone (parse, then decode) refuses it too
            NnpFile(bytes(bad)).read_all()
    # structural damage with valid CRCs: flags, storage code in a 1.0 file, scales cut short
    toff = struct.unpack_from("<Q", data, 16)[0]
    table = bytearray(data[toff:])
    name = b"a.weight"
    at = table.index(name) + len(name)  # dtype, role, storage, ndim
    assert table[at + 2] == 3
    flags_at = at + 4 + 16 + 4 + 16 + 8
    assert table[flags_at] == 3
    for flags in (0, 4, 0xFF):
        t = bytearray(table)
        t[flags_at] = flags
        with pytest.raises(nnpress.FormatError, match="flags"):
            NnpFile(_with_table(data, bytes(t)))
    old = bytearray(_with_table(data, bytes(table)))
    old[10] = 0  # claim version 1.0
    struct.pack_into("<I", old, 36, _crc32c(bytes(old[:36])))
    with pytest.raises(nnpress.FormatError, match=r"1\.1"):
        NnpFile(bytes(old))
    t = bytearray(table)
    del t[flags_at + 1 : flags_at + 1 + 30]  # 30 of the 40 row exponents missing
    with pytest.raises(nnpress.FormatError):
        NnpFile(_with_table(data, bytes(t)))


def test_golden_1_1_matches_the_independent_reference():
    """The frozen 1.1 file decodes to the spec's values, computed here without the library's
    dequantize or scale table."""
    manifest = json.loads((GOLDEN / "nnp_manifest.json").read_text())
    case = next(c for c in manifest["files"] if c["file"] == "golden_v1_1_scales.nnp")
    assert case["format"] == "1.1"
    f = NnpFile(GOLDEN / case["file"])
    assert f.version == (1, 1)
    seen_scaled = 0
    for e in f.entries:
        r, c = f.channel_scale_exps(e["name"])
        seen_scaled += r is not None or c is not None
        rs = None if r is None else [_ref_scale(int(x)) for x in r]
        cs = None if c is None else [_ref_scale(int(x)) for x in c]
        ref = _ref_dequantize(f.read_levels(e["name"]), e["step"], e["method"], rs, cs)
        got = f.read(e["name"])
        if e["dtype"] == "float64":
            assert np.array_equal(got, ref)
        elif e["dtype"] == "float32":
            assert np.array_equal(got.view(np.uint32), ref.astype(np.float32).view(np.uint32))
        elif e["dtype"] == "float16":
            assert np.array_equal(got.view(np.uint16), ref.astype(np.float32).astype(np.float16).view(np.uint16))
        else:
            assert np.array_equal(got, float32_to_bfloat16(ref.astype(np.float32)))
    assert seen_scaled == 5


def _rank1_importance(rng, rows, cols, sigma=1.0):
    a = np.exp(sigma * rng.standard_normal(rows))
    b = np.exp(sigma * rng.standard_normal(cols))
    f = np.outer(a, b)
    return f / f.mean(), a, b


def test_scales_from_importance_follow_the_rank1_fit():
    rng = np.random.default_rng(5)
    f, a, b = _rank1_importance(rng, 50, 30, sigma=0.5)
    out = tune.channel_scales_from_importance(
        {"x.weight": f, "embeddings.word_embeddings.weight": f, "bias": np.ones(5)},
        floor=1e-6,
        min_gain=0.0,
        strength=0.5,
    )
    r, c = out["x.weight"]
    assert r.dtype == np.int8 and r.shape == (50,) and c.shape == (30,)
    gm = lambda v: math.exp(float(np.mean(np.log(v))))  # noqa: E731
    want_r = np.round(-4 * np.log2(a / gm(a)))
    want_c = np.round(-4 * np.log2(b / gm(b)))
    assert np.max(np.abs(r - want_r)) <= 1 and np.max(np.abs(c - want_c)) <= 1
    assert abs(float(np.mean(r))) < 1 and abs(float(np.mean(c))) < 1  # the plan step keeps its meaning
    assert out["embeddings.word_embeddings.weight"][0] is None  # rows of embedding tables stay uniform
    # the default strength 0.3 is 0.6 of the high-rate exponents
    r3, c3 = tune.channel_scales_from_importance({"x": f}, floor=1e-6, min_gain=0.0)["x"]
    assert np.max(np.abs(r3 - np.round(0.6 * want_r))) <= 1 and np.max(np.abs(c3 - np.round(0.6 * want_c))) <= 1
    assert "bias" not in out
    # vectors that cannot pay for their bytes are dropped: a flat factor, or a tiny tensor
    flat = np.outer(np.ones(50), b)
    assert tune.channel_scales_from_importance({"w": flat})["w"][0] is None
    small, _, _ = _rank1_importance(rng, 4, 3, sigma=0.5)
    assert tune.channel_scales_from_importance({"w": small})["w"] == (None, None)
    # the floor bounds how coarse an unimportant channel gets
    f2 = f.copy()
    f2[0] = 0.0
    r2, _ = tune.channel_scales_from_importance({"w": f2}, floor=0.1, min_gain=0.0, strength=0.5)["w"]
    # row 0 has no importance: its factor is floored at 0.1 of the mean, scale <= sqrt(10) / ...,
    # i.e. at most round(4 * log2(10)) = 13 exponent steps (gm <= mean); unfloored it would hit 64
    assert r2[0] == r2.max() and r2[0] <= 14


def test_scales_lower_the_weighted_distortion_at_equal_rate():
    """High-rate theory: with F_ij = a_i b_j (log-normal, sigma 1), steps ∝ 1/sqrt(F) cut the
    Fisher-weighted error at the same mean log-step by about exp(-1) ≈ 0.37. Measured here with
    the coder's own rate estimate."""
    rng = np.random.default_rng(6)
    f, _, _ = _rank1_importance(rng, 128, 96, sigma=1.0)
    w = (0.05 * rng.standard_normal((128, 96))).astype(np.float32)
    r, c = tune.channel_scales_from_importance({"w": f}, floor=1e-3, strength=0.5)["w"]
    rs, cs = nnpress.channel_scales(r), nnpress.channel_scales(c)
    step = 0.004
    out = {}
    for name, kw in (("plain", {}), ("scaled", {"row_scale": rs, "col_scale": cs})):
        q, rec = nnpress.quantize(w, step, method="nearest", return_reconstruction=True, **kw)
        out[name] = (nnpress.estimate_bits(q), float(np.sum(f * (w.astype(np.float64) - rec) ** 2)))
    bits_ratio = out["scaled"][0] / out["plain"][0]
    dist_ratio = out["scaled"][1] / out["plain"][1]
    assert 0.93 < bits_ratio < 1.07, out
    assert dist_ratio < 0.6, out


def _np_state(rng, rows=48, cols=32):
    return {
        "l1.weight": (0.1 * rng.standard_normal((rows, cols))).astype(np.float32),
        "l1.bias": np.zeros(rows, np.float32),
        "l2.weight": (0.1 * rng.standard_normal((10, rows))).astype(np.float32),
    }


def test_compress_with_channel_scales(tmp_path):
    rng = np.random.default_rng(7)
    state = _np_state(rng)
    imp = {
        "l1.weight": _rank1_importance(rng, 48, 32, sigma=2.0)[0],
        "l2.weight": _rank1_importance(rng, 10, 48, sigma=2.0)[0],
    }
    plans = {n: TensorPlan(step=0.05 * float(np.std(state[n])), method="trellis", lam=1e-6) for n in imp}
    cfg = CodecConfig(plan=plans, channel_scales=True)
    rep = nnpress.compress(state, tmp_path / "s.nnp", cfg, importance=imp)
    f = NnpFile(tmp_path / "s.nnp")
    assert f.version == (1, 1)
    out = nnpress.decompress(tmp_path / "s.nnp", as_numpy=True)
    derived = tune.channel_scales_from_importance(imp)
    assert derived["l1.weight"][0] is not None and derived["l2.weight"][1] is None  # 48 columns cannot pay
    for name in ("l1.weight", "l2.weight"):
        r, c = f.channel_scale_exps(name)
        for got, want in zip((r, c), derived[name]):
            assert (got is None and want is None) or np.array_equal(got, want)
        plan = cfg.resolve(name, "weight", "float32", state[name])
        rpb = max(1, min(state[name].shape[0], cfg.block_elements // state[name].shape[1]))
        _, rec = nnpress.quantize(
            state[name],
            plan.step,
            lam=plan.lam,
            importance=condition_importance(imp[name], state[name].shape, "weight"),  # as compress does
            method="trellis",
            row_scale=None if r is None else nnpress.channel_scales(r),
            col_scale=None if c is None else nnpress.channel_scales(c),
            rows_per_block=rpb,
            return_reconstruction=True,
        )
        assert np.array_equal(out[name].view(np.uint32), rec.view(np.uint32))  # decoder = what RD evaluated
    assert np.array_equal(out["l1.bias"], state["l1.bias"])
    assert rep.file_bytes == (tmp_path / "s.nnp").stat().st_size
    # off by default: same call without the flag writes a 1.0 file
    nnpress.compress(state, tmp_path / "p.nnp", cfg.replace(channel_scales=False), importance=imp)
    assert NnpFile(tmp_path / "p.nnp").version == (1, 0)
    # plans may carry exponents; a wrong length is a ValueError, bad values too
    plan = {"l2.weight": TensorPlan(step=0.01, method="rdoq", row_scale_exp=tuple(range(10)))}
    nnpress.compress(state, tmp_path / "o.nnp", CodecConfig(plan=plan))
    assert list(NnpFile(tmp_path / "o.nnp").channel_scale_exps("l2.weight")[0]) == list(range(10))
    with pytest.raises(ValueError, match="row scale"):
        nnpress.compress(
            state, tmp_path / "x.nnp", CodecConfig(plan={"l2.weight": TensorPlan(step=0.01, row_scale_exp=(1, 2))})
        )
    with pytest.raises(ValueError):
        TensorPlan(col_scale_exp=(0, 500))
    with pytest.raises(TypeError):
        TensorPlan(col_scale_exp=(0.5,))
    with pytest.raises(TypeError):
        CodecConfig(channel_scales=1)
    # a plan round-trips through its dict form (CLI --plan files)
    cfg2 = CodecConfig.from_dict(json.loads(json.dumps(CodecConfig(plan=plan).to_dict())))
    assert cfg2.plan["l2.weight"].row_scale_exp == tuple(range(10))


def test_tune_to_budget_with_channel_scales():
    rng = np.random.default_rng(8)
    state = _np_state(rng, rows=256, cols=256)
    imp = {"l1.weight": _rank1_importance(rng, 256, 256)[0], "l2.weight": _rank1_importance(rng, 10, 256)[0]}

    def evaluate(s):  # Fisher-weighted relative error, lower is better
        return sum(float(np.sum(imp[n] * (s[n] - state[n]) ** 2)) for n in imp) / sum(
            float(np.sum(imp[n] * state[n] ** 2)) for n in imp
        )

    kw = dict(importance=imp, method="rdoq", higher_is_better=False, iterations=6)
    res = tune.tune_to_budget(state, evaluate, 1e-3, channel_scales=True, **kw)
    base = tune.tune_to_budget(state, evaluate, 1e-3, **kw)
    assert res.met_budget and base.met_budget
    assert res.plan["l1.weight"].row_scale_exp is not None and base.plan["l1.weight"].row_scale_exp is None
    assert res.bits_per_param < base.bits_per_param  # same budget, fewer bits
    with pytest.raises(ValueError, match="importance"):
        tune.tune_to_budget(state, evaluate, 1e-3, channel_scales=True, higher_is_better=False)
