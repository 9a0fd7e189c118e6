"""load_task on what users hold: torch modules and TorchScript files with tensor files or batches,
the split, the metrics on uneven batches, and the errors for bad input (no transformers needed
here; the Hugging Face folders are in test_calibration_hf.py)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnpress.calibration import CalibrationError, Task, parse_budget  # noqa: E402
from nnpress.sources import load_task, read_texts, split_indices  # noqa: E402


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


# ---------------------------------------------------------------- the split


def test_split_is_deterministic_disjoint_and_complete():
    fit, held, info = split_indices(20, 0.25, seed=3)
    fit2, held2, _ = split_indices(20, 0.25, seed=3)
    assert (fit == fit2).all() and (held == held2).all()
    assert len(held) == 5 and len(fit) == 15
    assert set(fit).isdisjoint(held) and set(fit) | set(held) == set(range(20))
    assert list(held) == sorted(held) and list(fit) == sorted(fit)  # both parts in file order
    _, held3, _ = split_indices(20, 0.25, seed=4)
    assert set(held3) != set(held)
    assert info == {**info, "samples": 20, "fit": 15, "heldout": 5, "seed": 3}
    assert "permutation" in info["rule"]


def test_split_counts_and_limits():
    assert len(split_indices(10, 3, 0)[1]) == 3
    assert len(split_indices(10, 0.01, 0)[1]) == 1  # a fraction holds out at least one sample
    with pytest.raises(CalibrationError, match=r"too few calibration samples"):
        split_indices(1, 0.5, 0)
    with pytest.raises(CalibrationError, match=r"too few"):
        split_indices(5, 5, 0)
    with pytest.raises(ValueError, match=r"fraction"):
        split_indices(10, 1.5, 0)
    with pytest.raises(TypeError):
        split_indices(10, True, 0)


# ---------------------------------------------------------------- modules and tensor files


def test_module_with_npz_labels(tmp_path):
    x, y = _data()
    path = tmp_path / "cal.npz"
    np.savez(path, x=x.numpy().astype(np.float64), y=y.numpy())  # float64 inputs run as float32
    model = _mlp()
    task = load_task(model, str(path), heldout=10, batch_size=4, seed=1)
    assert task.kind == "module" and task.fisher_output == "classifier"
    assert task.split["heldout"] == 10 and task.split["fit"] == 30 and task.split["unit"] == "examples"
    assert task.split["available"] == 40
    capped = load_task(model, str(path), max_samples=20, heldout=5)
    assert capped.split["samples"] == 20 and capped.split["available"] == 40
    assert torch.equal(torch.cat([b[0] for b in capped.fit + capped.heldout]).sort(0)[0], x[:20].sort(0)[0])
    assert sum(b[0].shape[0] for b in task.heldout) == 10
    assert sum(b[0].shape[0] for b in task.fit) == 30
    assert "accuracy_drop" in task.metrics
    _, held, _ = split_indices(40, 10, 1)
    assert torch.equal(torch.cat([b[0] for b in task.heldout]), x[torch.as_tensor(held)])
    assert torch.equal(torch.cat(task.labels), y[torch.as_tensor(held)])
    m = task.evaluate(None)
    assert m["kl"] == 0 and m["top1"] == 1 and m["accuracy_drop"] == 0 and m["rel_error"] == 0


def test_evaluate_loads_a_state_and_restores_the_model():
    x, y = _data()
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = load_task(model, {"x": x, "y": y})
    noisy = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    m = task.evaluate({k: v.numpy() for k, v in noisy.items()})
    assert m["rel_error"] > 0 and m["kl"] > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert task.evaluate(None)["rel_error"] == 0
    with pytest.raises(KeyError, match=r"no tensor named"):
        task.evaluate({"nope": np.zeros(3)})


def test_torchscript_file_and_pt_tensor(tmp_path):
    x, _ = _data(12)
    ts = tmp_path / "model.pt"
    torch.jit.script(_mlp()).save(str(ts))
    data = tmp_path / "x.pt"
    torch.save(x, data)
    task = load_task(str(ts), str(data), heldout=0.25)
    assert task.kind == "module" and task.fisher_output == "gaussian" and task.labels is None
    assert task.split["heldout"] == 3 and "TorchScript" in task.source
    assert task.metrics[0] == "rel_error" and "accuracy_drop" not in task.metrics
    assert task.evaluate(None)["cos_min"] > 0.999999


def test_iterable_of_batches_split_by_example_or_by_batch():
    x, y = _data(32)
    model = _mlp()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    task = load_task(model, batches, heldout=8)
    assert task.split["unit"] == "examples" and task.split["heldout"] == 8
    uneven = [{"input": x[:5]}, {"input": x[5:12]}, {"input": x[12:20]}]  # dict batches: split by batch
    task2 = load_task(model, uneven, heldout=1)
    assert task2.split["unit"] == "batches" and len(task2.heldout) == 1 and len(task2.fit) == 2


def test_metrics_on_batches_of_different_shapes():
    ref = [torch.randn(2, 5, 7), torch.randn(1, 3, 7)]
    out = [r + 0.01 for r in ref]
    task_like = {m: parse_budget(f"{m}=0") for m in ("kl", "cos_mean", "rel_error")}
    from nnpress.calibration import METRICS

    for m in task_like:
        v = METRICS[m].fn(ref, out, None)
        assert np.isfinite(v)
    num = sum(float((o - r).square().sum()) for r, o in zip(ref, out))
    den = sum(float(r.square().sum()) for r in ref)
    assert METRICS["rel_error"].fn(ref, out, None) == pytest.approx((num / den) ** 0.5)


def test_inputs_and_labels_as_a_pair():
    """compress(calibration=(x, y)) means inputs and labels, as in a tensor file with x and y."""
    x, y = _data(32)
    task = load_task(_mlp(), (x, y), heldout=8)
    assert task.split["unit"] == "examples" and task.split["heldout"] == 8 and task.labels is not None
    assert "accuracy_drop" in task.metrics
    two_batches = (x[:16], x[16:])  # two input batches are inputs only
    assert load_task(_mlp(), two_batches, heldout=4).labels is None


def test_standard_errors_of_per_sample_means():
    """evaluate(standard_errors=True) gives the standard error of the held-out mean of the metrics
    that are means over samples, computed by hand here; none for the others."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    model.eval()
    heldout = [torch.randn(5, 6), torch.randn(3, 6)]
    task = Task(model=model, kind="module", fit=[torch.randn(4, 6)], heldout=heldout, output_fn=lambda o: o)
    w = model.weight.detach().numpy()
    state = {"weight": w + 0.05 * np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype)}
    metrics, errors = task.evaluate(state, standard_errors=True)
    assert metrics == task.evaluate(state)
    assert set(errors) == {"cos_mean", "kl", "top1"}
    with torch.no_grad():
        ref = torch.cat([model(x) for x in heldout]).double()
        out = torch.cat([torch.nn.functional.linear(x, torch.as_tensor(state["weight"]), model.bias) for x in heldout])
    cos = torch.nn.functional.cosine_similarity(ref, out.double(), dim=1).numpy()
    assert metrics["cos_mean"] == pytest.approx(cos.mean())
    assert errors["cos_mean"] == pytest.approx(cos.std(ddof=1) / np.sqrt(cos.size), rel=1e-9)
    p, q = torch.log_softmax(ref, -1), torch.log_softmax(out.double(), -1)
    kl = (p.exp() * (p - q)).sum(-1).numpy()
    assert errors["kl"] == pytest.approx(kl.std(ddof=1) / np.sqrt(kl.size), rel=1e-9)


def test_task_state_dict_and_file_names_follow_names():
    model = _mlp()
    x, _ = _data()
    task = Task(
        model=model,
        kind="module",
        fit=[x[:8]],
        heldout=[x[8:16]],
        output_fn=lambda o: o,
        names={"0.weight": "enc.w", "0.bias": "enc.b"},
        dtypes={"enc.w": "float16"},
        extra={"old.position_ids": torch.arange(4)},
    )
    sd = task.state_dict()
    assert list(sd) == ["enc.w", "enc.b", "2.weight", "2.bias", "old.position_ids"]
    assert sd["enc.w"].dtype == torch.float16 and sd["enc.b"].dtype == torch.float32
    assert set(task.file_names({"0.weight": 1, "2.bias": 2})) == {"enc.w", "2.bias"}
    noisy = {k: (v.float() + 0.1 if k == "enc.w" else v) for k, v in sd.items()}
    assert task.evaluate(noisy)["rel_error"] > 0  # set through the file name
    assert task.evaluate(None)["rel_error"] == 0


# ---------------------------------------------------------------- bad input: clear errors


def test_bad_calibration_input_errors(tmp_path):
    model = _mlp()
    x, y = _data()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 5), np.float32))  # 5 features for a model of 8
    with pytest.raises(CalibrationError, match=r"does not fit the model"):
        load_task(model, str(wrong))
    csv = tmp_path / "cal.csv"
    csv.write_text("1,2,3\n")
    with pytest.raises(CalibrationError, match=r"unknown calibration file type '.csv'"):
        load_task(model, str(csv))
    txt = tmp_path / "cal.txt"
    txt.write_text("some text\nmore text\n")
    with pytest.raises(CalibrationError, match=r"needs a model with a tokenizer"):
        load_task(model, str(txt))
    one = tmp_path / "one.npy"
    np.save(one, np.zeros((1, 8), np.float32))
    with pytest.raises(CalibrationError, match=r"too few calibration samples"):
        load_task(model, str(one))
    with pytest.raises(CalibrationError, match=r"labels up to 9 do not fit"):
        load_task(model, {"x": x, "y": y * 0 + 9})
    with pytest.raises(CalibrationError, match=r"not a tensor or array|must be a tensor"):
        load_task(model, {"x": "text"})
    with pytest.raises(FileNotFoundError):
        load_task(model, str(tmp_path / "missing.npy"))
    st = tmp_path / "w.safetensors"
    st.write_bytes(b"\0" * 16)
    with pytest.raises(CalibrationError, match=r"holds only weights"):
        load_task(str(st), str(wrong))
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    with pytest.raises(CalibrationError, match=r"not a TorchScript model"):
        load_task(str(sd), str(wrong))
    with pytest.raises(CalibrationError, match=r"kind 'module'"):
        load_task(model, {"x": x}, kind="causal-lm")


def test_metric_that_does_not_apply():
    x, _ = _data()
    task = load_task(_mlp(), {"x": x})
    with pytest.raises(CalibrationError, match=r"'accuracy_drop' does not apply to a module task without labels"):
        task.check_budget(parse_budget("accuracy_drop=0.2"))


def test_read_texts_files(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("one\n\n  \ntwo\nthree\n", encoding="utf-8")
    assert read_texts(p) == (["one", "two", "three"], None)
    j = tmp_path / "a.jsonl"
    j.write_text("\n".join(json.dumps({"sentence": s, "label": i}) for i, s in enumerate("abc")))
    assert read_texts(j, text_field="sentence") == (["a", "b", "c"], [0, 1, 2])
    with pytest.raises(CalibrationError, match=r"no text field 'text' .*fields: sentence, label"):
        read_texts(j)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(CalibrationError, match=r"holds no text"):
        read_texts(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(CalibrationError, match=r"bad.jsonl:2: not a JSON object"):
        read_texts(bad)
    partial = tmp_path / "partial.jsonl"
    partial.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(CalibrationError, match=r"1 of 2 samples lack the label field"):
        read_texts(partial)


def test_pooling_modes_and_sentence_transformers_layout(tmp_path):
    from nnpress.sources import _pool, _st_layout

    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(_pool(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(_pool(hidden, mask, "mean")[0], hidden[0, :2].mean(0))  # padding left out
    assert torch.equal(_pool(hidden, mask, "max")[0], hidden[0, 1])
    assert torch.allclose(_pool(hidden, mask, "mean_sqrt_len")[1], hidden[1].sum(0) / 3**0.5)
    assert _st_layout(str(tmp_path)) is None
    (tmp_path / "0_Transformer").mkdir()
    (tmp_path / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    modules = [
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    layout = _st_layout(str(tmp_path))
    assert layout == {
        "path": str(tmp_path / "0_Transformer"),
        "pooling": "cls",
        "normalize": False,
        "max_length": 128,
    }
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CalibrationError, match=r"module type .*Dense.* is not supported from a folder"):
        _st_layout(str(tmp_path))


def test_regression_targets_are_not_labels():
    x, _ = _data()
    task = load_task(_mlp(), {"x": x, "y": torch.randn(40)}, heldout=5.0)  # 5.0: a count
    assert task.labels is None and "accuracy_drop" not in task.metrics
    assert task.split["labels"] == "ignored: not class indices" and task.split["heldout"] == 5


def test_match_names_by_value_prefers_the_same_path(tmp_path):
    """Module tensors whose checkpoint names changed are matched by equal values; among equal
    candidates (freshly initialised norms) the one sharing the longest dotted prefix wins, whatever
    the two orders."""
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from nnpress.sources import _Checkpoint, match_names

    model = torch.nn.Module()
    model.b = torch.nn.Module()
    model.b.norm = torch.nn.LayerNorm(4)
    model.a = torch.nn.Module()
    model.a.norm = torch.nn.LayerNorm(4)
    tensors = {
        "a.norm.gamma": torch.ones(4),
        "a.norm.beta": torch.zeros(4),
        "b.norm.gamma": torch.ones(4),
        "b.norm.beta": torch.zeros(4),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    names, extra, dtypes = match_names(model, _Checkpoint(str(tmp_path)), prefix="m.")
    assert names == {
        "m.a.norm.weight": "a.norm.gamma",
        "m.a.norm.bias": "a.norm.beta",
        "m.b.norm.weight": "b.norm.gamma",
        "m.b.norm.bias": "b.norm.beta",
    }
    assert extra == {} and dtypes == {}
    with torch.no_grad():
        model.a.norm.weight.fill_(2.0)  # no checkpoint tensor holds these values: a random parameter
    with pytest.raises(CalibrationError, match=r"holds no values for 1 parameter"):
        match_names(model, _Checkpoint(str(tmp_path)))
