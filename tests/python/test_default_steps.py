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
    cfg = CodecConfig()  # the default: biases and norms near-lossless
    assert cfg.lossless_roles == ("buffer", "other")
    assert cfg.fine_roles == ("bias", "norm") and cfg.fine_rel_step == 1 / 256
    rep = nnpress.compress(sd, path, cfg)
    rep_raw = nnpress.compress(sd, raw_path, CodecConfig(lossless_roles=("bias", "norm", "buffer", "other")))
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
    # with an absolute step or qp the fine rule still holds, never coarser than that step
    fine = spread_of(v) / 256
    for kw, absolute in (({"step": 0.01}, 0.01), ({"step": 1e-5}, 1e-5), ({"qp": -38}, 2**-9.5), ({"qp": -80}, 2**-20)):
        assert absolute != pytest.approx(fine, rel=0.1)
        p = CodecConfig(**kw).resolve("fc1.bias", "bias", "float32", v)
        assert p.method == "nearest" and p.lam == 0
        assert p.step == pytest.approx(min(fine, absolute), rel=1e-9)
        assert not CodecConfig(**kw).quantizes("fc1.bias", "bias", "float32")  # not in the mean size
        assert CodecConfig(**kw).resolve("fc1.weight", "weight", "float32", v).step == pytest.approx(absolute)
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


def test_probe_factors_keep_rule4s_predicted_distortion():
    """m_t = c / (sqrt(s_t) a_t), clipped to [1/4, 4], c such that sum s n (m a)^2 = sum s n a^2."""
    from nnpress.config import PROBE_FACTOR_LIMIT
    from nnpress.encode import model_stats
    from nnpress.traverse import collect

    rng = np.random.default_rng(21)
    sd = {
        "a.weight": torch.from_numpy((rng.standard_normal((60, 40)) * 0.1).astype(np.float32)),
        "b.weight": torch.from_numpy((rng.standard_normal((30, 60)) * 0.05).astype(np.float32)),
        "c.weight": torch.from_numpy((rng.standard_normal((10, 30)) * 0.2).astype(np.float32)),
        "d.weight": torch.from_numpy((rng.standard_normal((10, 10)) * 0.2).astype(np.float32)),
        "a.bias": torch.from_numpy(rng.standard_normal(60).astype(np.float32)),
    }
    entries = collect(sd)
    cfg = CodecConfig()
    base = model_stats(entries, cfg)
    a = {e.name: cfg.resolve(e.name, e.role, e.dtype, e.values, mean_size=base.mean_size).step for e in entries}
    sens = {"a.weight": 2.0, "b.weight": 0.5, "c.weight": 3.0, "d.weight": 0.0, "a.bias": 9.0}
    m = model_stats(entries, cfg, sens).step_factors
    assert set(m) == {"a.weight", "b.weight", "c.weight", "d.weight"}  # the fine-role bias is not rule 4's
    assert m["d.weight"] == PROBE_FACTOR_LIMIT  # no measured effect: the coarsest step allowed
    live = ("a.weight", "b.weight", "c.weight")
    n = {k: sd[k].numel() for k in live}
    assert all(1 / PROBE_FACTOR_LIMIT < m[k] < PROBE_FACTOR_LIMIT for k in live)
    before = sum(sens[k] * n[k] * a[k] ** 2 for k in live)
    after = sum(sens[k] * n[k] * (m[k] * a[k]) ** 2 for k in live)
    assert after == pytest.approx(before, rel=1e-9)
    # the new steps are proportional to 1 / sqrt(s_t): equal distortion per weight's bit
    new = {k: m[k] * a[k] * math.sqrt(sens[k]) for k in live}
    assert new["a.weight"] == pytest.approx(new["b.weight"], rel=1e-9) == pytest.approx(new["c.weight"], rel=1e-9)
    # clipping: at most 4x finer (a small tensor far more sensitive than the rest) or coarser
    m2 = model_stats(entries, cfg, dict(sens, **{"d.weight": 1e6, "c.weight": 1e-9})).step_factors
    assert m2["d.weight"] == 1 / PROBE_FACTOR_LIMIT and m2["c.weight"] == PROBE_FACTOR_LIMIT
    # the resolved steps are the rule-4 steps times the factors; an absolute step ignores them
    for k in live:
        assert cfg.resolve(k, "weight", "float32", sd[k].numpy(), mean_size=base.mean_size, step_factor=m[k]).step == (
            pytest.approx(m[k] * a[k], rel=1e-12)
        )
    assert (
        CodecConfig(step=0.01).resolve("a.weight", "weight", "float32", sd["a.weight"].numpy(), step_factor=3).step
        == 0.01
    )
    assert not CodecConfig(step=0.01).by_rule4("a.weight", "weight", "float32")
    with pytest.raises(ValueError):
        model_stats(entries, cfg, {"a.weight": float("nan")})


class _Net(torch.nn.Module):
    def __init__(self, first):
        super().__init__()
        self.first = first
        self.fc = torch.nn.Linear(48, 10)

    def forward(self, x):
        h = self.first(x)
        if h.dim() == 4:  # conv: pool to 48 features
            h = torch.nn.functional.adaptive_avg_pool2d(h, (4, 4)).flatten(1)[:, :48]
        elif h.dim() == 3:  # embedding: mean over tokens
            h = h.mean(1)
        return self.fc(torch.relu(h))


def test_synthetic_inputs_from_the_first_layer():
    from nnpress.fisher.probe import SYNTHETIC_BATCH, SYNTHETIC_IMAGE, SYNTHETIC_TOKENS, synthetic_inputs

    torch.manual_seed(22)
    x = synthetic_inputs(_Net(torch.nn.Linear(20, 48)))
    assert x.shape == (SYNTHETIC_BATCH, 20) and x.dtype == torch.float32
    x = synthetic_inputs(_Net(torch.nn.Conv2d(3, 3, 3)))
    assert x.shape == (SYNTHETIC_BATCH, 3, SYNTHETIC_IMAGE, SYNTHETIC_IMAGE)
    ids = synthetic_inputs(_Net(torch.nn.Embedding(100, 48)))
    assert ids.shape == (SYNTHETIC_BATCH, SYNTHETIC_TOKENS) and ids.dtype == torch.int64
    assert 0 <= int(ids.min()) and int(ids.max()) < 100
    assert torch.equal(ids, synthetic_inputs(_Net(torch.nn.Embedding(100, 48))))  # deterministic
    # a model that does not run on them (wrong width), or has no usable first layer: None
    assert synthetic_inputs(_Net(torch.nn.Linear(20, 47))) is None
    assert synthetic_inputs(torch.nn.Sequential(torch.nn.LayerNorm(8))) is None


def test_compress_with_the_probe(tmp_path):
    """probe=True on a module: rule-4 steps times the probe's factors, recorded in the metadata,
    deterministic; a state_dict (nothing to run) and the default (probe off) get rule 4 alone."""
    from nnpress.encode import data_free_sensitivities, model_stats
    from nnpress.traverse import collect

    torch.manual_seed(23)
    net = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
    )
    with torch.no_grad():
        net[4].weight.mul_(0.05)  # the last layer matters less for the output than its size says
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    on = CodecConfig(probe=True, synthetic_feedback=False)  # (the probe alone; feedback: test_synthetic.py)
    paths = {k: tmp_path / f"{k}.nnp" for k in ("mod", "mod2", "sd", "off")}
    nnpress.compress(net, paths["mod"], on)
    nnpress.compress(net, paths["mod2"], on)
    with pytest.warns(UserWarning, match=r"probe=True\) was not applied"):  # a state_dict cannot run
        nnpress.compress(sd, paths["sd"], on)
    nnpress.compress(net, paths["off"], CodecConfig(synthetic_feedback=False))
    assert paths["mod"].read_bytes() == paths["mod2"].read_bytes()
    sd_out, off_out = (nnpress.decompress(paths[k], as_numpy=True) for k in ("sd", "off"))
    assert all(np.array_equal(sd_out[k], off_out[k]) for k in sd)  # (the metadata records probe=True)
    assert "probe" not in nnpress.NnpFile(paths["sd"]).metadata
    assert CodecConfig().probe is False
    f, f_off = nnpress.NnpFile(paths["mod"]), nnpress.NnpFile(paths["off"])
    assert f.metadata["probe"] is True and "probe" not in f_off.metadata
    entries = collect(net)
    sens = data_free_sensitivities(net, entries, on)
    assert set(sens) == {"0.weight", "2.weight", "4.weight"} and all(v > 0 for v in sens.values())
    assert data_free_sensitivities(sd, collect(sd), on) is None
    assert data_free_sensitivities(net, entries, CodecConfig()) is None
    m = model_stats(entries, on, sens).step_factors
    assert len({round(v, 6) for v in m.values()}) == 3  # the probe moved the steps apart
    for name, factor in m.items():
        assert f.entry(name)["step"] == pytest.approx(factor * f_off.entry(name)["step"], rel=1e-9)
    for name in ("0.bias", "2.bias"):  # fine roles keep their own rule
        assert f.entry(name)["step"] == f_off.entry(name)["step"]


def test_constant_fine_tensors_decode_exactly_in_a_few_bytes(tmp_path):
    """A constant tensor in a fine role (a fresh LayerNorm's ones and zeros, a constant bias, in any
    float dtype) gets step |c| (1 for zeros): levels all 1/-1/0, c exactly, a few bytes whatever its
    size (at step spread/256 every level was 256: ~9 bits per value)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 4096), torch.nn.LayerNorm(4096), torch.nn.Linear(4096, 4))
    with torch.no_grad():
        model[2].bias.fill_(-0.37)
    path = tmp_path / "m.nnp"
    nnpress.compress(model, path)
    f, out = nnpress.NnpFile(path), nnpress.decompress(path)
    for name, c in (("1.weight", 1.0), ("1.bias", 0.0), ("2.bias", -0.37)):
        e = f.entry(name)
        assert e["role"] in ("norm", "bias") and e["storage"] == "quantized" and e["method"] == "nearest"
        assert e["step"] == (abs(float(np.float32(c))) or 1.0), name
        assert torch.equal(out[name], model.state_dict()[name]), name
        assert 8 * e["stored_bytes"] / e["count"] < 0.2 or e["count"] < 100, (name, e["stored_bytes"])
    assert 8 * f.entry("1.weight")["stored_bytes"] / 4096 < 0.2
    # every float dtype; a negative constant; a tiny one; a 2-D fine tensor under channel scales
    # derived from an importance that varies by row (they are for rules 1-4 only: c stays exact)
    imp = np.repeat(np.logspace(-3, 3, 64), 32).reshape(64, 32).astype(np.float32)
    sd = {
        "a.bias": torch.full((3000,), 0.1, dtype=torch.bfloat16),
        "b.bias": torch.full((3000,), -2.5, dtype=torch.float16),
        "c.bias": torch.full((3000,), 1e-30, dtype=torch.float64),
        "d.weight": torch.full((64, 32), 0.7),
        "e.weight": torch.randn(64, 32),
    }
    cfg = CodecConfig(fine_roles=("bias", "norm", "weight"), channel_scales=True)
    path = tmp_path / "d.nnp"
    nnpress.compress(sd, path, cfg, importance={"d.weight": imp, "e.weight": imp})
    f, out = nnpress.NnpFile(path), nnpress.decompress(path)
    for name in ("a.bias", "b.bias", "c.bias", "d.weight"):
        assert out[name].dtype == sd[name].dtype and torch.equal(out[name], sd[name]), name
        assert f.entry(name)["stored_bytes"] < 64, (name, f.entry(name)["stored_bytes"])
    # not constant: the fine rule's step; a plan's channel scales keep the spread step too
    v = sd["e.weight"].numpy()
    assert cfg.resolve("e.weight", "weight", "float32", v).step == pytest.approx(spread_of(v) / 256)
    ones = np.ones(8, np.float32)
    p = CodecConfig(plan={"n.weight": {"row_scale_exp": [0]}})
    assert p.resolve("n.weight", "norm", "float32", ones).step == 1 / 256
    assert CodecConfig().resolve("n.weight", "norm", "float32", ones).step == 1.0
    assert CodecConfig(step=0.01).resolve("n.weight", "norm", "float32", -ones).step == 1.0
    assert CodecConfig().resolve("n.bias", "norm", "float32", np.zeros(8, np.float32)).step == 1.0
