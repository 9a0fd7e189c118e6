"""Pruning to a target sparsity (nnpress.prune, CodecConfig(prune=...)) and the lazy torch names."""

import subprocess
import sys

import numpy as np
import pytest

import nnpress
from nnpress.prune import prune_array, saliency


def test_prune_array_exact_count_and_smallest_magnitudes():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 25)).astype(np.float32)
    for s in (0.0, 0.1, 0.5, 0.9, 0.999):
        p = prune_array(w, s)
        k = int(np.floor(s * w.size))
        zeroed = (p == 0) & (w != 0)
        assert zeroed.sum() == k
        assert np.array_equal(p[~zeroed], w[~zeroed])  # survivors untouched, bit for bit
        if 0 < k < w.size:
            assert np.abs(w[zeroed]).max() <= np.abs(w[~zeroed]).min()
    assert np.count_nonzero(w) == w.size  # input not modified


def test_fisher_saliency_keeps_small_but_sensitive_weights():
    w = np.array([[0.01, 1.0, -2.0, 0.5]], np.float32)
    f = np.array([[1e6, 1.0, 1.0, 1.0]])
    assert np.array_equal(saliency(w, f), f * w.astype(np.float64) ** 2)
    p = prune_array(w, 0.5, f)  # saliencies 100, 1, 4, 0.25: drop 0.5 and 1.0, keep the tiny 0.01
    assert p.tolist() == [[np.float32(0.01), 0.0, -2.0, 0.0]]
    assert prune_array(w, 0.5).tolist() == [[0.0, 1.0, -2.0, 0.0]]  # magnitude drops the tiny one


def test_ties_are_deterministic_and_exact():
    w = np.ones((10, 10), np.float64)
    p = prune_array(w, 0.37)
    assert (p == 0).sum() == 37 and np.array_equal(np.flatnonzero(p.ravel() == 0), np.arange(37))


def test_prune_state_dict_tensor_and_global_scope():
    rng = np.random.default_rng(1)
    sd = {
        "a.weight": rng.standard_normal((30, 20)).astype(np.float32),
        "b.weight": 0.01 * rng.standard_normal((50, 10)).astype(np.float32),
        "a.bias": rng.standard_normal(20).astype(np.float32),
    }
    t = nnpress.prune(sd, 0.5)
    assert t["a.bias"] is sd["a.bias"]
    assert (t["a.weight"] == 0).sum() == 300 and (t["b.weight"] == 0).sum() == 250
    g = nnpress.prune(sd, 0.5, scope="global")
    # one threshold: the small-valued tensor loses almost everything, the large one little
    assert (g["a.weight"] == 0).sum() + (g["b.weight"] == 0).sum() == 550
    assert (g["b.weight"] == 0).sum() == 500 and (g["a.weight"] == 0).sum() == 50
    assert nnpress.sparsity_of(g) == pytest.approx(550 / 1100)
    imp = {"a.weight": np.full((30, 20), 1e-6), "b.weight": np.ones((50, 10))}
    gi = nnpress.prune(sd, 0.5, importance=imp, scope="global")
    assert (gi["a.weight"] == 0).sum() > (gi["b.weight"] == 0).sum()  # Fisher moves the zeros
    with pytest.raises(ValueError, match="every selected tensor or for none"):
        nnpress.prune(sd, 0.5, importance={"a.weight": imp["a.weight"]}, scope="global")


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), 2])
def test_bad_sparsity_rejected(bad):
    with pytest.raises(ValueError):
        prune_array(np.ones(4, np.float32), bad)
    with pytest.raises(ValueError):
        nnpress.CodecConfig(prune=bad)


def test_bad_arguments():
    w = {"w": np.ones((2, 2), np.float32)}
    with pytest.raises(TypeError):
        nnpress.prune(w, "0.5")
    with pytest.raises(ValueError, match="scope"):
        nnpress.prune(w, 0.5, scope="layer")
    with pytest.raises(KeyError):
        nnpress.prune(w, 0.5, names=["nope"])
    with pytest.raises(KeyError):
        nnpress.prune(w, 0.5, importance={"nope": np.ones((2, 2))})
    with pytest.raises(ValueError, match="does not match"):
        nnpress.prune(w, 0.5, importance={"w": np.ones(3)})
    with pytest.raises(ValueError, match=">= 0"):
        nnpress.prune(w, 0.5, importance={"w": -np.ones((2, 2))})


@pytest.mark.parametrize("method", ["nearest", "rdoq", "trellis"])
def test_compress_with_prune_zeroes_the_pruned_weights(tmp_path, method):
    rng = np.random.default_rng(2)
    sd = {
        "fc.weight": rng.standard_normal((64, 48)).astype(np.float32),
        "fc.bias": rng.standard_normal(64).astype(np.float32),
    }
    imp = {"fc.weight": rng.uniform(0.1, 10, (64, 48))}
    base = nnpress.compress(sd, tmp_path / "a.nnp", nnpress.CodecConfig(method=method))
    rep = nnpress.compress(sd, tmp_path / "b.nnp", nnpress.CodecConfig(method=method, prune=0.6), importance=imp)
    out = nnpress.decompress(tmp_path / "b.nnp", as_numpy=True)
    pruned = nnpress.prune(sd, 0.6, importance=imp)["fc.weight"] == 0
    assert np.all(out["fc.weight"][pruned] == 0)
    # the bias (a fine role: near-lossless by default) is not pruned
    step = nnpress.NnpFile(tmp_path / "b.nnp").entry("fc.bias")["step"]
    assert np.abs(out["fc.bias"] - sd["fc.bias"]).max() <= 0.5 * step * (1 + 1e-5)
    assert rep.file_bytes < 0.7 * base.file_bytes
    # the reported error is against the original (unpruned) weights
    t = {r.name: r for r in rep.tensors}["fc.weight"]
    ref = np.linalg.norm(sd["fc.weight"] - np.where(pruned, 0, sd["fc.weight"])) / np.linalg.norm(sd["fc.weight"])
    assert t.rel_error >= 0.9 * ref


def test_quantizers_keep_exact_zeros():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((64, 200)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    for method in ("nearest", "rdoq", "trellis"):
        for lam in (0.0, 0.5):
            q = nnpress.quantize(w, 0.05, lam=lam if method != "nearest" else 0.0, method=method)
            assert np.all(q[w == 0] == 0), (method, lam)


def test_cli_prune(tmp_path):
    import safetensors.numpy as safetensors  # a test requirement (installed in CI)

    rng = np.random.default_rng(3)
    src = tmp_path / "m.safetensors"
    safetensors.save_file({"w": rng.standard_normal((32, 32)).astype(np.float32)}, str(src))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnpress.cli",
            "compress",
            str(src),
            str(tmp_path / "m.nnp"),
            "--prune",
            "0.75",
            "--method",
            "nearest",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out = nnpress.decompress(tmp_path / "m.nnp", as_numpy=True)["w"]
    assert (out == 0).sum() >= 768


def test_torch_names_are_lazy():
    code = (
        "import sys, nnpress; assert 'torch' not in sys.modules; "
        "f = nnpress.fisher_diagonal; "
        "from nnpress.fisher import fisher_diagonal; assert f is fisher_diagonal; "
        "assert nnpress.probe_sensitivity.__name__ == 'probe_sensitivity'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        nnpress.no_such_name  # noqa: B018
