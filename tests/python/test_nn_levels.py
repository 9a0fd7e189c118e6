"""nnpress.nn.convert(model, nnp=path) / nnpress.nn.from_nnp: models running on a .nnp file's levels
give the decompressed float model's outputs, in every format, without a float32 copy of the
weights; a file that does not match the model is refused before anything is decoded."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nnpress  # noqa: E402
import nnpress.nn as nnn  # noqa: E402
from nnpress import nn_levels  # noqa: E402
from nnpress.container import TensorRecord, write_nnp  # noqa: E402

# every exact format that holds any number of distinct values (codebook: <= 16, tested on its own)
EXACT_FORMATS = ["dense", "cser", "cer"] + (["levels"] if nn_levels.has_level_kernels() else [])


class Small(nn.Module):
    """Embedding -> Linear -> ReLU -> Linear, and a Conv2d branch."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 24)
        self.fc1 = nn.Linear(24, 40)
        self.fc2 = nn.Linear(40, 16, bias=False)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, ids, img):
        h = self.fc2(torch.relu(self.fc1(self.emb(ids))))
        return h, self.conv(img)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    model = Small().eval()
    path = str(tmp_path_factory.mktemp("nnlev") / "small.nnp")
    nnpress.compress(model, path)
    decoded = Small().eval()
    decoded.load_state_dict(nnpress.decompress(path))
    ids = torch.randint(0, 50, (3, 7))
    img = torch.randn(2, 3, 6, 6)
    return model, path, decoded, (ids, img)


def _run(m, inputs):
    with torch.no_grad():
        return m(*inputs)


LEVELS16 = ["levels16"] if nn_levels.has_level_kernels() else []


@pytest.mark.parametrize("fmt", [*EXACT_FORMATS, "int8", "int8x2", *LEVELS16, "auto"])
def test_every_format_gives_the_decompressed_outputs(small, fmt):
    model, path, decoded, inputs = small
    act = 3  # 22-bit activations for the int8 formats: float-rounding-level differences
    fast = nnn.convert(model, fmt, nnp=path, batch=21, act_digits=act)
    ref_h, ref_c = _run(decoded, inputs)
    h, c = _run(fast, inputs)
    if fmt in ("levels16", "auto"):  # int16 activations: relative error ~2^-16 per layer
        assert float((h - ref_h).abs().max()) <= 1e-3 * float(ref_h.abs().max())
    else:
        torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-6)
    if fmt in ("dense", "auto"):  # torch's conv on bit-identical weights (auto without example_inputs: "decoded")
        torch.testing.assert_close(c, ref_c, rtol=0, atol=0)
    elif fmt in ("levels16", "int8", "int8x2"):  # im2col, activations rounded per output pixel
        assert float((c - ref_c).abs().max()) <= 1e-4 * float(ref_c.abs().max())
    else:  # im2col on the format's kernels: float32 rounding and summation order (test_nn_conv.py)
        torch.testing.assert_close(c, ref_c, rtol=1e-5, atol=1e-6)
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    assert set(plan) == {"emb", "fc1", "fc2", "conv"}
    assert plan["conv"]["format"] == ("decoded" if fmt == "auto" else fmt)
    assert plan["emb"]["format"] == "levels" and isinstance(fast.emb, nnn.LevelEmbedding)
    if fmt != "auto":
        assert plan["fc1"]["format"] == plan["fc2"]["format"] == fmt
    else:  # the choice was timed: every candidate has a time and the pick is one of them
        for name in ("fc1", "fc2"):
            assert plan[name]["format"] in plan[name]["times_us"]
    # the original model is untouched (convert works on a copy unless inplace=True)
    assert isinstance(model.fc1, nn.Linear) and isinstance(model.emb, nn.Embedding)


def test_int8_activation_digits_bound_the_error(small):
    model, path, decoded, inputs = small
    ref = _run(decoded, inputs)[0]
    errs = {}
    for digits in (1, 2, 3):
        out = _run(nnn.convert(model, "int8", nnp=path, act_digits=digits), inputs)[0]
        errs[digits] = float((out - ref).abs().max() / ref.abs().max())
    assert errs[3] < 1e-5 < errs[1] and errs[2] < errs[1]
    assert errs[2] < 1e-3


def test_meta_model_holds_no_float_copy_and_plan_matches(small):
    model, path, decoded, inputs = small
    with nnn.params_on_meta():
        light = Small()
    assert all(p.is_meta for p in light.parameters())
    fast = nnn.convert(light, {"fc1": "int8", "fc2": "dense"}, nnp=path, inplace=True, act_digits=3)
    assert fast is light and not fast.training
    assert not any(t.is_meta for t in list(fast.parameters()) + list(fast.buffers()))
    assert isinstance(fast.fc1, nnn.LevelLinear) and not hasattr(fast.fc1, "weight")
    assert isinstance(fast.fc2, nn.Linear) and fast.fc2.format == "dense"
    torch.testing.assert_close(_run(fast, inputs)[0], _run(decoded, inputs)[0], rtol=1e-5, atol=1e-6)
    held = nn_levels.held_nbytes(fast)
    floats = sum(p.numel() * 4 for p in model.parameters())
    assert held < floats
    rows = nnn.plan(model, {"fc1": "int8", "fc2": "dense"}, nnp=path, act_digits=3)
    assert [(r["name"], r["format"]) for r in rows] == [(p["name"], p["format"]) for p in nnn.levels_plan(fast)]


def test_mismatched_file_is_refused_before_decoding(small, tmp_path):
    model, path, _, _ = small

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(24, 40)

    other = str(tmp_path / "other.nnp")
    nnpress.compress(Other(), other)
    with pytest.raises(nnn.NnpMismatchError, match=r"lacks 6 of the model's tensors.*emb\.weight"):
        nnn.convert(model, nnp=other)
    # shapes
    wrong = Small()
    wrong.fc1 = nn.Linear(24, 41)
    wrong.fc2 = nn.Linear(41, 16, bias=False)
    with pytest.raises(nnn.NnpMismatchError, match=r"shapes differ: fc1\.weight: file \(40, 24\), model \(41, 24\)"):
        nnn.convert(wrong, nnp=path)
    # a file holding more than the model: refused unless strict=False
    fewer = Small()
    fewer.conv = nn.Identity()
    with pytest.raises(nnn.NnpMismatchError, match=r"holds 2 tensors the model lacks.*conv\.weight"):
        nnn.convert(fewer, nnp=path)
    assert isinstance(nnn.convert(fewer, nnp=path, strict=False).fc1, (nnn.LevelLinear, nn.Linear))
    assert issubclass(nnn.NnpMismatchError, RuntimeError)


def test_file_may_hold_buffers_the_model_builds_itself(small, tmp_path):
    """A checkpoint holding a buffer the model registers as non-persistent (transformers' BERT
    ``embeddings.position_ids``, in all-MiniLM-L6-v2's file) loads with strict=True; the model keeps
    its own values. A tensor the model has nowhere is still refused."""
    model, _, decoded, inputs = small

    class WithIds(Small):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("position_ids", torch.arange(7)[None], persistent=False)

    with_ids = WithIds().eval()
    with_ids.load_state_dict(model.state_dict())
    sd = {**model.state_dict(), "position_ids": torch.arange(7)[None] * 0}
    path = str(tmp_path / "ids.nnp")
    nnpress.compress(sd, path)
    fast = nnn.convert(with_ids, nnp=path)
    assert torch.equal(fast.position_ids, torch.arange(7)[None])
    torch.testing.assert_close(_run(fast, inputs)[0], _run(decoded, inputs)[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(nnn.NnpMismatchError, match=r"holds 1 tensors the model lacks.*position_ids"):
        nnn.convert(model, nnp=path)


def test_bad_arguments_raise_typed_errors(small):
    model, path, _, _ = small
    with pytest.raises(ValueError, match="format for 'model' must be one of"):
        nnn.convert(model, "fast", nnp=path)
    with pytest.raises(ValueError, match="not Linear or convolution layers of the model: \\['emb'\\]"):
        nnn.convert(model, {"emb": "int8"}, nnp=path)
    with pytest.raises(ValueError, match="rounds activations: give act_digits"):
        nnn.convert(model, "int8", nnp=path, act_digits=None)
    if nn_levels.has_level_kernels():
        with pytest.raises(ValueError, match="rounds activations to int16: give act_digits"):
            nnn.convert(model, "levels16", nnp=path, act_digits=None)
    with pytest.raises(ValueError, match="act_digits must be"):
        nnn.convert(model, nnp=path, act_digits=4)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        nnn.convert(model, nnp=path, batch=0)
    with pytest.raises(ValueError, match="candidates"):
        nnn.convert(model, nnp=path, candidates=("sparse",))
    with pytest.raises(TypeError, match="need nnp="):
        nnn.convert(model, act_digits=2)
    with pytest.raises(TypeError):
        nnn.convert("model.pt", nnp=path)


@pytest.mark.parametrize("fmt", ["int8", "levels"] if nn_levels.has_level_kernels() else ["int8"])
def test_linear_takes_any_input_layout(small, fmt):
    model, path, decoded, _ = small
    fast = nnn.convert(model, fmt, nnp=path, act_digits=3)
    x = torch.randn(2, 24, 5).transpose(1, 2)  # (2, 5, 24), not contiguous
    with torch.no_grad():
        ref = decoded.fc1(x)
        for inp in (x, x.contiguous(), x.double()):
            out = fast.fc1(inp)
            assert out.shape == (2, 5, 40) and out.dtype == torch.float32
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.fc1(input=x), ref, rtol=1e-5, atol=1e-5)  # torch's keyword
    with pytest.raises(ValueError, match="input has 23 features, expected 24"):
        fast.fc1(torch.randn(3, 23))


@pytest.mark.skipif(not nn_levels.has_level_kernels(), reason="no LevelMatrix kernels in this build")
@pytest.mark.parametrize("fmt", ["levels", "levels16"])
def test_level_linear_adds_its_bias_once(small, fmt):
    """The bias goes into the product (one float add to each result): the same bits as the product
    without it plus the bias, and a layer without a bias gives the plain product."""
    model, path, _, _ = small
    fast = nnn.convert(model, fmt, nnp=path, act_digits=3)
    act = "float32" if fmt == "levels" else "int16"
    x = torch.randn(3, 7, 24)
    with torch.no_grad():
        plain = torch.from_numpy(fast.fc1.backend.m.matmul(x.numpy(), activations=act))
        assert fast.fc1.bias is not None and torch.equal(fast.fc1(x), plain + fast.fc1.bias)
        h = torch.randn(4, 40)
        assert fast.fc2.bias is None
        assert torch.equal(fast.fc2(h), torch.from_numpy(fast.fc2.backend.m.matmul(h.numpy(), activations=act)))


def test_modules_with_their_own_forward_stay_torchs(tmp_path):
    """Linear / Embedding subclasses that override forward (an activation, a scale) and a
    MultiheadAttention's out_proj (the attention reads its weight) are not replaced: the outputs are
    the decompressed model's; plain layers beside them are converted."""

    class LinearAct(nn.Linear):
        def forward(self, x):
            return torch.tanh(super().forward(x))

    class ScaledEmbedding(nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 3.0

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = ScaledEmbedding(20, 8)
            self.act = LinearAct(8, 8)
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 4)

        def forward(self, ids):
            h = self.act(self.emb(ids))
            return self.fc(self.att(h, h, h)[0])

    torch.manual_seed(0)
    model = Mixed().eval()
    path = str(tmp_path / "mixed.nnp")
    nnpress.compress(model, path)
    decoded = Mixed().eval()
    decoded.load_state_dict(nnpress.decompress(path))
    ids = torch.randint(0, 20, (2, 5))
    for fmt in ("dense", "cser"):
        fast = nnn.convert(model, fmt, nnp=path)
        assert type(fast.act) is LinearAct and type(fast.emb) is ScaledEmbedding
        assert type(fast.att.out_proj) is type(model.att.out_proj)
        assert [p["name"] for p in nnn.levels_plan(fast)] == ["fc"]
        with torch.no_grad():
            torch.testing.assert_close(fast(ids), decoded(ids), rtol=1e-5, atol=1e-6)


def test_int8_formats_inside_and_outside_inference_mode(small):
    model, path, decoded, inputs = small
    fast = nnn.convert(model, "int8", nnp=path, act_digits=3)
    with torch.no_grad():
        ref = decoded(*inputs)[0]
    for _ in range(2):  # the shared buffers are made in one mode and used in the other
        with torch.inference_mode():
            torch.testing.assert_close(fast(*inputs)[0], ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast(*inputs)[0], ref, rtol=1e-5, atol=1e-6)


def test_candidates_limit_the_auto_choice(small):
    model, path, _, _ = small
    fast = nnn.convert(model, nnp=path, candidates=("int8x2",), act_digits=3)
    assert {p["format"] for p in nnn.levels_plan(fast) if p["kind"] == "linear"} == {"int8x2"}


# ---- levels beyond int8, trellis and channel scales, written directly ----------------------------


def _records(rng, with_scales: bool):
    """A Linear (30 x 20) and an Embedding (64 x 16) whose levels reach beyond int8."""
    recs = []
    w = rng.integers(-40, 41, size=(30, 20)).astype(np.int32)
    w[rng.random(w.shape) < 0.2] *= 9  # entries far beyond int8 (u up to ~720)
    e = rng.integers(-20, 21, size=(64, 16)).astype(np.int32)
    e[rng.random(e.shape) < 0.05] *= 12
    for name, lv, method in (("fc.weight", w, "trellis"), ("emb.weight", e, "nearest")):
        r = TensorRecord(name, "float32", "weight", "quantized", lv.shape, data=lv, method=method, step=0.003)
        if with_scales:
            r.row_scale_exp = rng.integers(-6, 7, size=lv.shape[0])
            r.col_scale_exp = rng.integers(-6, 7, size=lv.shape[1])
        recs.append(r)
    recs.append(
        TensorRecord("fc.bias", "float32", "bias", "raw", (30,), data=rng.standard_normal(30).astype(np.float32))
    )
    return recs


class FcEmb(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(64, 16)
        self.fc = nn.Linear(20, 30)


@pytest.mark.parametrize("with_scales", [False, True])
@pytest.mark.parametrize("fmt", [*EXACT_FORMATS, "int8", "int8x2", *LEVELS16])
def test_levels_beyond_int8_and_channel_scales(tmp_path, fmt, with_scales):
    rng = np.random.default_rng(3)
    path = str(tmp_path / "m.nnp")
    write_nnp(path, _records(rng, with_scales))
    f = nnpress.NnpFile(path)
    w = torch.from_numpy(f.read("fc.weight"))
    table = torch.from_numpy(f.read("emb.weight"))
    model = FcEmb()
    fast = nnn.convert(model, fmt, nnp=path, act_digits=3)
    x = torch.randn(5, 20)
    with torch.no_grad():
        ref = x @ w.T + torch.from_numpy(f.read("fc.bias"))
        tol = 1e-3 if fmt == "levels16" else 1e-5
        torch.testing.assert_close(fast.fc(x), ref, rtol=tol, atol=tol)
        ids = torch.arange(64).reshape(8, 8)
        torch.testing.assert_close(fast.emb(ids), table[ids], rtol=0, atol=0)  # a gather: exact
    info = nnn.levels_plan(fast)[1]
    if fmt == "int8":
        assert info["outliers"] > 0  # the remainder list is in use


@pytest.mark.parametrize(("peak", "bits"), [(31, 6), (100, 8), (3000, 16)])
def test_embedding_storage_follows_the_level_range(peak, bits):
    rng = np.random.default_rng(0)
    u = rng.integers(-peak, peak + 1, size=(40, 12)).astype(np.int32)
    u[0, 0] = peak
    lt = nn_levels.LevelTensor("e", u.shape, u, np.full(40, 0.5), None, None, 0.5)
    m = nnn.LevelEmbedding(lt, nn.Embedding(40, 12))
    assert m.bits == bits
    ids = torch.tensor([[0, 5, 39, 5]])
    torch.testing.assert_close(m(ids), torch.from_numpy(u[ids.numpy()] * 0.5).float(), rtol=0, atol=0)
    assert m.weight_nbytes < u.size * bits / 8 + 40 * 8 + 1000


def _embedding_table(kind: str, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(len(kind))
    u = rng.integers(-31, 32, size=(rows, cols)).astype(np.int32)
    p = rng.random((rows, cols))
    sign = np.where(rng.random((rows, cols)) < 0.5, -1, 1)
    if kind == "6 + list":
        u[p < 0.02] = 127 * sign[p < 0.02]
    elif kind == "8 late":  # beyond 6-bit only in the last rows: stored 6-bit, then int8
        late = (p < 0.8) & (np.arange(rows)[:, None] >= rows - 12)
        u[late] = rng.integers(32, 128, size=int(late.sum())) * sign[late]
        u[0, 1] = -200
    elif kind == "16 early + beyond int16":
        early = (p < 0.9) & (np.arange(rows)[:, None] < 24)
        u[early] = rng.integers(128, 32768, size=int(early.sum())) * sign[early]
        u[p > 0.995] = 40000 * sign[p > 0.995]
    elif kind == "6 after 16":  # widened twice, then back to 6-bit: few entries between 32 and 127
        u[p < 0.08] = rng.integers(128, 32768, size=int((p < 0.08).sum())) * sign[p < 0.08]
    return u


@pytest.mark.parametrize("kind", ["6 + list", "8 late", "16 early + beyond int16", "6 after 16", "odd cols"])
def test_embedding_built_in_one_pass_over_row_blocks(kind, monkeypatch):
    """Built a few rows at a time (each block seen once), the table takes the storage the counts over
    the whole table choose, with the entries beyond it listed row by row in column order, and gathers
    exactly, however often it changed storage on the way."""
    rows, cols = 96, 13 if kind == "odd cols" else 12
    u = _embedding_table("8 late" if kind == "odd cols" else kind, rows, cols)
    monkeypatch.setattr(nn_levels, "_ROW_BLOCK_ELEMENTS", 4 * cols)
    lt = nn_levels.LevelTensor("e", u.shape, u, np.full(rows, 0.5), None, None, 0.5)
    m = nnn.LevelEmbedding(lt, nn.Embedding(rows, cols))
    a = np.abs(u)
    cost = {16: u.size * 2 + 12 * int((a > 32767).sum()), 8: u.size + 12 * int((a > 127).sum())}
    if cols % 4 == 0:
        cost[6] = u.size * 3 // 4 + 12 * int((a > 31).sum())
    want = min(cost, key=lambda b: (cost[b], b))
    assert m.bits == want == {"6 + list": 6, "8 late": 8, "odd cols": 8, "6 after 16": 6}.get(kind, 16)
    lim = {6: 31, 8: 127, 16: 32767}[want]
    r, c = np.nonzero(a > lim)
    assert len(r) > 0
    np.testing.assert_array_equal(m.rest_row.numpy(), r)
    np.testing.assert_array_equal(m.rest_col.numpy(), c)
    np.testing.assert_array_equal(m.rest_val.numpy(), (u[r, c] - np.clip(u[r, c], -lim, lim)).astype(np.float32))
    ids = torch.arange(rows).reshape(8, -1)
    torch.testing.assert_close(m(ids), torch.from_numpy(u * 0.5).float()[ids], rtol=0, atol=0)


def test_codebook_for_few_values_and_its_limit(tmp_path):
    rng = np.random.default_rng(5)
    path = str(tmp_path / "few.nnp")
    lv = rng.integers(-7, 9, size=(30, 20)).astype(np.int32)  # 16 values
    recs = [TensorRecord("fc.weight", "float32", "weight", "quantized", lv.shape, data=lv, step=0.01)]
    recs.append(TensorRecord("fc.bias", "float32", "bias", "raw", (30,), data=np.zeros(30, np.float32)))
    recs.append(TensorRecord("emb.weight", "float32", "weight", "raw", (64, 16), data=np.ones((64, 16), np.float32)))
    write_nnp(path, recs)
    fast = nnn.convert(FcEmb(), "codebook", nnp=path)
    x = torch.randn(4, 20)
    w = torch.from_numpy(nnpress.NnpFile(path).read("fc.weight"))
    torch.testing.assert_close(fast.fc(x), x @ w.T, rtol=1e-5, atol=1e-5)
    assert isinstance(fast.emb, nn.Embedding)  # a raw table has no levels: left to torch
    with pytest.raises(ValueError, match="embedding 'emb': its weight is stored raw"):
        nnn.convert(FcEmb(), nnp=path, embeddings="levels")
    write_nnp(path, _records(rng, False))
    with pytest.raises(ValueError, match="layer 'fc': codebook layout needs at most 16"):
        nnn.convert(FcEmb(), "codebook", nnp=path)


# ---- a small BERT, end to end ---------------------------------------------------------------------


def test_small_bert_from_pretrained_on_levels(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=120, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    config.save_pretrained(tmp_path)
    nnpress.compress(model, str(tmp_path / "model.nnp"))
    decoded = nnpress.from_pretrained(tmp_path)
    fast = nnn.from_pretrained(tmp_path, act_digits=3, batch=9)
    assert not any(p.is_meta for p in fast.parameters())
    kinds = {type(m).__name__ for m in fast.modules()}
    assert "LevelEmbedding" in kinds
    ids = torch.randint(0, 120, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = decoded(input_ids=ids, attention_mask=mask).last_hidden_state
        out = fast(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert len([p for p in nnn.levels_plan(fast) if p["kind"] == "linear"]) == 2 * 6 + 1


def test_auto_times_int8_only_where_the_integer_gemm_pays(tmp_path, monkeypatch):
    """Where torch's int8 GEMM is slower than its float GEMM "auto" does not time the int8 formats
    (unless they are named in candidates=); where it is faster, it does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32))
    path = str(tmp_path / "m.nnp")
    nnpress.compress(model, path)
    threads = torch.get_num_threads()

    def no_int_gemm(a, b):
        raise RuntimeError("no integer GEMM in this build")

    monkeypatch.setattr(nn_levels, "_INT_MM_PAYS", [])
    monkeypatch.setattr(torch, "_int_mm", no_int_gemm)
    assert nn_levels.int_mm_pays() is False  # a build without it: the probe says no, raises nothing
    assert torch.get_num_threads() == threads  # the probe's one thread is given back
    monkeypatch.undo()
    for pays in (False, True):
        monkeypatch.setattr(nn_levels, "_INT_MM_PAYS", [pays])
        times = nnn.levels_plan(nnn.convert(model, nnp=path, act_digits=2))[0]["times_us"]
        assert ("int8" in times and "int8x2" in times) == pays
        assert "levels16" in times or not nnn.has_level_kernels()
    monkeypatch.setattr(nn_levels, "_INT_MM_PAYS", [False])
    times = nnn.levels_plan(nnn.convert(model, nnp=path, act_digits=2, candidates=("dense", "int8")))[0]["times_us"]
    assert set(times) == {"dense", "int8"}


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 8)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2)).transpose(1, 2)
        return self.fc(self.norm(h))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_converted_model_moved_to_another_dtype(dtype, tmp_path):
    """model.double() / .to(bfloat16) after convert: the converted layers keep computing in float32
    on their own weights and float32 bias (a float64 or bfloat16 copy would not reach the kernels),
    and hand the torch layers around them outputs in the model's new dtype."""
    torch.manual_seed(0)
    model = _Mixed().eval()
    path = str(tmp_path / "m.nnp")
    nnpress.compress(model, path)
    fast = nnn.convert(_Mixed().eval(), nnp=path, format="levels", embeddings="levels")
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        want = fast(ids)
        fast.to(dtype)
        got = fast(ids)
    assert got.dtype == dtype and fast.fc.bias.dtype == torch.float32
    assert fast.fc.out_dtype == dtype and fast.emb(ids).dtype == dtype and fast.norm.weight.dtype == dtype
    tol = 1e-5 if dtype == torch.float64 else 5e-2
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    with torch.no_grad():
        fast.float()
        torch.testing.assert_close(fast(ids), want, rtol=0, atol=0)  # back to float32: the same bits


def test_signature_tells_layers_lut_holds_from_those_it_cannot():
    """Two layers alike in shape, level widths and density, one with at most 16 levels per row (lut
    holds it) and one with 17: their signatures differ, so the second is not given the first's timing."""
    rng = np.random.default_rng(3)
    few = rng.integers(-8, 8, size=(24, 40)).astype(np.int32)  # 16 values
    more = few.copy()
    more[:, 0] = 20  # a 17th value in every row
    sigs = []
    for u in (few, more):
        lt = nn_levels.LevelTensor("w", u.shape, u, np.full(24, 0.1), None, None, 0.1)
        sigs.append(nn_levels._signature(lt, 4, ()))
    assert nn_levels._lut_holds(few) and not nn_levels._lut_holds(more)
    assert sigs[0][:-1] == sigs[1][:-1] and sigs[0] != sigs[1]
    first_row_only = few.copy()
    first_row_only[5, :20] = np.arange(20)  # the first row passes the quick test, row 5 does not
    assert not nn_levels._lut_holds(first_row_only)


class _Wide(nn.Module):
    """Linear and Conv2d layers large enough that the level formats hold a fraction of float32."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(256, 192)
        self.fc2 = nn.Linear(192, 64)

    def forward(self, x, img):
        return self.fc2(torch.relu(self.fc1(x))), self.conv(img)


def test_max_bytes_ratio_caps_the_auto_choice(tmp_path, monkeypatch):
    """With max_bytes_ratio, "auto" keeps only formats holding at most that fraction of a layer's
    float32 bytes, even where the timings favour a larger one (here: a race that always picks the
    largest, as a load burst can); where none fits, the smallest is kept. Forced formats are not capped."""
    torch.manual_seed(0)
    model = _Wide().eval()
    path = str(tmp_path / "wide.nnp")
    nnpress.compress(model, path)
    decoded = _Wide().eval()
    decoded.load_state_dict(nnpress.decompress(path))
    inputs = (torch.randn(4, 256), torch.randn(1, 16, 8, 8))
    real_race = nn_levels._race

    def largest_wins(fns, nbytes, x, **kw):
        _, times = real_race(fns, nbytes, x, **kw)
        return max(nbytes, key=nbytes.get), times

    monkeypatch.setattr(nn_levels, "_race", largest_wins)

    def layers(**kw):
        plan = nnn.levels_plan(nnn.convert(model, nnp=path, example_inputs=inputs, **kw))
        return {p["name"]: p for p in plan if p["kind"] in ("linear", "conv")}

    uncapped = layers()
    assert len(uncapped) == 3 and all(p["bytes"] > 0.6 * p["dense_bytes"] for p in uncapped.values()), uncapped
    fast = nnn.convert(model, nnp=path, example_inputs=inputs, max_bytes_ratio=0.6)
    capped = {p["name"]: p for p in nnn.levels_plan(fast) if p["kind"] in ("linear", "conv")}
    for p in capped.values():
        assert p["bytes"] <= 0.6 * p["dense_bytes"], p
    with torch.no_grad():
        for a, b in zip(fast(*inputs), decoded(*inputs)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    tiny = layers(max_bytes_ratio=1e-6)
    for name, p in capped.items():  # nothing fits 1e-6: the smallest of all, no larger than any under 0.6
        assert tiny[name]["bytes"] <= p["bytes"]
    B = type("B", (), {})
    built = {n: B() for n in ("a", "b", "c")}
    for n, nb in zip(built, (400, 100, 250)):
        built[n].nbytes = nb
    assert set(nn_levels.within_cap(built, 0.3, 1000)) == {"b", "c"}
    assert set(nn_levels.within_cap(built, 0.05, 1000)) == {"b"}
    assert nn_levels.within_cap(built, None, 1000) is built
    forced = nnn.levels_plan(nnn.convert(model, {"fc1": "dense"}, nnp=path, max_bytes_ratio=0.6))
    assert next(p for p in forced if p["name"] == "fc1")["format"] == "dense"
    for bad, err in ((0, ValueError), (1.5, ValueError), ("0.3", TypeError), (True, TypeError)):
        with pytest.raises(err, match="max_bytes_ratio"):
            nnn.convert(model, nnp=path, max_bytes_ratio=bad)


@pytest.mark.parametrize("fmt", ["int8", "int8x2", *LEVELS16])
def test_rounding_formats_keep_tokens_with_outlier_channels(tmp_path, fmt):
    """A token dominated by one input (an outlier channel, as in large language models) would keep the
    other inputs only a few integer steps; the rounding formats then compute that call more finely
    (levels16: float32 activations, the int8 formats: one more digit), so the error stays small next
    to the part of the output the ordinary inputs carry."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(384, 384, bias=False))
    path = str(tmp_path / "m.nnp")
    nnpress.compress(model, path)
    exact = nnn.convert(model, "levels" if nn_levels.has_level_kernels() else "dense", nnp=path)
    fast = nnn.convert(model, fmt, nnp=path, act_digits=2)
    x = torch.randn(16, 384)
    x[:, 0] = 3000.0
    with torch.no_grad():
        ref, got = exact(x), fast(x)
        ordinary = exact(torch.cat([torch.zeros(16, 1), x[:, 1:]], 1))  # the ordinary inputs' part
    err = float((got - ref).abs().max() / ordinary.pow(2).mean().sqrt())
    assert err < 2e-3, err
    # ordinary tokens keep the rounded path: close to the exact product, not equal to it
    x = torch.randn(16, 384)
    with torch.no_grad():
        ref, got = exact(x), fast(x)
    assert 0 < float((got - ref).abs().max() / ref.pow(2).mean().sqrt()) < 2e-3


def test_from_pretrained_reads_the_config_dtype_without_its_deprecated_alias(tmp_path, monkeypatch):
    """transformers >= 4.56 names the config's dtype `dtype`; reading its `torch_dtype` alias logs a
    deprecation on every load. from_pretrained reads `dtype` where it exists."""
    transformers = pytest.importorskip("transformers")
    if not isinstance(getattr(transformers.PretrainedConfig, "torch_dtype", None), property):
        pytest.skip("this transformers has no deprecated torch_dtype alias")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    config.save_pretrained(tmp_path)
    nnpress.compress(transformers.BertModel(config).eval(), str(tmp_path / "model.nnp"))

    def deprecated(self):
        raise AssertionError("torch_dtype read")

    monkeypatch.setattr(transformers.PretrainedConfig, "torch_dtype", property(deprecated))
    model = nnpress.from_pretrained(tmp_path)
    assert next(model.parameters()).dtype == torch.float32
