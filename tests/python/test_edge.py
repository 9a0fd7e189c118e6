"""The edge chain (scripts/edge_ci.sh): decoder-only library installed into a fresh prefix,
examples/edge built against it with find_package, the digits CNN classified from its .nnp with each
layer in the format timed fastest at load (nnpress::Layer) and predictions identical to the Python
model's; and the app's checks can fail.

About 1-2 minutes (it configures and builds the library and the app from scratch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("edge"))
    env = {**os.environ, "PYTHON": sys.executable, "KEEP": "1"}
    # cmake/ninja of the interpreter's environment first (scripts/test.sh installs them in its venv)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "edge_ci.sh"), work],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return work, res.stdout


def _files(work):
    d = os.path.join(work, "data")
    return [os.path.join(d, f) for f in ("digits_cnn.nnp", "test_images.f32", "test_labels.i32", "expected_pred.i32")]


def test_edge_ci_matches_python(edge):
    work, out = edge
    assert "edge: OK" in out
    info = json.load(open(os.path.join(work, "data", "export.json")))
    app = os.path.join(work, "app-build", "edge_digits")
    res = subprocess.run([app, *_files(work), "--json"], capture_output=True, text=True, check=True)
    got = json.loads(res.stdout)
    assert got["images"] == info["images"] == 450
    assert got["agree"] == got["images"]  # every prediction equals Python's
    assert got["correct"] == info["correct_python"]
    assert got["accuracy"] == pytest.approx(info["accuracy_python"], abs=1e-6)
    assert info["accuracy_python"] > 0.95
    # batched inference (64 images per call) gives the same predictions; 450 = 7 x 64 + 2 (a partial batch)
    res = subprocess.run([app, *_files(work), "--json", "--batch", "64"], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["agree"] == 450 and json.loads(res.stdout)["batch"] == 64
    # the installed package is decoder-only: no encoder library symbols, headers installed
    prefix = os.path.join(work, "prefix")
    assert os.path.exists(os.path.join(prefix, "include", "nnpress", "runtime.h"))
    cfg = [os.path.join(dp, f) for dp, _, fs in os.walk(prefix) for f in fs if f == "nnpressConfig.cmake"]
    assert cfg
    assert "library" in out and "stripped" in out


def test_edge_app_detects_differences(edge, tmp_path):
    work, _ = edge
    app = os.path.join(work, "app-build", "edge_digits")
    model, images, labels, expected = _files(work)
    pred = np.fromfile(expected, dtype="<i4")
    pred[17] = (pred[17] + 1) % 10
    wrong = tmp_path / "wrong.i32"
    pred.tofile(wrong)
    res = subprocess.run([app, model, images, labels, str(wrong)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "1 predictions differ" in res.stderr


def test_edge_app_rejects_bad_files(edge, tmp_path):
    work, _ = edge
    app = os.path.join(work, "app-build", "edge_digits")
    model, images, labels, _ = _files(work)
    data = bytearray(open(model, "rb").read())
    data[-5] ^= 0xFF  # inside the last chunk: the CRC catches it when that tensor is decoded
    bad = tmp_path / "bad.nnp"
    bad.write_bytes(bytes(data))
    res = subprocess.run([app, str(bad), images, labels], capture_output=True, text=True)
    assert res.returncode == 1
    assert "checksum" in res.stderr or "corrupt" in res.stderr
    short = tmp_path / "short.nnp"
    short.write_bytes(bytes(data[:100]))
    res = subprocess.run([app, str(short), images, labels], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.startswith("edge_digits: ")
    res = subprocess.run([app, model, images], capture_output=True, text=True)
    assert res.returncode == 1 and "usage" in res.stderr
    odd = tmp_path / "odd.f32"
    odd.write_bytes(b"\0" * 100)
    res = subprocess.run([app, model, str(odd), labels], capture_output=True, text=True)
    assert res.returncode == 1
