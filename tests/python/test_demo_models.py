"""Tests of nnpress.demo_models: data split, architectures, deterministic training, accuracy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from nnpress import demo_models
from nnpress.demo_models import (
    calibration_batches,
    evaluate_accuracy,
    load_digits_data,
    train_digits_model,
)


@pytest.fixture(scope="module")
def data():
    return load_digits_data()


@pytest.fixture(scope="module")
def cnn():
    return train_digits_model("cnn", seed=0)


def test_digits_split(data):
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert set(np.unique(data.y_test)) == set(range(10))
    # stratified: every class has 25 % +- 1 of its images in the test split
    counts_test = np.bincount(data.y_test, minlength=10)
    counts_all = counts_test + np.bincount(data.y_train, minlength=10)
    assert np.all(np.abs(counts_test - 0.25 * counts_all) <= 1)
    # no image is in both splits (the digits data set has no exact duplicates across the split)
    train_rows = {row.tobytes() for row in data.x_train.reshape(len(data.x_train), -1)}
    assert not any(row.tobytes() in train_rows for row in data.x_test.reshape(len(data.x_test), -1))
    again = load_digits_data()
    other = load_digits_data(seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(data, again))
    assert not np.array_equal(data.y_test, other.y_test)


def test_architectures():
    for name, n_params, n_conv in (("DigitsCNN", 42890, 2), ("DigitsMLP", 50826, 0)):
        model = getattr(demo_models, name)()
        assert isinstance(model, nn.Module)
        assert sum(p.numel() for p in model.parameters()) == n_params
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(convs) == n_conv and len(linears) == 3
        assert all(m.bias is not None for m in convs + linears)
        for shape in ((5, 1, 8, 8), (5, 64)):
            assert model(torch.zeros(shape)).shape == (5, 10)
    with pytest.raises(ValueError, match="kind"):
        demo_models.build_digits_model("rnn")


def test_cnn_accuracy_and_eval_mode(cnn, data):
    assert not cnn.training
    acc = evaluate_accuracy(cnn, data.x_test, data.y_test)
    assert acc >= 0.97
    assert not cnn.training
    # numpy and torch inputs agree; a model in train mode is put back in train mode
    cnn.train()
    try:
        assert evaluate_accuracy(cnn, torch.from_numpy(data.x_test), data.y_test) == acc
        assert cnn.training
    finally:
        cnn.eval()


def test_training_is_deterministic_and_leaves_global_state_alone():
    threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    once = train_digits_model("cnn", seed=3, epochs=4)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.get_rng_state(), rng_state)
    again = train_digits_model("cnn", seed=3, epochs=4)
    first, second = once.state_dict(), again.state_dict()
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_seed_and_kind_matter(cnn, data):
    mlp = train_digits_model("mlp", seed=0, epochs=15)
    assert evaluate_accuracy(mlp, data.x_test, data.y_test) >= 0.95
    other = train_digits_model("cnn", seed=1, epochs=1)
    assert not torch.equal(other.fc1.weight, cnn.fc1.weight)
    assert not torch.equal(other.fc1.weight, train_digits_model("cnn", seed=2, epochs=1).fc1.weight)
    untrained = train_digits_model("cnn", seed=1, epochs=0)
    assert evaluate_accuracy(untrained, data.x_test, data.y_test) < 0.5


def test_model_pickles(cnn):
    clone = pickle.loads(pickle.dumps(cnn))
    assert type(clone) is demo_models.DigitsCNN
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(clone(x), cnn(x))


def test_calibration_batches(data):
    batches = calibration_batches(n_batches=3, batch_size=16)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (16,) and y.dtype == torch.int64
    xs = torch.cat([x for x, _ in batches]).numpy().reshape(48, -1)
    train_rows = {row.tobytes(): lab for row, lab in zip(data.x_train.reshape(1347, -1), data.y_train)}
    ys = torch.cat([y for _, y in batches]).tolist()
    assert [train_rows[row.tobytes()] for row in xs] == ys  # all from the training split, labelled
    assert len({row.tobytes() for row in xs}) == 48  # without replacement
    same = calibration_batches(n_batches=3, batch_size=16)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, same))
    more = calibration_batches(n_batches=2, batch_size=1000)  # more than the split: wraps around
    assert [len(y) for _, y in more] == [1000, 1000]
    with pytest.raises(ValueError):
        calibration_batches(n_batches=1, batch_size=0)


def test_fisher_on_the_demo_cnn(cnn):
    from nnpress.fisher import fisher_diagonal

    fisher = fisher_diagonal(cnn, calibration_batches(n_batches=2, batch_size=32))
    assert list(fisher) == [n for n, _ in cnn.named_parameters()]
    assert all(v.shape == p.shape and (v >= 0).all() for v, p in zip(fisher.values(), cnn.parameters()))
    assert all(v.sum() > 0 for v in fisher.values())
