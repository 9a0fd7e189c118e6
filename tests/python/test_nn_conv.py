"""Convolutions through nnpress.nn.convert: every format gives torch's convolution on the decompressed
weights (exactly for "dense" and "decoded", to float32 rounding for the im2col formats), for every
stride, padding, dilation, padding mode and grouping torch's Conv1d / Conv2d take; grouped ones are
refused by the im2col formats with a reason in the plan; the digits CNN predicts as the decompressed
model does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nnpress  # noqa: E402
import nnpress.nn as nnn  # noqa: E402
from nnpress import nn_conv, nn_levels  # noqa: E402
from nnpress.container import TensorRecord, write_nnp  # noqa: E402

LEVELS = ["levels"] if nn_levels.has_level_kernels() else []
LEVELS16 = ["levels16"] if nn_levels.has_level_kernels() else []
EXACT = ["dense", "decoded"]
IM2COL_EXACT = ["cser", "cer", *LEVELS]  # float32 activations: float32 rounding and order only

# (name, constructor): every geometry torch's Conv1d / Conv2d accept that the formats must honour
GEOMETRIES = {
    "plain": lambda: nn.Conv2d(3, 8, 3),
    "pad1": lambda: nn.Conv2d(3, 8, 3, padding=1),
    "stride2_pad2": lambda: nn.Conv2d(3, 5, 5, stride=2, padding=2),
    "rect": lambda: nn.Conv2d(4, 6, (3, 1), stride=(1, 2), padding=(1, 0)),
    "dilated": lambda: nn.Conv2d(3, 4, 3, dilation=2, padding=2, bias=False),
    "same_even": lambda: nn.Conv2d(3, 4, 4, padding="same"),
    "valid": lambda: nn.Conv2d(3, 4, 2, padding="valid"),
    "reflect": lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
    "circular": lambda: nn.Conv2d(3, 4, 3, padding=(2, 1), padding_mode="circular"),
    "replicate_stride": lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="replicate"),
    "pointwise": lambda: nn.Conv2d(8, 16, 1),
    "grouped": lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2),
    "depthwise": lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6),
    "c1d": lambda: nn.Conv1d(3, 7, 5, stride=2, padding=2),
    "c1d_dil_reflect": lambda: nn.Conv1d(4, 5, 3, dilation=2, padding=2, padding_mode="reflect"),
    "c1d_same": lambda: nn.Conv1d(2, 4, 4, padding="same", bias=False),
}
GROUPED = {"grouped", "depthwise"}


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.ModuleDict({k: make() for k, make in GEOMETRIES.items()})

    def forward(self, inputs: dict):
        return {k: self.c[k](x) for k, x in inputs.items()}


def _inputs(seed: int = 0, batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, conv in Convs().c.items():
        shape = (batch, conv.in_channels, 11) if isinstance(conv, nn.Conv1d) else (batch, conv.in_channels, 9, 10)
        out[k] = torch.randn(*shape, generator=g)
    return out


@pytest.fixture(scope="module")
def convs(tmp_path_factory):
    torch.manual_seed(0)
    model = Convs().eval()
    path = str(tmp_path_factory.mktemp("nnconv") / "convs.nnp")
    nnpress.compress(model, path)
    decoded = Convs().eval()
    decoded.load_state_dict(nnpress.decompress(path))
    return model, path, decoded


def _check(fast, decoded, fmt: str, inputs: dict) -> None:
    with torch.no_grad():
        ref, out = decoded(inputs), fast(inputs)
    for k in GEOMETRIES:
        assert out[k].shape == ref[k].shape, k
        if fmt in EXACT or k in GROUPED:  # torch's conv on bit-identical weights
            torch.testing.assert_close(out[k], ref[k], rtol=0, atol=0, msg=k)
        elif fmt in ("int8", "int8x2", "levels16"):  # activations rounded per pixel row
            tol = 2e-3 * float(ref[k].abs().max())
            assert float((out[k] - ref[k]).abs().max()) <= tol, k
        else:
            torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("fmt", [*EXACT, *IM2COL_EXACT, "int8", "int8x2", *LEVELS16])
def test_every_format_matches_torch_on_the_decompressed_weights(convs, fmt):
    model, path, decoded = convs
    fast = nnn.convert(model, fmt, nnp=path, act_digits=3)
    _check(fast, decoded, fmt, _inputs())
    _check(fast, decoded, fmt, _inputs(seed=1, batch=1))  # one image: the column formats' view path
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    for k in GEOMETRIES:
        p = plan[f"c.{k}"]
        assert isinstance(fast.c[k], nn_conv.LevelConv) and not hasattr(fast.c[k], "weight")
        if k in GROUPED and fmt not in EXACT:  # refused, visibly, and kept exact
            assert p["format"] == "decoded" and "groups=" in " ".join(p["reasons"])
        else:
            assert p["format"] == fmt and p["reasons"] == []


def test_decoded_weights_are_bit_identical_to_the_file_decoder(tmp_path):
    """trellis levels beyond int8 and int16, row and column scales: the weights decoded per call equal
    the file's decoder bit for bit, so the outputs equal torch's conv on them exactly."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "c.nnp")
    lv = rng.integers(-60, 61, size=(6, 4, 3, 3)).astype(np.int32)
    lv[0, 0, 0, 0] = 40000  # beyond int16: the levels are held as int32
    rec = TensorRecord("conv.weight", "float32", "weight", "quantized", lv.shape, data=lv, method="trellis", step=0.01)
    rec.row_scale_exp = rng.integers(-6, 7, size=6)
    rec.col_scale_exp = rng.integers(-6, 7, size=4 * 9)
    write_nnp(path, [rec, TensorRecord("conv.bias", "float32", "bias", "raw", (6,), data=np.ones(6, np.float32))])

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, padding=1)

    f = nnpress.NnpFile(path)
    w = torch.from_numpy(f.read("conv.weight"))
    fast = nnn.convert(One(), {"conv": "decoded"}, nnp=path)
    assert fast.conv.backend.levels.dtype == torch.int32
    assert torch.equal(fast.conv.backend.weight(), w)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        ref = nn.functional.conv2d(x, w, torch.ones(6), padding=1)
        assert torch.equal(fast.conv(x), ref)
        for fmt in IM2COL_EXACT:
            other = nnn.convert(One(), {"conv": fmt}, nnp=path)
            torch.testing.assert_close(other.conv(x), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not hasattr(nnpress._core, "LutMatrix"), reason="needs the LutMatrix kernels")
def test_lut_on_the_im2col_matrix(tmp_path):
    """A convolution whose rows hold <= 16 levels runs as "lut" (forced, and as an auto candidate
    timed at its real input) with torch's outputs on the decompressed weights; a row of more levels
    refuses it (forced: ValueError; for the whole model: decoded, with the reason)."""
    rng = np.random.default_rng(9)
    path, many = str(tmp_path / "few.nnp"), str(tmp_path / "many.nnp")
    lv = rng.integers(-7, 8, size=(6, 4, 3, 3)).astype(np.int32)  # 15 values per row at most
    for p, levels in ((path, lv), (many, lv * 3 + (np.arange(36).reshape(4, 3, 3) % 2))):
        rec = TensorRecord("conv.weight", "float32", "weight", "quantized", lv.shape, data=levels, step=0.01)
        rec.row_scale_exp = rng.integers(-6, 7, size=6)
        write_nnp(p, [rec, TensorRecord("conv.bias", "float32", "bias", "raw", (6,), data=np.ones(6, np.float32))])

    class One(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 6, 3, padding=1, stride=2)

        def forward(self, x):
            return self.conv(x)

    w = torch.from_numpy(nnpress.NnpFile(path).read("conv.weight"))
    x = torch.randn(2, 4, 9, 8)
    ref = nn.functional.conv2d(x, w, torch.ones(6), stride=2, padding=1)
    fast = nnn.convert(One(), {"conv": "lut"}, nnp=path)
    assert fast.conv.format == "lut"
    timed = nnn.convert(One(), nnp=path, example_inputs=x, act_digits=None)
    assert "lut" in nnn.levels_plan(timed)[0]["times_us"]
    with torch.no_grad():
        torch.testing.assert_close(fast.conv(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(timed.conv(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="more than 16"):
        nnn.convert(One(), {"conv": "lut"}, nnp=many)

    class Keyword(One):  # the convolution called with its input as a keyword argument
        def forward(self, x):
            return self.conv(input=x)

    by_keyword = nnn.convert(Keyword(), nnp=path, example_inputs=x, act_digits=None)
    assert "lut" in nnn.levels_plan(by_keyword)[0]["times_us"]  # timed at the input it received
    with torch.no_grad():
        torch.testing.assert_close(by_keyword(x), ref, rtol=1e-5, atol=1e-5)
    kept = nnn.convert(One(), "lut", nnp=many)
    assert kept.conv.format == "decoded" and "more than 16" in " ".join(nnn.levels_plan(kept)[0]["reasons"])


def test_grouped_conv_named_for_an_im2col_format_raises(convs):
    model, path, _ = convs
    with pytest.raises(ValueError, match=r"c\.depthwise.*groups=6"):
        nnn.convert(model, {"c.depthwise": "levels" if LEVELS else "cser"}, nnp=path)
    assert {p["format"] for p in nnn.levels_plan(nnn.convert(model, "decoded", nnp=path))} == {"decoded"}

    class Lin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

    lpath = path.replace("convs.nnp", "lin.nnp")
    nnpress.compress(Lin(), lpath)
    for fmt in ("decoded", {"fc": "decoded"}):
        with pytest.raises(ValueError, match="convolutions only"):
            nnn.convert(Lin(), fmt, nnp=lpath)


def test_auto_times_each_conv_at_its_real_input(convs):
    model, path, decoded = convs
    inputs = _inputs(batch=3)
    fast = nnn.convert(model, nnp=path, example_inputs=(inputs,), act_digits=None)
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    for k, x in inputs.items():
        p = plan[f"c.{k}"]
        assert p["input_shape"] == tuple(x.shape)
        assert p["format"] in p["times_us"] and "decoded" in p["times_us"] and "dense" in p["times_us"]
        if k in GROUPED:
            assert set(p["times_us"]) == {"dense", "decoded"}
    with torch.no_grad():
        ref, out = decoded(inputs), fast(inputs)
    for k in GEOMETRIES:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-5)
    # without example inputs nothing is timed: decoded levels (exact), and the plan says why
    lazy = nnn.convert(model, nnp=path)
    for p in nnn.levels_plan(lazy):
        assert p["format"] == "decoded" and p["times_us"] == {}
        assert any("example_inputs" in r for r in p["reasons"])


@pytest.mark.parametrize("fmt", ["decoded", *IM2COL_EXACT])
def test_unbatched_input_as_torch_takes_it(convs, fmt):
    """A C x H x W (Conv1d: C x L) input gives torch's unbatched output: the batched one without its
    leading dimension."""
    model, path, decoded = convs
    fast = nnn.convert(model, fmt, nnp=path)
    for k in ("plain", "stride2_pad2", "reflect", "c1d", "c1d_same"):
        x = _inputs(seed=3, batch=1)[k][0]
        with torch.no_grad():
            ref, out = decoded.c[k](x), fast.c[k](x)
        assert out.shape == ref.shape, k
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=k)


def test_auto_times_a_conv_on_an_unbatched_example(convs):
    model, path, decoded = convs
    inputs = {k: x[0] for k, x in _inputs(seed=4, batch=1).items() if k in ("plain", "c1d")}
    fast = nnn.convert(model, nnp=path, example_inputs=(inputs,), act_digits=None)
    plan = {p["name"]: p for p in nnn.levels_plan(fast)}
    with torch.no_grad():
        ref, out = decoded(inputs), fast(inputs)
    for k, x in inputs.items():
        assert plan[f"c.{k}"]["input_shape"] == tuple(x.shape) and len(plan[f"c.{k}"]["times_us"]) > 2
        torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-5)


def test_bad_input_and_unconverted_convs(convs, tmp_path):
    model, path, _ = convs
    fast = nnn.convert(model, "dense", nnp=path)
    with pytest.raises(ValueError, match="channels"):
        fast.c["plain"](torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="4-d"):
        fast.c["plain"](torch.randn(8, 8))
    with pytest.raises(ValueError, match="4-d"):
        fast.c["plain"](torch.randn(1, 1, 3, 8, 8))

    class StdConv(nn.Conv2d):  # weight standardization: not torch's Conv2d product on the stored weight
        def forward(self, x):
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
            return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(3, 2, 2)
            self.c3 = nn.Conv3d(2, 2, 1)
            self.std = StdConv(3, 4, 3)

    p3 = str(tmp_path / "o.nnp")
    m = Other()
    nnpress.compress(m, p3)
    kept = nnn.convert(m, nnp=p3)
    plan = {p["name"]: p for p in nnn.levels_plan(kept)}
    assert plan["up"]["format"] == plan["c3"]["format"] == "torch" and "not converted" in plan["up"]["reasons"][0]
    assert plan["std"]["format"] == "torch" and "overrides" in plan["std"]["reasons"][0]
    assert type(kept.std) is StdConv
    dec = Other()
    dec.load_state_dict(nnpress.decompress(p3))
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(kept.up(x), dec.up(x))
        assert torch.equal(kept.std(x), dec.std(x))


def test_digits_cnn_predicts_as_the_decompressed_model(tmp_path):
    from nnpress.demo_models import build_digits_model, load_digits_data, train_digits_model

    data = load_digits_data()
    model = train_digits_model("cnn", seed=0, epochs=3)
    path = str(tmp_path / "digits.nnp")
    nnpress.compress(model, path)
    decoded = build_digits_model("cnn")
    decoded.load_state_dict(nnpress.decompress(path))
    x = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32).reshape(-1, 1, 8, 8)
    with nnn.params_on_meta():
        light = build_digits_model("cnn")
    for fmt, kw in (("auto", {"example_inputs": x[:1]}), ("auto", {"example_inputs": x[:64]}), ("levels", {})):
        fast = nnn.convert(light, fmt, nnp=path, act_digits=None, **kw)
        with torch.no_grad():
            ref, out = decoded.eval()(x), fast(x)
        assert torch.equal(out.argmax(1), ref.argmax(1)), fmt
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        plan = {p["name"]: p for p in nnn.levels_plan(fast)}
        assert set(plan) == {"conv1", "conv2", "fc1", "fc2", "fc3"}
        if "example_inputs" in kw:  # every layer timed at the input the example gives it
            n = kw["example_inputs"].shape[0]
            assert plan["conv1"]["input_shape"] == (n, 1, 8, 8) and plan["conv2"]["input_shape"] == (n, 6, 4, 4)
            assert plan["fc1"]["input_shape"] == (n, 256) and plan["fc3"]["input_shape"] == (n, 84)
            assert all(p["format"] in p["times_us"] for p in plan.values())


def test_a_timed_choice_replays_and_equal_layers_share_a_timing(tmp_path):
    class Twins(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.a = nn.Linear(32, 32)
            self.b = nn.Linear(32, 32)

        def forward(self, x):
            h = self.c2(torch.relu(self.c1(x))).mean((2, 3)).repeat(1, 4)
            return self.b(torch.relu(self.a(h)))

    torch.manual_seed(0)
    m = Twins().eval()
    with torch.no_grad():
        m.b.weight.copy_(m.a.weight)  # the same levels: the same signature
    path = str(tmp_path / "t.nnp")
    nnpress.compress(m, path)
    x = torch.randn(4, 3, 6, 6)
    fast = nnn.convert(m, nnp=path, example_inputs=x, act_digits=None)
    plan = nnn.levels_plan(fast)
    by = {p["name"]: p for p in plan}
    ta = by["a"]["times_us"]
    close = {c for c, t in ta.items() if t <= min(ta.values()) * nn_levels._CLOSE}
    assert by["b"].get("timed_as") == "a" and "timed_as" not in by["a"]
    assert by["b"]["format"] in close and set(by["b"]["times_us"]) <= set(ta)  # only the close ones timed again
    if len(close) > 1:
        assert set(by["b"]["times_us"]) == close
    every = nnn.convert(m, nnp=path, example_inputs=x, act_digits=None, reuse_timings=False)
    assert "timed_as" not in {k for p in nnn.levels_plan(every) for k in p}
    replay = {p["name"]: p["format"] for p in plan if p["kind"] in ("linear", "conv") and p["format"] != "torch"}
    again = nnn.convert(m, replay, nnp=path, act_digits=None)
    assert [(p["name"], p["format"]) for p in nnn.levels_plan(again)] == [(p["name"], p["format"]) for p in plan]
    assert all(p["times_us"] == {} for p in nnn.levels_plan(again))
    with torch.no_grad():
        torch.testing.assert_close(again(x), fast(x), rtol=0, atol=0)


def test_gpt2_conv1d_layers_run_as_transposed_linears(tmp_path):
    """transformers' Conv1D (weight stored in x out) becomes a LevelLinear on W^T: GPT-2's hidden
    states equal the decompressed model's, in an exact format and in auto."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = transformers.GPT2Model(config).eval()
    path = str(tmp_path / "gpt2.nnp")
    nnpress.compress(model, path)
    decoded = transformers.GPT2Model(config).eval()
    decoded.load_state_dict(nnpress.decompress(path))
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        ref = decoded(input_ids=ids).last_hidden_state
    for fmt in ["dense", "cser", *LEVELS, "auto"]:
        fast = nnn.convert(model, fmt, nnp=path, act_digits=None, batch=14)
        linears = [p for p in nnn.levels_plan(fast) if p["kind"] == "linear"]
        assert len(linears) == 2 * 4 and all(p["transposed"] for p in linears)  # c_attn, c_proj, c_fc, mlp.c_proj
        assert linears[0]["shape"] == (96, 32)  # c_attn: 32 -> 96
        with torch.no_grad():
            out = fast(input_ids=ids).last_hidden_state
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4, msg=fmt)
