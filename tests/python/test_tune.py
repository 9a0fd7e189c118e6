"""Step allocation and tuning to a budget (nnpress.tune) on real weights: the digits CNN."""

import math

import numpy as np
import pytest

import nnpress
from nnpress import tune
from nnpress.config import TRELLIS_STEP_RATIO, spread_of


@pytest.fixture(scope="module")
def cnn():
    from nnpress.demo_models import evaluate_accuracy, load_digits_data, train_digits_model

    model = train_digits_model("cnn", seed=0)
    data = load_digits_data()
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return model, data, weights, evaluate_accuracy


def test_steps_follow_inverse_sqrt_sensitivity():
    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal((8, 8)), "b": rng.standard_normal((8, 8)), "bias": rng.standard_normal(8)}
    plan = tune.allocate_steps(w, 0.01, {"a": 1.0, "b": 4.0}, method="nearest")
    assert set(plan) == {"a", "b"}  # 1-D tensors stay exact
    assert math.isclose(plan["a"].step / plan["b"].step, 2.0, rel_tol=1e-9)
    assert math.isclose(math.sqrt(plan["a"].step * plan["b"].step), 0.01, rel_tol=1e-9)
    t = tune.allocate_steps(w, 0.01, {"a": 1.0, "b": 4.0}, method="trellis")
    assert math.isclose(t["a"].step, plan["a"].step * TRELLIS_STEP_RATIO)
    assert t["a"].lam > 0


def test_unused_tensor_costs_almost_nothing():
    rng = np.random.default_rng(1)
    w = {"used": rng.standard_normal((64, 64)) * 0.1, "unused": rng.standard_normal((64, 64)) * 0.1}
    plan = tune.allocate_steps(w, 0.01, {"used": 1.0, "unused": 0.0}, method="rdoq")
    levels, _, bits = tune.apply_plan(w, plan)
    assert np.count_nonzero(levels["unused"]) < 0.01 * levels["unused"].size
    assert bits["unused"] < 0.02 * bits["used"]


def test_plan_reconstruction_is_what_the_decoder_makes():
    rng = np.random.default_rng(2)
    w = {"w": (rng.standard_normal((32, 48)) * 0.05).astype(np.float32)}
    for method in ("nearest", "rdoq", "trellis"):
        plan = tune.allocate_steps(w, 0.004, None, method=method)
        levels, recon, _ = tune.apply_plan(w, plan)
        q = nnpress.decode_levels(nnpress.encode_levels(levels["w"]))
        np.testing.assert_array_equal(nnpress.dequantize(q, plan["w"].step, method=method), recon["w"])


def test_bad_arguments():
    w = {"w": np.ones((2, 2), np.float32)}
    with pytest.raises(ValueError):
        tune.allocate_steps(w, 0.0)
    with pytest.raises(ValueError):
        tune.allocate_steps(w, 0.1, method="bogus")


def test_tune_to_budget_on_digits_cnn(cnn):
    import torch

    model, data, weights, evaluate_accuracy = cnn
    base = evaluate_accuracy(model, data.x_test, data.y_test)

    def evaluate(state):
        m = type(model)()
        m.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        m.eval()
        return evaluate_accuracy(m, data.x_test, data.y_test)

    res = tune.tune_to_budget(weights, evaluate, base - 0.002, method="rdoq", iterations=6)
    assert res.met_budget and res.metric >= base - 0.002
    assert len(res.rows) >= 3 and "bits/param" in res.table()
    ok_bits = [r["bits_per_param"] for r in res.rows if r["ok"]]
    assert res.bits_per_param == min(ok_bits)
    # the search found something much smaller than float32 (and smaller than its finest point)
    assert res.bits_per_param < 8 and res.bits_per_param < res.rows[0]["bits_per_param"]
    # the chosen plan really meets the budget when re-applied
    _, recon, _ = tune.apply_plan(weights, res.plan)
    assert evaluate({k: recon.get(k, v) for k, v in weights.items()}) >= base - 0.002


def test_fisher_sensitivities(cnn):
    from nnpress.demo_models import calibration_batches
    from nnpress.fisher import fisher_diagonal

    model, _, weights, _ = cnn
    F = fisher_diagonal(model, calibration_batches(4, 64), mode="sampled")
    sens, imp = tune.sensitivities_from_fisher(F)
    assert set(sens) == set(dict(model.named_parameters()))
    assert all(v >= 0 for v in sens.values())
    for name, a in imp.items():
        assert a.shape == weights[name].shape and abs(float(a.mean()) - 1.0) < 1e-3
    sm = tune.smooth_importance(imp)
    assert all(a.min() >= 0.1 - 1e-7 for a in sm.values())
    plan = tune.allocate_steps(weights, 0.01, sens)
    levels, _, _ = tune.apply_plan(weights, plan, sm)
    assert set(levels) == set(plan)


def test_probe_sensitivities_find_unused_layer():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model
            self.unused = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.body(x)

    m = TwoHeads()
    s = tune.probe_sensitivities(m, torch.randn(32, 8))
    assert s["unused.weight"] == 0.0
    assert s["body.0.weight"] > 0 and s["body.2.weight"] > 0


def test_size_sensitivities_give_steps_proportional_to_spread_sqrt_size():
    rng = np.random.default_rng(3)
    w = {
        "big": rng.standard_normal((400, 100)).astype(np.float32) * 0.05,
        "small": rng.standard_normal((10, 40)).astype(np.float32) * 0.2,
        "zero": np.zeros((4, 4), np.float32),
        "bias": np.ones(7, np.float32),
    }
    s = tune.size_sensitivities(w)
    assert set(s) == {"big", "small", "zero"} and s["zero"] == 0.0
    assert s["big"] == pytest.approx(1 / (40000 * spread_of(w["big"]) ** 2))  # the default's spread
    plan = tune.allocate_steps(w, 0.01, s, method="nearest", names=["big", "small"])
    ratio = plan["big"].step / plan["small"].step
    want = (spread_of(w["big"]) * 200) / (spread_of(w["small"]) * 20)
    assert ratio == pytest.approx(want, rel=1e-6)
