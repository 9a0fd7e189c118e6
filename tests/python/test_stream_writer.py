"""_core.NnpFileWriter, the streaming .nnp writer: the same bytes as the in-memory writer, a
context manager that never renames a half-written file, clear errors for calls out of order, and
I/O errors (a file-size limit) raising OSError with nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnpress
from nnpress import _core
from nnpress.container import NnpFile, TensorRecord, nnp_bytes

pytestmark = pytest.mark.skipif(not _core.HAS_ENCODER, reason="no encoder in this build")


def _records():
    rng = np.random.default_rng(7)
    big = rng.laplace(scale=3.0, size=(64, 50)).round().astype(np.int32)
    scaled = rng.laplace(scale=2.0, size=(12, 10)).round().astype(np.int32)
    return [
        TensorRecord("w.big", "float32", "weight", "quantized", (64, 50), data=big, step=0.01, lam=0.5),
        TensorRecord(
            "w.trellis", "float16", "weight", "quantized", (3, 4), data=big[:3, :4], method="trellis", step=0.25
        ),
        TensorRecord(
            "w.scaled",
            "bfloat16",
            "weight",
            "quantized",
            (12, 10),
            data=scaled,
            step=0.05,
            row_scale_exp=np.arange(12) % 5 - 2,
            col_scale_exp=np.arange(10) % 3,
        ),
        TensorRecord("empty", "float32", "weight", "quantized", (0, 5), data=np.zeros((0, 5), np.int32), step=1.0),
        TensorRecord("bias", "float32", "bias", "raw", (3,), data=np.array([1.5, -2.0, 0.25], np.float32)),
        TensorRecord("steps", "int64", "buffer", "raw", (), data=np.int64(123456789012)),
        TensorRecord("tied", "float32", "weight", "alias", (64, 50), alias_of="w.big"),
    ]


def _inputs(records):
    """The records as _core.TensorInputs, built here (not through container.py's private helper) so
    this test pins the binding itself; nnp_bytes is compared against separately."""
    index: dict[str, int] = {}
    out = []
    for i, r in enumerate(records):
        kw = {}
        if r.storage == "quantized":
            kw = dict(levels=np.ascontiguousarray(r.data, np.int32), method=getattr(_core.QuantMethod, r.method))
            kw.update(step=r.step, lam=r.lam)
            for which in ("row_scale_exp", "col_scale_exp"):
                if getattr(r, which) is not None:
                    kw[which] = np.ascontiguousarray(getattr(r, which), np.int8)
        elif r.storage == "raw":
            kw = dict(raw=np.ascontiguousarray(r.data).reshape(-1).view(np.uint8))
        else:
            kw = dict(alias_of=index[r.alias_of])
        out.append(
            _core.TensorInput(
                name=r.name,
                dtype=getattr(_core.DType, r.dtype),
                role=getattr(_core.TensorRole, r.role),
                storage=getattr(_core.Storage, r.storage),
                shape=list(r.shape),
                **kw,
            )
        )
        index.setdefault(r.name, i)
    return out


def _options(threads=2, verify=False, metadata='{"k":"v"}'):
    o = _core.WriterOptions()
    o.block_elements = 500
    o.threads = threads
    o.metadata = metadata
    o.verify = verify
    return o


def _leftovers(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("verify", [False, True])
def test_same_bytes_as_the_memory_writer(tmp_path, threads, verify):
    recs = _records()
    inputs = _inputs(recs)
    data, stored, _ = _core.write_nnp(inputs, _options(threads, verify))
    path = tmp_path / "m.nnp"
    w = _core.NnpFileWriter(str(path), _options(threads, verify))
    assert w.is_open and w.tensor_count == 0 and w.bytes_written == 40
    for t in inputs:
        w.add(t)
    assert w.tensor_count == len(inputs)
    assert w.stored_bytes == list(stored)
    size = w.finish()
    assert not w.is_open
    assert size == len(data) == w.bytes_written == path.stat().st_size
    assert path.read_bytes() == data
    assert _leftovers(tmp_path) == []
    # The Python writer's bytes (nnp_bytes builds the same inputs with the same options).
    py_bytes, _ = nnp_bytes(recs, block_elements=500, threads=threads, metadata={"k": "v"})
    assert py_bytes == data
    f = NnpFile(path)
    assert f.names == [r.name for r in recs] and f.version == (1, 1)
    np.testing.assert_array_equal(f.read_levels("w.big"), recs[0].data)


def test_add_many(tmp_path):
    inputs = _inputs(_records())
    data, stored, _ = _core.write_nnp(inputs, _options())
    path = tmp_path / "m.nnp"
    with _core.NnpFileWriter(str(path), _options()) as w:
        w.add_many(inputs[:2])
        with pytest.raises(ValueError, match="duplicate name"):
            w.add_many([inputs[2], inputs[0]])  # refused as a whole
        assert w.tensor_count == 2
        w.add_many(inputs[2:])
        assert w.stored_bytes == list(stored)
        w.finish()
    assert path.read_bytes() == data


def test_context_manager(tmp_path):
    inputs = _inputs(_records())
    path = tmp_path / "m.nnp"
    path.write_bytes(b"old")
    # An exception inside the block: aborted, the old file stays, no temporary file.
    with pytest.raises(RuntimeError, match="boom"):
        with _core.NnpFileWriter(str(path), _options()) as w:
            w.add(inputs[0])
            assert len(_leftovers(tmp_path)) == 1
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []
    assert not w.is_open
    with pytest.raises(ValueError, match="aborted"):
        w.finish()
    # Leaving the block without finish(): aborted too.
    with _core.NnpFileWriter(str(path), _options()) as w:
        w.add(inputs[0])
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []
    # finish() inside the block: the file is replaced and stays after the block.
    with _core.NnpFileWriter(str(path), _options()) as w:
        for t in inputs:
            w.add(t)
        size = w.finish()
    assert path.stat().st_size == size and path.read_bytes()[:4] == b"\x89NNP"


def test_calls_out_of_order(tmp_path):
    inputs = _inputs(_records())
    w = _core.NnpFileWriter(str(tmp_path / "m.nnp"), _options())
    w.add(inputs[0])
    with pytest.raises(ValueError, match="duplicate name"):
        w.add(inputs[0])  # refused; the writer goes on
    assert w.is_open and w.tensor_count == 1
    w.finish()
    with pytest.raises(ValueError, match="already finished"):
        w.finish()
    with pytest.raises(ValueError, match="already finished"):
        w.add(inputs[1])
    w.abort()  # harmless after finish
    assert (tmp_path / "m.nnp").exists()
    # An alias of a tensor not added yet.
    w = _core.NnpFileWriter(str(tmp_path / "n.nnp"), _options())
    with pytest.raises(ValueError, match="earlier tensor"):
        w.add(inputs[-1])
    w.abort()
    with pytest.raises(ValueError, match="aborted"):
        w.add(inputs[0])
    assert _leftovers(tmp_path) == []


def test_open_errors(tmp_path):
    with pytest.raises(OSError, match="missing"):
        _core.NnpFileWriter(str(tmp_path / "missing" / "m.nnp"), _options())
    bad = _options()
    bad.block_elements = 0
    with pytest.raises(ValueError, match="block_elements"):
        _core.NnpFileWriter(str(tmp_path / "m.nnp"), bad)
    assert os.listdir(tmp_path) == []


def test_verify_failure_is_a_format_error(tmp_path):
    # Metadata that is not UTF-8 (pybind11 passes bytes through): the writer stores it as asked,
    # the reader rejects it, so verify fails at finish() with the reader's error and no file.
    inputs = _inputs(_records())
    path = tmp_path / "v.nnp"
    o = _options(verify=True)
    o.metadata = b"\xff\xfe"
    with _core.NnpFileWriter(str(path), o) as w:
        w.add(inputs[0])
        with pytest.raises(nnpress.FormatError, match="UTF-8"):
            w.finish()
    assert os.listdir(tmp_path) == []
    # The same with verify off: written; no reader opens it.
    o.verify = False
    with _core.NnpFileWriter(str(path), o) as w:
        w.add(inputs[0])
        w.finish()
    with pytest.raises(nnpress.FormatError, match="UTF-8"):
        NnpFile(path)


_FSIZE_CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    import numpy as np
    from nnpress import _core
    folder = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    small = _core.TensorInput(name="small", dtype=_core.DType.uint8, role=_core.TensorRole.buffer,
                              storage=_core.Storage.raw, shape=[1000], raw=np.zeros(1000, np.uint8))
    big = _core.TensorInput(name="big", dtype=_core.DType.uint8, role=_core.TensorRole.buffer,
                            storage=_core.Storage.raw, shape=[1 << 20], raw=np.ones(1 << 20, np.uint8))
    o = _core.WriterOptions()
    o.threads = 2
    path = os.path.join(folder, "m.nnp")
    try:
        with _core.NnpFileWriter(path, o) as w:
            w.add(small)
            w.add(big)
            w.finish()
    except OSError as e:
        assert "m.nnp" in str(e) and "too large" in str(e), str(e)
        assert not w.is_open
        print("OSError", sorted(os.listdir(folder)))
        sys.exit(0)
    sys.exit(3)
    """
)


def test_file_size_limit_raises_oserror_and_leaves_nothing(tmp_path):
    (tmp_path / "m.nnp").write_bytes(b"old")
    r = subprocess.run([sys.executable, "-c", _FSIZE_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "OSError ['m.nnp']"
    assert (tmp_path / "m.nnp").read_bytes() == b"old"


def test_reader_reports_a_file_truncated_while_open(tmp_path):
    # NnpFile(path) maps the file; a decode after someone truncated it is an OSError, not a crash.
    inputs = _inputs(_records())
    path = tmp_path / "m.nnp"
    with _core.NnpFileWriter(str(path), _options()) as w:
        for t in inputs:
            w.add(t)
        w.finish()
    f = NnpFile(path)
    before = f.read("w.big")
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(OSError, match="changed size"):
        f.read("w.big")
    # Replacing the file by rename (what the writers do) is safe: an open reader keeps the old file.
    with _core.NnpFileWriter(str(path), _options()) as w:
        for t in inputs:
            w.add(t)
        w.finish()
    g = NnpFile(path)
    with _core.NnpFileWriter(str(path), _options()) as w:
        w.add(inputs[4])
        w.finish()
    assert NnpFile(path).names == ["bias"]
    np.testing.assert_array_equal(g.read("w.big"), before)
