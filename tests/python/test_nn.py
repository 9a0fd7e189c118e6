"""nnpress.nn.convert: Linear / Conv2d on compressed weights give the dequantized model's
outputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import nnpress.nn as nnn  # noqa: E402
from nnpress.demo_models import load_digits_data, train_digits_model  # noqa: E402


def quantize_model(model: nn.Module, levels_per_side: int = 7) -> nn.Module:
    """Nearest-grid quantization of every Linear/Conv2d weight: w = float32(round(w / step)) *
    step."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                step = float(m.weight.abs().max()) / levels_per_side
                levels = torch.round(m.weight / step).to(torch.int32)
                m.weight.copy_(levels.to(torch.float32) * torch.tensor(step, dtype=torch.float32))
    return model


@pytest.fixture(scope="module")
def digits():
    data = load_digits_data()
    model = quantize_model(train_digits_model("cnn", seed=0))
    return model.eval(), torch.from_numpy(data.x_test)


@pytest.mark.parametrize("fmt", ["auto", "cser", "cer", "codebook"])
def test_converted_digits_cnn_gives_the_dequantized_predictions(digits, fmt):
    model, x = digits
    fast = nnn.convert(model, format=fmt)
    kinds = {type(m).__name__ for m in fast.modules()}
    if fmt == "auto":  # as planned: compressed or left dense, layer by layer
        planned = {r["name"]: r["format"] for r in nnn.plan(model)}
        for name, m in fast.named_modules():
            if name in planned:
                assert (planned[name] == "dense") == isinstance(m, (nn.Linear, nn.Conv2d))
        assert "CompressedLinear" in kinds
    else:
        assert "CompressedConv2d" in kinds and "CompressedLinear" in kinds
        assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in fast.modules())
    with torch.no_grad():
        ref, out = model(x), fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(out.argmax(1), ref.argmax(1))
    # The original model is untouched.
    assert any(isinstance(m, nn.Linear) for m in model.modules())


def test_plan_and_auto_choice(digits):
    model, _ = digits
    rows = nnn.plan(model)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"conv1", "conv2", "fc1", "fc2", "fc3"}
    for r in rows:
        assert r["num_values"] <= 15  # levels -7..7
    assert sum(r["bytes"] for r in rows) < 0.5 * sum(r["dense_bytes"] for r in rows)
    # Unfolded conv columns are a batched product: CSER, or dense BLAS for a nearly dense weight.
    for conv in ("conv1", "conv2"):
        dens = by_name[conv]["nnz"] / np.prod(by_name[conv]["shape"])
        assert by_name[conv]["format"] == ("dense" if dens >= 0.75 else "cser")
    assert by_name["fc1"]["format"] == "codebook"  # <= 16 values, batch 1
    fc1_32 = {r["name"]: r for r in nnn.plan(model, batch=32)}["fc1"]
    assert fc1_32["format"] == ("dense" if fc1_32["nnz"] / np.prod(fc1_32["shape"]) >= 0.75 else "cser")
    forced = nnn.plan(model, format={"fc1": "cer", "fc2": "dense"})
    assert {r["name"]: r["format"] for r in forced}["fc1"] == "cer"
    assert {r["name"]: r["format"] for r in forced}["fc2"] == "dense"


def test_linear_shapes_bias_threads_and_isas():
    torch.manual_seed(0)
    lin = nn.Linear(300, 70)
    with torch.no_grad():
        lin.weight.copy_(torch.round(lin.weight * 50) / 50)
        lin.weight[torch.rand_like(lin.weight) < 0.7] = 0
    for isa in nnn_isas():
        fast = nnn.convert(nn.Sequential(lin), format="cser", threads=2, isa=isa)
        for shape in [(300,), (1, 300), (5, 300), (2, 3, 300)]:
            x = torch.randn(*shape)
            torch.testing.assert_close(fast(x), lin(x).detach(), rtol=1e-4, atol=1e-4)
    nobias = nn.Sequential(nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        nobias[0].weight.copy_(torch.round(nobias[0].weight * 4) / 4)
    x = torch.randn(3, 8)
    torch.testing.assert_close(nnn.convert(nobias)(x), nobias(x).detach())


def nnn_isas():
    from nnpress.sparse import available_isas

    return available_isas()


def test_conv_stride_dilation_padding():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.round(conv.weight * 8) / 8)
    fast = nnn.convert(nn.Sequential(conv), format="cer")
    x = torch.randn(2, 3, 9, 7)
    torch.testing.assert_close(fast(x), conv(x).detach(), rtol=1e-5, atol=1e-5)


def test_errors_and_layers_left_alone():
    with pytest.raises(TypeError):
        nnn.convert("not a model")
    with pytest.raises(ValueError):
        nnn.convert(nn.Sequential(nn.Linear(2, 2)), format="csr")
    unquantized = nn.Sequential(nn.Linear(300, 300))  # 90,000 distinct values
    assert isinstance(nnn.convert(unquantized)[0], nn.Linear)  # auto: left dense
    with pytest.raises(ValueError, match="'0'"):
        nnn.convert(unquantized, format="cser")
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    assert isinstance(nnn.convert(grouped)[0], nn.Conv2d)
    fast = nnn.convert(nn.Sequential(nn.Linear(4, 3)).apply(lambda m: None), format="dense")
    assert isinstance(fast[0], nn.Linear)
    with pytest.raises(ValueError):
        nnn.convert(nn.Sequential(nn.Linear(4, 3)), format="cser")(torch.randn(2, 5))


def test_import_nnpress_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, nnpress; m = nnpress.CSERMatrix; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_convert_a_model_decoded_from_nnp(digits, tmp_path):
    import nnpress
    from nnpress.demo_models import build_digits_model

    model, x = digits
    path = tmp_path / "digits.nnp"
    nnpress.compress(model, str(path))
    decoded = build_digits_model("cnn")
    decoded.load_state_dict(nnpress.decompress(str(path)))
    decoded.eval()
    fast = nnn.convert(decoded, format="cser")
    assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in fast.modules())
    with torch.no_grad():
        ref, out = decoded(x), fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_nnpress_nn_as_an_attribute_after_a_bare_import():
    """README writes ``import nnpress; nnpress.nn.convert(model)``: the submodule is imported on
    first use (with torch), not by ``import nnpress``."""
    import subprocess
    import sys

    code = (
        "import sys, nnpress\n"
        "assert 'torch' not in sys.modules, 'import nnpress imported torch'\n"
        "import torch\n"
        "m = torch.nn.Sequential(torch.nn.Linear(6, 4))\n"
        "fast = nnpress.nn.convert(m, format='cser')\n"
        "assert isinstance(fast[0], nnpress.nn.CompressedLinear)\n"
        "x = torch.randn(3, 6)\n"
        "assert torch.allclose(fast(x), m(x), atol=1e-5)\n"
        "assert nnpress.tune.tune_to_budget and nnpress.fisher.fisher_diagonal\n"
        "try:\n"
        "    nnpress.no_such_module\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_module' in str(e)\n"
        "else:\n"
        "    raise AssertionError('nnpress.no_such_module did not raise AttributeError')\n"
        "assert not hasattr(nnpress, 'no_such_module')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
