"""`nnpress compress ... --calibration DATA --budget METRIC=VALUE`: the whole command on a
TorchScript model with a tensor file, its report, --json [FILE], --plot, the progress bar, the
errors that write nothing; and the data-free command unchanged."""

import io
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nnpress  # noqa: E402
from nnpress.budget_report import StageProgress, format_report, write_plot  # noqa: E402
from nnpress.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)
    ts = root / "mlp.pt"
    torch.jit.script(model).save(str(ts))
    xy = root / "xy.npz"
    np.savez(xy, x=x.numpy(), y=y.numpy())
    x_only = root / "x.npy"
    np.save(x_only, x.numpy())
    st = root / "mlp.safetensors"
    from nnpress.traverse import save_safetensors

    save_safetensors({k: v.numpy() for k, v in model.state_dict().items()}, str(st))
    return {"ts": str(ts), "xy": str(xy), "x": str(x_only), "st": str(st), "model": model}


def test_budget_end_to_end(mlp_files, tmp_path, capsys):
    pytest.importorskip("nnpress.budget")
    pytest.importorskip("matplotlib")
    out, png, rep = tmp_path / "m.nnp", tmp_path / "curve.png", tmp_path / "rep.json"
    args = ["compress", mlp_files["ts"], str(out), "--calibration", mlp_files["xy"], "--budget", "top1=0.95"]
    assert main([*args, "--plot", str(png), "--json", str(rep), "--seed", "3", "--heldout", "20"]) == 0
    text = capsys.readouterr().out
    d = json.loads(rep.read_text())
    assert d["met"] and d["heldout"]["top1"] >= 0.95 and d["file_bytes"] == out.stat().st_size
    assert d["split"]["heldout"] == 20 and d["split"]["seed"] == 3
    # the report: every point (bits/param), the chosen one, per-tensor steps, the split
    for p in d["points"]:
        assert f"{p['bits_per_param']:.4f}" in text
    assert f"chosen: point {d['chosen']}" in text and "budget: top1 >= 0.95: met" in text
    assert "20 of 64 examples held out" in text and "0.weight" in text and "trellis" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the file decodes under the TorchScript module's own names and meets the budget there
    dec = nnpress.decompress(str(out))
    assert set(dec) == set(mlp_files["model"].state_dict())
    # --json alone prints the JSON document instead of the report
    assert main([*args, "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["met"] and printed["points"]


def test_no_calibration_same_bytes_as_before(mlp_files, tmp_path, capsys):
    a, b = tmp_path / "a.nnp", tmp_path / "b.nnp"
    assert main(["compress", mlp_files["st"], str(a)]) == 0
    nnpress.compress(mlp_files["st"], str(b))
    assert a.read_bytes() == b.read_bytes()
    j = tmp_path / "r.json"
    assert main(["compress", mlp_files["st"], str(a), "--json", str(j), "--method", "nearest"]) == 0
    assert json.loads(j.read_text())["file_bytes"] == a.stat().st_size
    assert "bits/p" in capsys.readouterr().out  # --json FILE keeps the table on stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "kl=0.1"], "--budget needs calibration data"),
        (["--plot", "x.png"], "--plot needs calibration data"),
        (["--kind", "module", "--heldout", "0.2"], "--kind, --heldout need calibration data"),
    ],
)
def test_budget_options_without_calibration(mlp_files, tmp_path, capsys, extra, message):
    out = tmp_path / "m.nnp"
    assert main(["compress", mlp_files["st"], str(out), *extra]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_input_writes_nothing(mlp_files, tmp_path, capsys):
    out = tmp_path / "m.nnp"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((10, 3), np.float32))
    cases = [
        (["--calibration", mlp_files["xy"]], "--calibration needs --budget"),
        (["--calibration", str(empty), "--budget", "kl=0.1"], "text calibration needs a model with a tokenizer"),
        (["--calibration", str(wrong), "--budget", "rel_error=0.1"], "does not fit the model"),
        (["--calibration", mlp_files["x"], "--budget", "accuracy_drop=0.5"], "does not apply to a module task"),
        (["--calibration", mlp_files["xy"], "--budget", "nope=1"], "unknown budget metric 'nope'"),
        (["--calibration", str(tmp_path / "none.npz"), "--budget", "kl=1"], "no such calibration file"),
    ]
    for extra, message in cases:
        assert main(["compress", mlp_files["ts"], str(out), *extra]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
        assert not out.exists()
    pytest.importorskip("nnpress.budget")
    assert main(["compress", mlp_files["ts"], str(out), "--calibration", mlp_files["xy"], "--budget", "kl=-1"]) == 1
    assert "nothing written" in capsys.readouterr().err or not out.exists()
    assert not out.exists()


def test_budget_that_cannot_be_met(mlp_files, tmp_path, capsys):
    """The search's points are printed (how close it came), the error is one line, nothing is written."""
    pytest.importorskip("nnpress.budget")
    out = tmp_path / "m.nnp"
    args = ["compress", mlp_files["ts"], str(out), "--calibration", mlp_files["xy"], "--budget", "cos_min=1.0"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "cannot be met" in captured.err and captured.err.count("\n") == 1
    assert "points tried" in captured.out and "NOT met" in captured.out
    assert not out.exists()
    # the reached value is printed exactly: never rounded up onto the budget it missed
    reached = captured.err.split("reached is ")[1].split(" at the finest")[0]
    assert float(reached) < 1.0
    # --json gets the failed report too (every point tried and the error), for scripts
    rep = tmp_path / "r.json"
    assert main([*args, "--json", str(rep)]) == 1
    d = json.loads(rep.read_text())
    assert d["met"] is False and d["points"] and "cannot be met" in d["error"]
    capsys.readouterr()
    assert main([*args, "--json", "-"]) == 1
    assert json.loads(capsys.readouterr().out)["met"] is False
    assert not out.exists()


def test_plot_without_matplotlib_fails_before_the_run(mlp_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "m.nnp"
    args = ["--calibration", mlp_files["xy"], "--budget", "top1=0.9", "--plot", str(tmp_path / "p.png")]
    assert main(["compress", mlp_files["ts"], str(out), *args]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert not out.exists()


def test_stage_progress_line_and_eta():
    now = [0.0]
    buf = io.StringIO()
    bar = StageProgress(True, stream=buf, width=10, min_interval=0.0, clock=lambda: now[0])
    bar("search", 0, 4)
    now[0] = 30.0
    bar("search", 1, 4)  # 30 s per step so far, 3 steps left
    assert "search" in buf.getvalue() and "[##........] 1/4" in buf.getvalue()
    assert buf.getvalue().rstrip().endswith("00:30 elapsed  ETA 01:30")
    now[0] = 40.0
    bar("search", 2, 4)  # 20 s per step so far, 2 steps left
    assert buf.getvalue().rstrip().endswith("[#####.....] 2/4  00:40 elapsed  ETA 00:40")
    bar("write", 1, 1)  # a new stage starts its own line and its own clock
    lines = buf.getvalue().split("\n")
    assert lines[-2].strip().startswith("write") and "00:00 elapsed  ETA 00:00" in lines[-2]
    quiet = io.StringIO()
    off = StageProgress(False, stream=quiet)
    off("search", 1, 4)
    off.close()
    assert quiet.getvalue() == ""


def test_progress_bar_only_when_asked(mlp_files, tmp_path, capsys):
    pytest.importorskip("nnpress.budget")
    args = ["compress", mlp_files["ts"], str(tmp_path / "m.nnp"), "--calibration", mlp_files["xy"]]
    assert main([*args, "--budget", "top1=0.9", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "ETA" not in captured.err  # stderr is not a terminal here
    assert main([*args, "--budget", "top1=0.9", "--quiet", "--progress"]) == 0
    err = capsys.readouterr().err
    assert "search" in err and "ETA" in err


REPORT = {
    "budget": "cos_mean >= 0.999",
    "met": True,
    "chosen": 1,
    "points": [
        {"bits_per_param": 5.5, "file_bytes": 1100, "metrics": {"cos_mean": 0.9995}, "seconds": 1.0, "setting": {}},
        {"bits_per_param": 4.25, "file_bytes": 850, "metrics": {"cos_mean": 0.9991}, "seconds": 1.5, "setting": {}},
        {"bits_per_param": 3.75, "file_bytes": 750, "metrics": {"cos_mean": 0.998}, "seconds": 1.2, "setting": {}},
    ],
    "tensors": [{"name": "enc.w", "bits": 4000, "bits_per_param": 3.9, "step": 0.01, "method": "trellis"}],
    "heldout": {"cos_mean": 0.9991},
    "split": {"samples": 40, "fit": 30, "heldout": 10, "seed": 0, "unit": "texts", "rule": "the rule"},
    "times": {"total": 3.0},
    "path": "x.nnp",
    "file_bytes": 850,
    "params": 1600,
    "pipeline": {"feedback_columns": ["enc.w"], "feedback_rows": [], "sparsities": [0.0, 0.5], "kfac_draws": 8},
}


def test_format_report_and_plot(tmp_path):
    text = format_report(REPORT)
    rows = [line for line in text.splitlines() if line[:6].strip() in ("0", "1", "2", "*   1")]
    assert len(rows) == 3 and rows[1].startswith("*") and not rows[0].startswith("*")
    assert "chosen: point 1, 4.2500 bits/param (850 bytes)" in text
    assert "10 of 40 texts held out, 30 used to estimate (seed 0)" in text and "rule: the rule" in text
    assert "enc.w" in text and "0.01" in text
    assert "pipeline: feedback columns: 1 tensor; feedback rows: 0 tensors; sparsities: 0, 0.5; kfac draws: 8" in text
    assert "budget: cos_mean >= 0.999: met (held-out cos_mean = 0.999100)" in text
    pytest.importorskip("matplotlib")
    png = tmp_path / "c.png"
    write_plot(REPORT, str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"
