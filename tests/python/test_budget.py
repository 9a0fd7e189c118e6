"""compress_to_budget / compress(calibration=, budget=): the smallest file that meets a held-out
fidelity budget, written atomically and only when met; bad input raises before anything is
written; without calibration, compress is the data-free path, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nnpress  # noqa: E402
from nnpress import CodecConfig  # noqa: E402
from nnpress.budget import BudgetError, compress_to_budget  # noqa: E402
from nnpress.calibration import Task  # noqa: E402

VOCAB, DIM, OUT = 64, 24, 12


class TokenModel(torch.nn.Module):
    """Embedding -> Linear -> tanh -> Linear, mean over positions."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, DIM)
        self.fc1 = torch.nn.Linear(DIM, 32)
        self.fc2 = torch.nn.Linear(32, OUT)

    def forward(self, ids):
        return self.fc2(torch.tanh(self.fc1(self.emb(ids)))).mean(1)


def _model(seed=0):
    torch.manual_seed(seed)
    m = TokenModel().eval()
    with torch.no_grad():
        m.emb.weight.mul_(0.5)
    return m


def _task(model=None, fit_tokens=VOCAB, labels=False, seed=0):
    """Fit batches use only tokens < fit_tokens; held-out batches use every token."""
    g = torch.Generator().manual_seed(seed)
    model = _model() if model is None else model
    fit = [torch.randint(0, fit_tokens, (8, 6), generator=g) for _ in range(4)]
    held = [torch.randint(0, VOCAB, (16, 6), generator=g) for _ in range(2)]
    lab = [torch.randint(0, OUT, (16,), generator=g) for _ in range(2)] if labels else None
    return Task(model, "module", fit, held, output_fn=lambda o: o, fisher_output="gaussian", labels=lab)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("budget") / "m.nnp"
    task = _task()
    calls = []
    rep = compress_to_budget(
        task, path, "cos_mean=0.999", prune=None, max_encodes=6, progress=lambda *a: calls.append(a)
    )
    rep.progress_calls = calls
    return task, path, rep


def test_budget_is_met_on_the_written_file_and_the_report_is_complete(result):
    task, path, rep = result
    assert rep.met and path.exists() and rep.path == str(path)
    assert rep.file_bytes == path.stat().st_size
    assert rep.heldout["cos_mean"] >= 0.999  # measured on the file decoded from disk
    d = rep.to_dict()
    for key in (
        "budget",
        "met",
        "chosen",
        "points",
        "tensors",
        "heldout",
        "split",
        "times",
        "path",
        "file_bytes",
        "params",
    ):
        assert key in d
    chosen = d["points"][d["chosen"]]
    assert chosen["file_bytes"] == rep.file_bytes
    # the smallest of the points that met the budget was written
    met = [p for p in d["points"] if p["met"]]
    assert chosen["file_bytes"] == min(p["file_bytes"] for p in met)
    # a point meets the budget only with a margin of one standard error of the held-out mean
    for p in d["points"]:
        assert p["standard_error"] > 0
        assert p["budget_value"] == pytest.approx(p["metrics"]["cos_mean"] - p["standard_error"], rel=1e-12)
        assert p["met"] == (p["budget_value"] >= 0.999)
    # every point has its setting, size and metrics; some point missed (the search bracketed the budget)
    assert all({"bits_per_param", "file_bytes", "metrics", "seconds", "setting"} <= set(p) for p in d["points"])
    assert any(p["metrics"]["cos_mean"] < 0.999 for p in d["points"])
    names = {t["name"] for t in d["tensors"]}
    assert {"emb.weight", "fc1.weight", "fc2.weight", "fc1.bias"} <= names
    quantized = [t for t in d["tensors"] if t["step"] is not None]
    assert {t["name"] for t in quantized} == {"emb.weight", "fc1.weight", "fc2.weight"}
    assert all(t["method"] == "trellis" for t in quantized)
    # the written file decodes to the original names; what is not quantized is exact
    dec = nnpress.decompress(path, as_numpy=True)
    np.testing.assert_array_equal(dec["fc1.bias"], task.model.fc1.bias.detach().numpy())
    # the model's own weights were restored after every evaluation
    assert task.evaluate(None)["cos_mean"] == pytest.approx(1.0)


def test_progress_reports_every_stage_and_each_encode(result):
    _, _, rep = result
    stages = [c[0] for c in rep.progress_calls]
    assert stages.index("kfac") < stages.index("fisher") < stages.index("search") < stages.index("write")
    search = [c for c in rep.progress_calls if c[0] == "search"]
    assert [c[1] for c in search] == list(range(1, len(rep.points) + 1))
    assert all(done <= total for _, done, total in rep.progress_calls)


def test_the_search_uses_feedback_for_linear_and_embedding_weights(result):
    _, _, rep = result
    assert set(rep.pipeline["feedback_columns"]) == {"emb.weight", "fc1.weight", "fc2.weight"}
    assert set(rep.pipeline["feedback_rows"]) == {"fc1.weight", "fc2.weight"}


def test_same_seed_same_file(result, tmp_path):
    _, path, _ = result
    again = tmp_path / "again.nnp"
    compress_to_budget(_task(), again, "cos_mean=0.999", prune=None, max_encodes=6)
    assert again.read_bytes() == path.read_bytes()


def test_compress_hook_takes_a_task(tmp_path):
    path = tmp_path / "h.nnp"
    rep = nnpress.compress(_model(), path, calibration=_task(), budget="rel_error=0.05", config=CodecConfig())
    assert rep.met and rep.heldout["rel_error"] <= 0.05 and path.exists()


def test_compress_refuses_a_task_of_another_model(tmp_path):
    """A Task carries its model: a source with other weights must not be silently replaced by it."""
    path = tmp_path / "other.nnp"
    with pytest.raises(ValueError, match="other weights"):
        nnpress.compress(_model(seed=1), path, calibration=_task(), budget="rel_error=0.05")
    with pytest.raises(ValueError, match="other weights"):
        nnpress.compress(tmp_path / "model_dir", path, calibration=_task(), budget="rel_error=0.05")
    assert not path.exists()
    task = _task()
    rep = nnpress.compress(None, path, calibration=task, budget="rel_error=0.05")  # the task's own model
    assert rep.met and path.exists()
    # the task model's own state dict, or a copy of its weights as numpy arrays, is that model too
    for sd in (task.model.state_dict(), {k: v.numpy().copy() for k, v in task.model.state_dict().items()}):
        nnpress.compress(sd, tmp_path / "sd.nnp", calibration=task, budget="rel_error=0.05")
    with pytest.raises(ValueError, match="other weights"):
        nnpress.compress(_model(seed=1).state_dict(), tmp_path / "sd.nnp", calibration=task, budget="rel_error=0.05")


def test_unmet_budget_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "never.nnp"
    with pytest.raises(BudgetError, match="finest step") as info:
        compress_to_budget(_task(), path, "cos_min=0.9999999999", prune=None, max_encodes=3)
    assert not path.exists()
    assert info.value.report is not None and not info.value.report.met and info.value.report.points


def test_metric_that_does_not_apply_and_bad_arguments_raise_before_writing(tmp_path):
    path = tmp_path / "x.nnp"
    with pytest.raises(ValueError, match="does not apply"):
        compress_to_budget(_task(), path, "accuracy_drop=0.2")  # no labels
    with pytest.raises(ValueError, match="unknown budget metric"):
        compress_to_budget(_task(), path, "accuracy=0.2")
    with pytest.raises(ValueError, match="prune"):
        compress_to_budget(_task(), path, "cos_mean=0.99", prune=1.5)
    with pytest.raises(TypeError):
        nnpress.compress(_model(), path, calibration=_task(), budget="cos_mean=0.99", importance={"fc1.weight": 1})
    with pytest.raises(ValueError, match="together"):
        nnpress.compress(_model(), path, budget="cos_mean=0.99")
    with pytest.raises(FileNotFoundError):
        compress_to_budget(_task(), tmp_path / "no" / "x.nnp", "cos_mean=0.99")
    seen = []  # a folder destination: refused before any stage runs
    with pytest.raises(IsADirectoryError, match="folder, not a file"):
        compress_to_budget(_task(), tmp_path, "cos_mean=0.99", progress=lambda *a: seen.append(a))
    assert seen == []
    assert not path.exists()


def test_empty_calibration_is_an_error():
    with pytest.raises(ValueError, match="fit is empty"):
        Task(_model(), "module", [], [torch.zeros(1, 6, dtype=torch.long)], output_fn=lambda o: o)


def test_without_calibration_compress_is_the_data_free_path_byte_for_byte(tmp_path):
    from nnpress.encode import data_free_hessians, encode_model, file_metadata, write_records
    from nnpress.traverse import collect

    model = _model()
    path = tmp_path / "d.nnp"
    nnpress.compress(model, path)
    cfg = CodecConfig()
    entries = collect(model)
    synth = data_free_hessians(model, entries, cfg)  # (the data-free path's synthetic-input feedback)
    meta = file_metadata(cfg, synthetic_feedback=bool(synth))
    expected = write_records(encode_model(entries, cfg, synthetic_hessians=synth), cfg, meta)
    assert path.read_bytes() == expected


def test_pruning_dimension_records_sparsity(tmp_path):
    rep = compress_to_budget(_task(), tmp_path / "p.nnp", "rel_error=0.6", prune=0.5, max_encodes=4)
    assert rep.met
    assert {p["setting"]["sparsity"] for p in rep.points} == {0.5}
    w = [t for t in rep.tensors if t["step"] is not None]
    zeros = sum(t["sparsity"] * t["params"] for t in w) / sum(t["params"] for t in w)
    assert zeros >= 0.5


def _fake_point(distance, calls):
    """A point function for _search_step: file bytes fall with the step, the metric is cos_mean
    with 1 - cos = distance(step)."""

    def point(step, sparsity):
        calls.append(step)
        cos = 1.0 - distance(step)
        return {
            "file_bytes": int(1e6 / step),
            "metrics": {"cos_mean": cos},
            "budget_value": cos,
            "met": cos >= 0.999,
            "setting": {},
        }

    return point


def test_step_search_brackets_the_budget_within_tolerance_in_few_encodes():
    import math

    from nnpress.budget import _search_step

    calls = []
    best = _search_step(
        _fake_point(lambda s: (s / 0.37) ** 2 * 1e-3, calls), 0.0, math.log(0.01), math.log(1e-6),
        1e-3, "cos_mean", 2.0, 0.03, 8,
    )  # fmt: skip
    # the budget is met exactly at step 0.37: the best point is just below it, within 3 %
    assert 0.37 / 1.03 <= 1e6 / best["file_bytes"] <= 0.37 * (1 + 1e-6)
    assert len(calls) <= 5  # the step² law is found at once


def test_step_search_returns_the_smallest_file_that_met_even_when_the_metric_is_noisy():
    import math

    from nnpress.budget import _search_step

    calls = []
    noisy = lambda s: (s / 0.2) ** 2 * 1e-3 * (0.5 if 0.25 < s < 0.3 else 1.0)  # noqa: E731
    best = _search_step(_fake_point(noisy, calls), 0.0, math.log(0.01), math.log(1e-6), 1e-3, "cos_mean", 2.0, 0.03, 8)
    met = [s for s in calls if noisy(s) <= 1e-3]
    assert 1e6 / best["file_bytes"] == pytest.approx(max(met), rel=1e-6)


def test_step_search_gives_up_when_finer_steps_stop_helping():
    import math

    from nnpress.budget import _search_step

    calls = []
    floor = lambda s: 0.05 + s**2  # noqa: E731  (e.g. pruning holds the metric back)
    assert (
        _search_step(_fake_point(floor, calls), 0.0, math.log(0.5), math.log(1e-6), 1e-3, "cos_mean", 2.0, 0.03, 8)
        is None
    )
    assert len(calls) <= 4


def test_auto_pruning_writes_the_smallest_met_point_over_all_sparsities(tmp_path):
    path = tmp_path / "a.nnp"
    rep = compress_to_budget(_task(), path, "rel_error=0.3", prune="auto", max_encodes=5)
    met = [p for p in rep.points if p["metrics"]["rel_error"] <= 0.3]
    assert len({p["setting"]["sparsity"] for p in rep.points}) >= 2  # the sparsity dimension was searched
    assert rep.file_bytes == min(p["file_bytes"] for p in met) == path.stat().st_size


def test_auto_pruning_is_searched_only_up_to_the_size_limit(tmp_path, monkeypatch):
    """Above PRUNE_SEARCH_MAX_WEIGHTS quantized weights, prune="auto" searches the step alone."""
    import nnpress.budget as budget_mod

    monkeypatch.setattr(budget_mod, "PRUNE_SEARCH_MAX_WEIGHTS", 100)  # the test model has more
    rep = compress_to_budget(_task(), tmp_path / "a.nnp", "rel_error=0.3", prune="auto", max_encodes=5)
    assert {p["setting"]["sparsity"] for p in rep.points} == {0.0}
    assert rep.pipeline["sparsities"] == [0.0]


def test_layers_without_curvature_go_without_feedback(tmp_path):
    """Dead units make the layers before them irrelevant to the output: their K-FAC blocks are zero,
    and the search runs without feedback there instead of failing."""
    import nnpress

    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    ).eval()
    with torch.no_grad():
        m[2].bias.fill_(-100.0)
    path = tmp_path / "dead.nnp"
    rep = nnpress.compress(m, path, calibration=torch.randn(64, 8), budget="rel_error=0.05")
    assert rep.met and path.exists()
    assert "0.weight" not in rep.pipeline.get("feedback_columns", ["0.weight"])
