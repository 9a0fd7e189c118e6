"""The nnpress command: compress / decompress / info / demo, exit codes, no tracebacks for user
mistakes, --json output; all-MiniLM-L6-v2 through the CLI."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import nnpress
from nnpress.cli import main
from nnpress.traverse import load_safetensors, save_safetensors

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    """The command in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nnpress.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def model_files(tmp_path):
    torch.manual_seed(0)
    sd = {
        "conv.weight": torch.randn(8, 3, 3, 3),
        "conv.bias": torch.randn(8),
        "fc.weight": torch.randn(10, 72),
        "fc.bias": torch.randn(10),
        "bn.num_batches_tracked": torch.tensor(17),
    }
    st = tmp_path / "model.safetensors"
    save_safetensors(sd, st)
    pt = tmp_path / "model.pt"
    torch.save(sd, pt)
    return sd, st, pt


def test_compress_info_decompress_round_trip(tmp_path, model_files, capsys):
    sd, st, pt = model_files
    nnp = tmp_path / "m.nnp"
    assert main(["compress", str(st), str(nnp), "--json", "--method", "nearest", "--rel-step", "0.05"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["file_bytes"] == nnp.stat().st_size and len(rep["tensors"]) == 5
    assert main(["info", str(nnp), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in info["entries"]] == list(sd)
    assert info["checksums"] == "ok" and info["params"] == sum(t.numel() for t in sd.values())
    assert main(["info", str(nnp)]) == 0
    text = capsys.readouterr().out
    assert "conv.weight" in text and "bits/param" in text
    for ext in ("safetensors", "npz", "pt"):
        out = tmp_path / f"back.{ext}"
        assert main(["decompress", str(nnp), str(out), "-q"]) == 0
        if ext == "safetensors":
            back = load_safetensors(out)
        elif ext == "npz":
            back = dict(np.load(out))
        else:
            back = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
        ref = nnpress.decompress(nnp, as_numpy=True)
        assert list(back) == list(sd)
        for k in sd:
            np.testing.assert_array_equal(back[k], ref[k])
            assert back[k].dtype == sd[k].numpy().dtype
    # biases near-lossless by default (fine roles): nearest rounding, half a step of 1/256 of the spread
    e = nnpress.NnpFile(nnp).entry("fc.bias")
    assert e["storage"] == "quantized" and e["method"] == "nearest"
    assert np.abs(ref["fc.bias"] - sd["fc.bias"].numpy()).max() <= 0.5 * e["step"] * (1 + 1e-5)
    # .pt input gives the same file
    nnp2 = tmp_path / "m2.nnp"
    assert main(["compress", str(pt), str(nnp2), "-q", "--method", "nearest", "--rel-step", "0.05"]) == 0
    assert nnp2.read_bytes() == nnp.read_bytes()


def test_compress_options(tmp_path, model_files, capsys):
    _, st, _ = model_files
    nnp = tmp_path / "o.nnp"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"fc.*": {"step": 0.5, "method": "nearest"}, "conv.bias": {"lossless": False}}))
    assert (
        main(
            [
                "compress",
                str(st),
                str(nnp),
                "--qp",
                "-20",
                "--lossless-roles",
                "buffer",
                "--plan",
                str(plan),
                "--threads",
                "1",
                "--block-elements",
                "16",
                "--json",
            ]
        )
        == 0
    )
    rep = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert rep["fc.weight"]["step"] == 0.5 and rep["fc.weight"]["method"] == "nearest"
    assert rep["conv.weight"]["step"] == 2 ** (-20 / 4)
    assert rep["fc.bias"]["storage"] == "quantized" and rep["conv.bias"]["storage"] == "quantized"
    assert nnpress.NnpFile(nnp).entry("conv.weight")["chunks"] == 8  # 27 columns: one row per block


def nnpress_file(tmp_path, st):
    p = tmp_path / "good.nnp"
    nnpress.compress(st, p)
    return p


def test_user_errors_exit_1_without_traceback(tmp_path, model_files):
    _, st, _ = model_files
    cases = [
        ["info", tmp_path / "missing.nnp"],
        ["decompress", tmp_path / "missing.nnp", tmp_path / "x.safetensors"],
        ["compress", tmp_path / "missing.safetensors", tmp_path / "x.nnp"],
        ["compress", st, tmp_path / "no_such_dir" / "x.nnp"],
        ["compress", st, tmp_path / "x.nnp", "--step", "-1"],
    ]
    corrupt = tmp_path / "corrupt.nnp"
    nnpress.compress(load_safetensors(st), corrupt)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0x55
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "trunc.nnp"
    truncated.write_bytes(bytes(data[:100]))
    cases += [
        ["info", truncated],
        ["decompress", corrupt, tmp_path / "y.safetensors"],
        ["decompress", truncated, tmp_path / "y.safetensors"],
        ["info", st],  # not a .nnp file
        ["decompress", nnpress_file(tmp_path, st), tmp_path / "y.txt"],
    ]  # unsupported output
    for args in cases:
        r = run_cli(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("nnpress ") and "error" in r.stderr, (args, r.stderr)
    assert not (tmp_path / "y.safetensors").exists()
    r = run_cli("decompress", corrupt, tmp_path / "y.safetensors")
    assert "invalid or corrupt" in r.stderr and str(corrupt) in r.stderr
    r = run_cli("compress")  # argparse's errors: one line too
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("nnpress compress: error: the following arguments are required: source, dest")
    r = run_cli("compress", "a.safetensors", "b.nnp", "--rel-step", "abc")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--rel-step" in r.stderr, r.stderr
    r = run_cli("compress", "a.safetensors", "b.nnp", "--threads", "0")
    assert r.returncode == 2 and r.stderr == "nnpress compress: error: --threads must be >= 1\n", r.stderr
    r = run_cli()
    assert r.returncode == 2
    r = run_cli("--version")
    assert r.returncode == 0 and "nnpress" in r.stdout


def test_demo_runs_end_to_end(tmp_path):
    r = run_cli("demo", "--out", tmp_path, "--json", "--no-plot")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["params"] == 42890
    assert d["accuracy_before"] > 0.95
    assert d["accuracy_after"] >= d["accuracy_before"] - 0.01
    assert d["ratio"] > 3 and d["file_bytes"] == os.path.getsize(d["file"])
    assert len(d["sweep"]) >= 5
    bits = [c["bits_per_param"] for c in d["sweep"]]
    assert bits == sorted(bits, reverse=True)  # coarser steps, smaller files
    assert d["plot"] is None


def test_demo_plot_png(tmp_path):
    import matplotlib  # noqa: F401  (a test dependency: if it is missing this test fails)

    from nnpress.demo import format_demo, run_demo

    r = run_demo(str(tmp_path), sweep=(1 / 16, 1 / 4))
    png = pathlib.Path(r["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy after" in format_demo(r)
    t = r["tuned"]  # Fisher-tuned file: within the 0.2-point budget, smaller than the default file
    assert t["accuracy_after"] >= r["accuracy_before"] - 0.002
    assert t["file_bytes"] < r["file_bytes"]
    assert "Fisher-tuned" in format_demo(r)


def test_minilm_through_the_cli(tmp_path):
    """all-MiniLM-L6-v2: compress via the CLI, `info` lists its 103 tensors, the decoded weights
    reloaded into the model give embeddings with mean cosine >= 0.999."""
    sys.path.insert(0, str(REPO / "bench" / "python"))
    import minilm

    model, _ = minilm.load_minilm()
    sd = model.state_dict()
    assert len(sd) == 103
    src = tmp_path / "minilm.safetensors"
    save_safetensors(sd, src)
    nnp = tmp_path / "minilm.nnp"
    r = run_cli("compress", src, nnp, "-q")
    assert r.returncode == 0, r.stderr
    r = run_cli("info", nnp, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["tensors"] == 103 and [e["name"] for e in info["entries"]] == list(sd)
    assert info["params"] == 22_713_216
    assert info["file_bytes"] < 0.3 * info["original_bytes"]
    out = tmp_path / "back.safetensors"
    r = run_cli("decompress", nnp, out)
    assert r.returncode == 0, r.stderr
    back = load_safetensors(out)
    sentences = minilm.SENTENCES[:12]
    ref = minilm.embed(model, sentences)
    test = minilm.embed(back, sentences)
    mean_cos, min_cos = minilm.cosine_fidelity(ref, test)
    assert mean_cos >= 0.999, (mean_cos, min_cos)


def test_version_is_the_installed_distributions_and_written_once():
    import importlib.metadata

    assert nnpress.__version__ == importlib.metadata.version("nnpress")
    r = run_cli("--version")
    assert r.stdout.strip() == f"nnpress {nnpress.__version__}"
    # One source: python/nnpress/_version.py; pyproject.toml and CMakeLists.txt read it.
    literal = f'"{nnpress.__version__}"'
    assert literal in (REPO / "python" / "nnpress" / "_version.py").read_text()
    for path in ("pyproject.toml", "CMakeLists.txt", "python/nnpress/__init__.py"):
        text = (REPO / path).read_text()
        assert literal not in text and f"VERSION {nnpress.__version__}" not in text, path


def test_plan_is_a_file_or_inline_json(tmp_path, model_files, capsys):
    _, st, _ = model_files
    inline = json.dumps({"fc.*": {"step": 0.5, "method": "nearest"}})
    assert main(["compress", str(st), str(tmp_path / "i.nnp"), "--plan", inline, "--json"]) == 0
    rep = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tensors"]}
    assert rep["fc.weight"]["step"] == 0.5 and rep["fc.weight"]["method"] == "nearest"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for plan, says in [
        ("no_such_plan.json", "neither an existing file nor an inline JSON object"),
        ('{"fc.*": {"step": 0.5}', "inline JSON is not valid JSON"),
        (str(bad), "is not valid JSON"),
        ("[1, 2]", "neither an existing file nor an inline JSON object"),
    ]:
        r = run_cli("compress", st, tmp_path / "x.nnp", "--plan", plan)
        assert r.returncode == 1, (plan, r.stderr)
        assert r.stderr.count("\n") == 1 and "--plan" in r.stderr and says in r.stderr, (
            plan,
            r.stderr,
        )
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "x.nnp").exists()


def _fake_demo_result(out):
    return {
        "model": "digits CNN (LeNet-5 style)",
        "params": 42890,
        "original_bytes": 171560,
        "file": str(out / "digits_cnn.nnp"),
        "file_bytes": 34286,
        "ratio": 5.0,
        "bits_per_param": 6.395,
        "accuracy_before": 0.9889,
        "accuracy_after": 0.9867,
        "test_images": 450,
        "times": {"train": 1.0, "compress": 0.1, "decompress": 0.01},
        "config": {},
        "sweep": [{"rel_step": 0.5, "file_bytes": 16059, "bits_per_param": 2.995, "accuracy": 0.9867}],
        "tuned": None,
        "plot": None,
        "plot_note": None,
    }


def test_demo_quiet_prints_one_line(tmp_path, capsys, monkeypatch):
    """-q: only the essential line (file, size, ratio, accuracy before -> after); no progress."""
    import nnpress.demo

    monkeypatch.setattr(nnpress.demo, "run_demo", lambda out, plot, log: _fake_demo_result(tmp_path))
    assert main(["demo", "--out", str(tmp_path), "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and err == "", (out, err)
    assert "digits_cnn.nnp" in out and "34,286 bytes" in out and "98.89 % -> 98.67 %" in out
    assert main(["demo", "--out", str(tmp_path)]) == 0  # without -q: the full report
    assert capsys.readouterr().out.count("\n") > 10


def test_stdout_closed_early_exits_quietly(tmp_path):
    """`nnpress info x.nnp | head`: the reader goes away; no "Broken pipe" error, exit as by
    SIGPIPE."""
    p = tmp_path / "many.nnp"
    nnpress.compress({f"layer{i}.weight": np.full((2, 2), i, np.float32) for i in range(3000)}, p)
    for args in (["info", p], ["info", p, "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "nnpress.cli", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout.readline()
        # the output is far above a pipe's buffer: the next write meets a closed pipe
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=120) == 141, err
        assert err == "", err


def test_pickled_full_model_is_one_clear_line(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    pt = tmp_path / "model.pt"
    torch.save(model, pt)  # the whole module pickled, not a state_dict
    r = run_cli("compress", pt, tmp_path / "x.nnp")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "pickled torch.nn.modules.container.Sequential object" in r.stderr
    assert "torch.save(model.state_dict()" in r.stderr and "corrupt" not in r.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage" * 10)
    r = run_cli("compress", junk, tmp_path / "x.nnp")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "\x1b" not in r.stderr, r.stderr


def test_spread_option_picks_the_step_rule(tmp_path):
    """--spread std takes a heavy-tailed tensor's step from its std (outliers included), the default
    from its bulk: the std step is much coarser."""
    from nnpress.traverse import save_safetensors

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 64)) * 0.02).astype(np.float32)
    w[0, :4] = 5.0  # a few outliers set the std
    src = tmp_path / "h.safetensors"
    save_safetensors({"layer.weight": w}, src)
    steps = {}
    for spread in ("robust", "std"):
        out = tmp_path / f"{spread}.nnp"
        assert main(["compress", str(src), str(out), "--spread", spread, "--method", "nearest"]) == 0
        steps[spread] = nnpress.NnpFile(out).entry("layer.weight")["step"]
    assert steps["std"] > 5 * steps["robust"]  # std ~0.16 (the outliers), bulk ~0.02


def test_every_argument_has_help():
    """``nnpress SUBCOMMAND --help`` explains every argument and option, for every subcommand."""
    import argparse

    from nnpress.cli import _build_parser

    sub = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"compress", "decompress", "info", "demo"}
    for cmd, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, (cmd, action.dest)


def test_compress_json_destination_is_checked_before_the_work(tmp_path, model_files, capsys):
    """``compress --json FILE`` into a folder that does not exist fails before anything is encoded or
    written (not after the .nnp is written)."""
    _, st, _ = model_files
    out = tmp_path / "out.nnp"
    rc = main(["compress", str(st), str(out), "--json", str(tmp_path / "missing" / "r.json")])
    assert rc == 1
    assert "destination folder does not exist" in capsys.readouterr().err
    assert not out.exists()
