"""The data-free default's steps on heavy-tailed tensors (CodecConfig.spread = "robust") and its
near-lossless roles (CodecConfig.fine_roles): the step follows the bulk of the weights, not a
moment that a handful of outliers set, and the default stays deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nnpress
from nnpress.config import ROBUST_SAMPLE, CodecConfig, spread_of


def _heavy(n=20_000, n_out=4, bulk=0.05, std_ratio=40.0, seed=0):
    """A Gaussian bulk of std ``bulk`` plus ``n_out`` outliers that make the std ``std_ratio``
    times the bulk's: (values, outlier indices)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * bulk).astype(np.float32)
    idx = rng.choice(n, n_out, replace=False)
    big = bulk * math.sqrt((std_ratio**2 - 1) * n / n_out)
    w[idx] = big * rng.choice([-1.0, 1.0], n_out)
    return w, idx


def test_heavy_tailed_tensor_gets_the_step_of_its_bulk():
    w, idx = _heavy()
    bulk = np.delete(w, idx)
    std = float(np.std(w.astype(np.float64)))
    assert std > 30 * float(np.std(bulk))  # the outliers set the std
    assert np.abs(w).max() / std > 50 and np.median(np.abs(w)) / std < 0.03
    cfg = CodecConfig(method="nearest", rel_step=0.1, size_exponent=0)
    step = cfg.resolve("w", "weight", "float32", w).step
    assert step == pytest.approx(0.1 * float(np.std(bulk)), rel=0.05)
    # the std rule would be ~40x coarser
    assert cfg.replace(spread="std").resolve("w", "weight", "float32", w).step == pytest.approx(0.1 * std)


@pytest.mark.parametrize(("dist", "tol"), [("normal", 0.01), ("laplace", 0.03), ("uniform", 0.01)])
def test_robust_spread_is_the_std_without_outliers(dist, tol):
    rng = np.random.default_rng(1)
    w = {
        "normal": rng.standard_normal(50_000),
        "laplace": rng.laplace(size=50_000),
        "uniform": rng.uniform(-1, 1, 50_000),
    }[dist].astype(np.float32) * 0.07 + 0.01
    assert spread_of(w) == pytest.approx(float(np.std(w.astype(np.float64))), rel=tol)


def test_robust_spread_of_sparse_and_degenerate_tensors():
    rng = np.random.default_rng(2)
    w = rng.standard_normal(40_000).astype(np.float32)
    w[rng.random(w.size) < 0.7] = 0.0  # 70 % exact zeros: the MAD of the non-zero deviations is used
    assert spread_of(w) == pytest.approx(float(np.std(w.astype(np.float64))), rel=0.02)
    assert spread_of(np.full(10, -3.0, np.float32)) == 3.0  # constant: max|w|
    assert spread_of(np.zeros(10, np.float32)) == 0.0
    assert spread_of(np.array([np.nan, 1.0], np.float32)) == 0.0
    assert CodecConfig(method="nearest").resolve("z", "weight", "float32", np.zeros(8, np.float32)).step == 1.0
    # one non-zero value among zeros: the constant-sample fallback looks at the whole tensor
    one = np.zeros(5_000_000, np.float32)
    one[1] = 2.0
    assert spread_of(one) == pytest.approx(math.sqrt(4 / 5e6))  # the whole tensor's RMS, not max|w|
    with pytest.raises(ValueError):
        spread_of(w, "mad")
    with pytest.raises(ValueError):
        CodecConfig(spread="mad")


def test_robust_spread_scales_and_ignores_outlier_size():
    w, idx = _heavy(std_ratio=40.0)
    assert spread_of(3 * w) == pytest.approx(3 * spread_of(w), rel=1e-6)
    w2 = w.copy()
    w2[idx] *= 1000  # larger outliers do not move the step (they are clipped)
    assert spread_of(w2) == pytest.approx(spread_of(w), rel=1e-6)


def test_large_tensor_uses_a_strided_sample_deterministically():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal(3_000_000) * 0.02).astype(np.float32)
    s = spread_of(w)
    assert s == spread_of(w.copy())
    assert s == pytest.approx(0.02, rel=0.01)
    # only the sample counts: values between the sampled indices do not move it
    sampled = np.zeros(w.size, bool)
    sampled[(np.arange(ROBUST_SAMPLE, dtype=np.int64) * w.size) // ROBUST_SAMPLE] = True
    w2 = w.copy()
    w2[~sampled] *= 10
    assert spread_of(w2) == s


def _layer_error(w, b, w_hat, b_hat, const_cols, rng):
    """Relative output error of y = W x + b on random inputs whose ``const_cols`` are always -1."""
    x = rng.standard_normal((w.shape[1], 512)).astype(np.float64)
    x[const_cols] = -1.0
    y = w.astype(np.float64) @ x + b[:, None]
    y_hat = w_hat.astype(np.float64) @ x + b_hat[:, None]
    return float(np.linalg.norm(y - y_hat) / np.linalg.norm(y))


def test_layer_whose_outliers_dominate_the_std(tmp_path):
    """A linear layer with a few huge weights on inputs that are always -1, cancelled by its bias
    (the construction of bench/python/heavy_tail.py): the outliers set the std, but the output
    depends on every weight's error. The default quantizes the bulk as finely as without the
    outliers; the std rule rounds most of the bulk to zero and its output error is far larger."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((96, 64)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(96) * 0.05).astype(np.float32)
    cols = [0, 7]
    w_clean = w.copy()
    big = 0.05 * math.sqrt((40.0**2 - 1) * w.size / 3)
    for r, c in ((3, 0), (50, 7), (80, 0)):
        w[r, c] += big
        b[r] += big  # input -1 there: w*x + b is unchanged
    assert np.abs(w).max() / np.std(w) > 40

    def run(cfg, wt, name):
        path = tmp_path / name
        nnpress.compress({"fc.weight": torch.from_numpy(wt), "fc.bias": torch.from_numpy(b)}, path, cfg)
        out = nnpress.decompress(path, as_numpy=True)
        return out["fc.weight"], out["fc.bias"], nnpress.NnpFile(path).entry("fc.weight")

    cfg = CodecConfig(method="nearest")
    w_hat, b_hat, e = run(cfg, w, "robust.nnp")
    w_old, b_old, e_old = run(cfg.replace(spread="std"), w, "std.nnp")
    w_ref, _, e_ref = run(cfg, w_clean, "clean.nnp")
    assert e["step"] == pytest.approx(e_ref["step"], rel=0.02)  # as if the outliers were not there
    assert e_old["step"] > 20 * e["step"]
    bulk = np.ones(w.shape, bool)
    bulk[[3, 50, 80], [0, 7, 0]] = False
    assert np.mean(w_hat[bulk] != 0) > 0.9 and np.mean(w_old[bulk] != 0) < 0.5
    # the outliers get exact levels: their error is at most half a step, like every other weight
    assert np.abs(w_hat - w).max() <= 0.5 * e["step"] * (1 + 1e-5) + 1e-6 * np.abs(w).max()
    err_new = _layer_error(w, b, w_hat, b_hat, cols, np.random.default_rng(5))
    err_old = _layer_error(w, b, w_old, b_old, cols, np.random.default_rng(5))
    b0 = b - (w - w_clean).sum(1)  # the clean layer's bias
    err_ref = _layer_error(w_clean, b0, w_ref, b0, cols, np.random.default_rng(5))
    assert err_old > 10 * err_new
    assert err_new < 3 * err_ref + 1e-4


def _tiny_model():
    torch.manual_seed(11)
    m = torch.nn.Sequential()
    m.add_module("fc1", torch.nn.Linear(20, 30))
    m.add_module("ln", torch.nn.LayerNorm(30))
    m.add_module("fc2", torch.nn.Linear(30, 5))
    with torch.no_grad():
        m.ln.weight.add_(0.1 * torch.randn(30))
        m.ln.bias.add_(0.1 * torch.randn(30))
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_fine_roles_quantize_biases_and_norms_near_losslessly(tmp_path):
    sd = _tiny_model()
    path, raw_path = tmp_path / "fine.nnp", tmp_path / "raw.nnp"
    cfg = CodecConfig(lossless_roles=("buffer", "other"))
    assert cfg.fine_roles == ("bias", "norm") and cfg.fine_rel_step == 1 / 256
    rep = nnpress.compress(sd, path, cfg)
    rep_raw = nnpress.compress(sd, raw_path)  # the default: biases and norms exact
    f, f_raw = nnpress.NnpFile(path), nnpress.NnpFile(raw_path)
    out = nnpress.decompress(path, as_numpy=True)
    roles = {e["name"]: e["role"] for e in f.entries}
    assert roles["ln.weight"] == "norm" and roles["fc1.bias"] == "bias"
    for name in ("fc1.bias", "ln.weight", "ln.bias", "fc2.bias"):
        e = f.entry(name)
        v = sd[name].numpy()
        assert e["storage"] == "quantized" and e["method"] == "nearest"
        assert e["step"] == pytest.approx(spread_of(v) / 256, rel=1e-6)
        assert np.abs(out[name] - v).max() <= 0.5 * e["step"] * (1 + 1e-5)
        assert f_raw.entry(name)["storage"] == "raw"
    # the fine tensors do not count in the model's mean size: the weights' steps are unchanged
    for name in ("fc1.weight", "fc2.weight"):
        assert f.entry(name)["step"] == f_raw.entry(name)["step"]
    assert rep.file_bytes < rep_raw.file_bytes
    # a plan entry that names a method or step takes the tensor out of the fine rule
    p = CodecConfig(lossless_roles=(), plan={"fc1.bias": {"rel_step": 0.1}})
    v = sd["fc1.bias"].numpy()
    assert p.resolve("fc1.bias", "bias", "float32", v).step == pytest.approx(0.1 * spread_of(v))
    assert p.resolve("ln.bias", "norm", "float32", sd["ln.bias"].numpy()).method == "nearest"
    # an absolute step applies to every quantized tensor, fine roles included
    assert CodecConfig(lossless_roles=(), step=0.01).resolve("fc1.bias", "bias", "float32", v).step == 0.01
    assert not CodecConfig(lossless_roles=()).quantizes("fc1.bias", "bias", "float32")
    assert CodecConfig(lossless_roles=(), fine_roles=()).quantizes("fc1.bias", "bias", "float32")
    for bad in ({"fine_roles": ("biases",)}, {"fine_rel_step": 0}, {"fine_rel_step": float("inf")}):
        with pytest.raises(ValueError):
            CodecConfig(**bad)
    c = CodecConfig(lossless_roles=("buffer",), fine_roles=("norm",), fine_rel_step=0.01, spread="std")
    assert CodecConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "cfg",
    [
        CodecConfig(),
        CodecConfig(lossless_roles=("buffer", "other")),
        CodecConfig(method="trellis", lossless_roles=("buffer", "other")),
    ],
)
def test_default_family_is_byte_identical_across_thread_counts(tmp_path, cfg):
    torch.manual_seed(12)
    w, _ = _heavy(n=64 * 700)
    sd = {
        "a.weight": torch.from_numpy(w.reshape(700, 64)),
        "a.bias": torch.randn(700),
        "b.weight": torch.randn(50, 700) * 0.02,
        "n.weight": 1 + 0.1 * torch.randn(50),
    }
    outs = []
    for threads in (1, 2, 3):
        p = tmp_path / f"t{threads}.nnp"
        nnpress.compress(sd, p, cfg.replace(threads=threads, block_elements=5000))
        outs.append(p.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert nnpress.NnpFile(tmp_path / "t1.nnp").version == (1, 0)
