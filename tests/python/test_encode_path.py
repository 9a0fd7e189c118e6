"""The one encode path: what the tuner scores is what the file holds, and the typed writer inputs."""

import warnings

import numpy as np
import pytest

import nnpress
from nnpress import _core, tune
from nnpress.config import DEFAULT_BLOCK_ELEMENTS, CodecConfig, TensorPlan
from nnpress.container import NnpFile, TensorRecord, nnp_bytes


def _model(seed=0):
    """A tensor above 2**18 elements (several row blocks), a small one, a bias and a tied pair."""
    rng = np.random.default_rng(seed)
    big = (rng.standard_normal((700, 512)) * 0.05).astype(np.float32)
    assert big.size > DEFAULT_BLOCK_ELEMENTS
    small = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)
    return {"big.weight": big, "small.weight": small, "small.bias": np.zeros(64, np.float32), "tied.weight": big}


@pytest.mark.parametrize("method", ["trellis", "rdoq", "nearest"])
def test_tuner_scores_the_levels_and_bytes_the_file_holds(tmp_path, method):
    weights = _model()
    x = np.random.default_rng(1).standard_normal((16, 512)).astype(np.float32)
    ref = np.tanh(x @ weights["big.weight"].T)
    seen = []

    def evaluate(state):
        out = np.tanh(x @ state["big.weight"].T)
        seen.append({n: np.array(v, copy=True) for n, v in state.items()})
        return float(np.sum(out * ref) / np.linalg.norm(out) / np.linalg.norm(ref))

    res = tune.tune_to_budget(weights, evaluate, 0.999, method=method, iterations=4)
    assert res.met_budget and res.config is not None
    chosen = seen[next(i for i, r in enumerate(res.rows) if r["step"] == res.step)]

    path = tmp_path / "tuned.nnp"
    rep = nnpress.compress(weights, path, res.config)
    n_params = sum(w.size for w in weights.values())
    # the size the tuner reports is the file's size, header and exact tensors included
    assert rep.file_bytes == path.stat().st_size
    assert res.bits_per_param == pytest.approx(8.0 * rep.file_bytes / n_params, rel=0, abs=1e-12)
    # the metric was measured on exactly what the file decodes to
    f = NnpFile(path)
    decoded = nnpress.decompress(path, as_numpy=True)
    for name in weights:
        np.testing.assert_array_equal(decoded[name], chosen[name], err_msg=name)
    # and apply_plan's levels are the file's levels, row blocks and all
    levels, recon, bits = tune.apply_plan(weights, res.plan)
    assert f.entry("big.weight")["chunks"] > 1
    for name in res.plan:
        np.testing.assert_array_equal(levels[name], f.read_levels(name), err_msg=name)
        np.testing.assert_array_equal(recon[name], decoded[name], err_msg=name)
        assert bits[name] == 8 * f.entry(name)["stored_bytes"]


def test_apply_plan_quantizes_with_the_files_row_blocks():
    """The trellis prices rate with contexts that restart at every row block: quantizing the big
    tensor as one block (what the tuner did before the one encode path) gives other levels."""
    weights = _model()
    w = weights["big.weight"]
    plan = {"big.weight": TensorPlan(step=0.02, method="trellis", lam=0.24 * 0.02**2)}
    levels, _, _ = tune.apply_plan(weights, plan)
    rpb = DEFAULT_BLOCK_ELEMENTS // w.shape[1]
    blocked = nnpress.quantize(w, 0.02, lam=0.24 * 0.02**2, method="trellis", rows_per_block=rpb)
    one_block = nnpress.quantize(w, 0.02, lam=0.24 * 0.02**2, method="trellis")
    np.testing.assert_array_equal(levels["big.weight"], blocked)
    assert not np.array_equal(blocked, one_block)


def test_the_config_a_file_records_reads_back(tmp_path):
    cfg = CodecConfig(rel_step=1 / 20, plan={"small.weight": TensorPlan(step=0.01)})
    nnpress.compress(_model(), tmp_path / "m.nnp", cfg)
    back = CodecConfig.from_dict(NnpFile(tmp_path / "m.nnp").metadata["config"])
    assert back == cfg.replace(plan={})  # the plan's entries are in the tensor table, not the metadata


def test_scaled_outliers_beyond_the_level_range_are_stored_exactly(tmp_path):
    """With channel scales the level limit applies to each weight's own step: a tensor whose scaled
    steps put a weight beyond 2**30 levels is stored exactly (not an error), naming nothing wrong."""
    w = _model()["small.weight"]
    plan = {"small.weight": TensorPlan(step=1e-5, row_scale_exp=tuple([-128] * w.shape[0]))}
    rep = nnpress.compress({"small.weight": w}, tmp_path / "m.nnp", CodecConfig(plan=plan))
    assert rep.tensors[0].storage == "raw"
    np.testing.assert_array_equal(nnpress.decompress(tmp_path / "m.nnp", as_numpy=True)["small.weight"], w)
    # without the scales the same step is fine
    rep = nnpress.compress({"small.weight": w}, tmp_path / "n.nnp", CodecConfig(plan={"small.weight": {"step": 1e-5}}))
    assert rep.tensors[0].storage == "quantized"


def test_quantizer_errors_name_the_tensor(tmp_path):
    w = _model()["small.weight"]
    with pytest.raises(ValueError, match=r"'small\.weight'.*hessian"):
        nnpress.compress({"small.weight": w}, tmp_path / "m.nnp", hessians={"small.weight": np.eye(3)})


def test_compress_report_has_every_stage(tmp_path):
    rep = nnpress.compress(_model(), tmp_path / "m.nnp")
    assert set(rep.times) == {"load", "probe", "synthetic", "quantize", "encode", "write", "total"}
    assert all(v >= 0 for v in rep.times.values())


def test_plan_keys_that_match_nothing_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"match no tensor.*big\.wieght"):
        nnpress.compress(_model(), tmp_path / "m.nnp", CodecConfig(plan={"big.wieght": TensorPlan(step=0.1)}))
    with pytest.raises(ValueError, match=r"match no tensor.*encoder\.\*"):
        nnpress.compress(_model(), tmp_path / "m.nnp", CodecConfig(plan={"encoder.*": TensorPlan(step=0.1)}))
    assert not (tmp_path / "m.nnp").exists()
    # a pattern that matches is fine
    nnpress.compress(_model(), tmp_path / "m.nnp", CodecConfig(plan={"*.weight": TensorPlan(step=0.1)}))


def test_channel_scales_without_importance_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"channel_scales=True.*importance"):
        nnpress.compress(_model(), tmp_path / "m.nnp", CodecConfig(channel_scales=True))
    assert not (tmp_path / "m.nnp").exists()


def test_deprecated_names_still_work_and_warn(tmp_path):
    plan = {"small.weight": TensorPlan(step=0.01)}
    with pytest.warns(DeprecationWarning, match="plan="):
        old = CodecConfig(overrides=plan)
    assert old == CodecConfig(plan=plan)
    with pytest.warns(DeprecationWarning, match="CodecConfig.plan"):
        assert old.overrides == old.plan
    with pytest.warns(DeprecationWarning, match="plan="):
        assert CodecConfig().replace(overrides=plan) == CodecConfig(plan=plan)
    with pytest.raises(TypeError):
        CodecConfig(plan=plan, overrides=dict(plan))
    w = _model()["small.weight"]
    with pytest.warns(DeprecationWarning, match="rows_per_block"):
        a = nnpress.quantize(w, 0.01, method="trellis", lam=1e-5, chunk_rows=8)
    np.testing.assert_array_equal(a, nnpress.quantize(w, 0.01, method="trellis", lam=1e-5, rows_per_block=8))
    # lam_factor was relative to the plain step (twice the trellis step): same plan as lam_scale
    weights = _model()
    with pytest.warns(DeprecationWarning, match="lam_scale"):
        by_factor = tune.allocate_steps(weights, 0.02, method="trellis", lam_factor=0.05)
    assert by_factor == tune.allocate_steps(weights, 0.02, method="trellis", lam_scale=0.2)
    with pytest.warns(DeprecationWarning, match="DEFAULT_LAM_SCALE"):
        assert tune.DEFAULT_LAM_FACTOR == {"nearest": 0.0, "rdoq": 0.12, "trellis": 0.06}


def test_qp_in_a_tensor_plan():
    w = _model()["small.weight"]
    p = CodecConfig(plan={"x": TensorPlan(qp=-24)}).resolve("x", "weight", "float32", w)
    assert p.step == 2.0**-6
    with pytest.raises(ValueError, match="qp"):
        TensorPlan(qp=1.5)


def test_writer_inputs_are_typed_and_checked():
    levels = np.arange(12, dtype=np.int32).reshape(3, 4)
    t = _core.TensorInput(
        name="w",
        dtype=_core.DType.float32,
        role=_core.TensorRole.weight,
        storage=_core.Storage.quantized,
        shape=[3, 4],
        levels=levels,
        method=_core.QuantMethod.trellis,
        step=0.5,
    )
    assert (t.name, t.dtype, t.method, t.shape, t.unary_len) == (
        "w",
        _core.DType.float32,
        _core.QuantMethod.trellis,
        (3, 4),
        -1,
    )
    common = dict(
        name="w",
        dtype=_core.DType.float32,
        role=_core.TensorRole.weight,
        storage=_core.Storage.quantized,
        shape=[3, 4],
        step=0.5,
    )
    with pytest.raises(TypeError, match="int32"):
        _core.TensorInput(levels=levels.astype(np.int64), **common)
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.TensorInput(levels=np.asfortranarray(levels), **common)
    with pytest.raises(ValueError, match="shape"):
        _core.TensorInput(levels=levels[:2], **common)
    with pytest.raises(ValueError, match="shape"):  # same count, other shape: never silently reshaped
        _core.TensorInput(levels=np.ascontiguousarray(levels.reshape(4, 3)), **common)
    with pytest.raises(ValueError, match="row_scale_exp needs 3"):
        _core.TensorInput(levels=levels, row_scale_exp=np.zeros(4, np.int8), **common)
    with pytest.raises(TypeError):
        _core.TensorInput(levels=levels, method=2, **common)  # codes are enums, not ints
    # the writer validates the rest, in one place
    bad = _core.TensorInput(levels=levels, **dict(common, step=-1.0))
    with pytest.raises(ValueError, match="step"):
        _core.write_nnp([bad], _core.WriterOptions())
    # and the Python records name their bad fields
    with pytest.raises(ValueError, match="unknown method 'fancy'"):
        nnp_bytes([TensorRecord("w", "float32", "weight", "quantized", (3, 4), data=levels, method="fancy", step=1.0)])
    with pytest.raises(ValueError, match="unknown dtype"):
        nnp_bytes([TensorRecord("w", "float8", "weight", "raw", (3, 4), data=levels)])


def test_nnp_bytes_returns_a_file_the_reader_accepts(tmp_path):
    """nnp_bytes returns bytes the reader accepts, CRCs included, and the stored size per tensor."""
    data, stored = nnp_bytes([TensorRecord("w", "float32", "weight", "raw", (2, 2), data=np.ones((2, 2), np.float32))])
    f = NnpFile(data)
    f.verify()
    assert stored == [16]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(f.read("w"), np.ones((2, 2), np.float32))
