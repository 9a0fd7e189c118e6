"""Every Python example in README.md runs as written, in order, on the digits CNN, and what it
produces is a working model (a copied snippet must never give a silently broken one).

The README's examples name the user's objects (``model``, ``calibration_batches``, ``weights``,
``evaluate``, ``w``, ``step``, ``W``, ``x``); this test defines exactly those and nothing else."""

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _cosine(a, b) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


@pytest.fixture(scope="module")
def user_objects():
    from nnpress.demo_models import build_digits_model, calibration_batches, load_digits_data, train_digits_model

    model = train_digits_model("cnn", seed=0)
    data = load_digits_data()
    x_test = torch.from_numpy(np.ascontiguousarray(data.x_test, dtype=np.float32))
    with torch.no_grad():
        reference = model(x_test).numpy()

    def logits(state) -> np.ndarray:
        m = build_digits_model("cnn")
        m.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
        m.eval()
        with torch.no_grad():
            return m(x_test).numpy()

    def evaluate(state) -> float:  # mean cosine of the logits on the test images
        return _cosine(logits(state), reference)

    rng = np.random.default_rng(0)
    W = (rng.standard_normal((64, 128)) * (rng.random((64, 128)) < 0.1)).astype(np.float32)
    W = np.round(W * 4) / 4
    ns = {
        "model": model,
        "model_or_state_dict_or_path": model,
        "calibration_batches": calibration_batches(n_batches=4, batch_size=64, data=data),
        "weights": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
        "evaluate": evaluate,
        "w": (rng.standard_normal((32, 48)) * 0.1).astype(np.float32),
        "step": 0.01,
        "W": W,
        "x": rng.standard_normal(128).astype(np.float32),
    }
    return ns, logits, reference


def test_readme_examples_run_as_written(tmp_path, monkeypatch, user_objects):
    import nnpress

    ns, logits, reference = user_objects
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 5
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
        except Exception as e:  # name the block in the failure
            raise AssertionError(f"README python block {i + 1} failed: {type(e).__name__}: {e}\n{code}") from e
        if "model.nnp" in code:
            # whatever the block wrote decodes to a model that still works
            state = nnpress.decompress("model.nnp", as_numpy=True)
            cos = _cosine(logits(state), reference)
            assert cos > 0.99, f"README python block {i + 1} wrote a model with logit cosine {cos:.4f}"
    # what the blocks promise
    assert ns["report"].file_bytes > 0  # (model.nnp was rewritten by the later blocks)
    assert ns["res"].met_budget and ns["res"].metric >= 0.999
    np.testing.assert_array_equal(nnpress.decode_levels(ns["data"]), ns["levels"])
    y = ns["M"] @ ns["x"]
    np.testing.assert_allclose(y, ns["W"] @ ns["x"], rtol=1e-5, atol=1e-5)
    x_img = torch.from_numpy(np.zeros((2, 1, 8, 8), np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(ns["fast"](x_img).numpy(), ns["model"](x_img).numpy(), rtol=1e-4, atol=1e-4)
