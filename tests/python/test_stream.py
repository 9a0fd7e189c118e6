"""Streaming compress / decompress (nnpress.stream): the same bytes as the in-memory path, one
tensor at a time, outputs complete or absent (a full disk included), shards transformers loads."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import nnpress  # noqa: E402
from nnpress import stream  # noqa: E402
from nnpress.checkpoint import open_checkpoint  # noqa: E402
from nnpress.encode import encode_model, file_metadata, write_records  # noqa: E402
from nnpress.stream import source_metadata  # noqa: E402
from nnpress.traverse import collect  # noqa: E402


def _state(seed=0) -> dict:
    """A small LLM-shaped bfloat16 state dict, with the odd tensors real checkpoints have."""
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(96, 32, generator=g).bfloat16()}
    for i in range(3):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = (1 + 0.1 * torch.randn(32, generator=g)).bfloat16()
        sd[p + "self_attn.q_proj.weight"] = (0.05 * torch.randn(32, 32, generator=g)).bfloat16()
        sd[p + "mlp.up_proj.weight"] = (0.05 * torch.randn(80, 32, generator=g)).bfloat16()
        sd[p + "mlp.down_proj.weight"] = (0.05 * torch.randn(32, 80, generator=g)).bfloat16()
    sd["model.layers.1.mlp.down_proj.bias"] = torch.randn(32, generator=g).half()
    nan = torch.randn(16, 8, generator=g)
    nan[3, 4] = float("nan")
    sd["model.odd.weight"] = nan  # float32 with a NaN: stored exactly
    sd["model.rotary.a_scale"] = torch.ones(3).bfloat16()  # 6 bytes: what follows it would be misaligned
    sd["model.rotary.inv_freq"] = torch.arange(16, dtype=torch.int64)
    sd["lm_head.weight"] = (0.05 * torch.randn(96, 32, generator=g)).bfloat16()
    return sd


def _write_sharded(folder, sd, n=3, metadata=None, index=True):
    os.makedirs(folder, exist_ok=True)
    names = list(sd)
    size = -(-len(names) // n)
    wm = {}
    for k in range(n):
        fn = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        part = {nm: sd[nm] for nm in names[k * size : (k + 1) * size]}
        safetensors_torch.save_file(part, os.path.join(folder, fn), metadata=metadata)
        wm.update(dict.fromkeys(part, fn))
    if index:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 1}, "weight_map": wm}, f)
    return folder


def _in_memory_bytes(source, config, ckpt_metadata) -> bytes:
    """The in-memory path: every tensor loaded, encode_model, one write_records call."""
    encoded = encode_model(collect(source), config)
    return write_records(encoded, config, source_metadata(file_metadata(config), ckpt_metadata))


CONFIGS = [
    nnpress.CodecConfig(),  # auto -> trellis at this size
    nnpress.CodecConfig(method="nearest", block_elements=256, threads=1),  # many row blocks, one thread
    nnpress.CodecConfig(method="rdoq", rel_step=1 / 12, lossless_roles=("buffer",)),  # biases/norms quantized
]


@pytest.mark.parametrize("config", CONFIGS)
def test_streamed_file_is_byte_identical_to_the_in_memory_path(tmp_path, config):
    sd = _state()
    ck = _write_sharded(tmp_path / "ck", sd, metadata={"format": "pt"})
    streamed = tmp_path / "s.nnp"
    rep = nnpress.compress(ck, streamed, config)
    data = streamed.read_bytes()
    assert data == _in_memory_bytes(ck, config, {"format": "pt"})
    assert rep.file_bytes == len(data)
    assert [t.name for t in rep.tensors] == open_checkpoint(ck).names  # shards in order, each in its header's
    assert sum(t.stored_bytes for t in rep.tensors) < len(data)
    assert all(t.stored_bytes > 0 for t in rep.tensors)
    # the index file names the same checkpoint; a state_dict in memory gives the same tensors (no
    # source __metadata__ then, so compare against a checkpoint written without one)
    assert nnpress.compress(ck / "model.safetensors.index.json", tmp_path / "i.nnp", config).file_bytes == len(data)
    assert (tmp_path / "i.nnp").read_bytes() == data
    plain = _write_sharded(tmp_path / "plain", sd, metadata=None)
    nnpress.compress(plain, tmp_path / "p.nnp", config)
    nnpress.compress({n: sd[n] for n in open_checkpoint(plain).names}, tmp_path / "m.nnp", config)
    assert (tmp_path / "p.nnp").read_bytes() == (tmp_path / "m.nnp").read_bytes()


def test_report_error_matches_the_decoded_file(tmp_path):
    sd = _state()
    ck = _write_sharded(tmp_path / "ck", sd)
    rep = nnpress.compress(ck, tmp_path / "s.nnp")
    back = nnpress.decompress(tmp_path / "s.nnp")
    for t in rep.tensors:
        w = sd[t.name].double()
        err = float((w - back[t.name].double()).norm() / w.norm()) if t.storage == "quantized" else 0.0
        assert t.rel_error == pytest.approx(err, rel=1e-5, abs=1e-12), t.name


def test_one_tensor_ahead(tmp_path, monkeypatch):
    """The reader stays one tensor ahead of the encoders, and big tensors are encoded one at a time:
    at most two tensors read from disk are alive at once."""
    g = torch.Generator().manual_seed(1)
    sd = {f"l{i}.weight": torch.randn(64, 64, generator=g).bfloat16() for i in range(8)}
    ck = _write_sharded(tmp_path / "ck", sd, n=2)
    alive: set = set()
    peak = [0]
    real = stream.read_tensor

    def counting(info):
        a = real(info)
        alive.add(id(a))
        weakref.finalize(a, alive.discard, id(a))
        peak[0] = max(peak[0], len(alive))
        return a

    monkeypatch.setattr(stream, "read_tensor", counting)
    monkeypatch.setattr(stream, "MIN_WINDOW_ELEMENTS", 0)  # every tensor counts as "big"
    nnpress.compress(ck, tmp_path / "s.nnp", nnpress.CodecConfig(threads=2))
    assert 1 <= peak[0] <= 2


def test_round_trip_through_shards_keeps_dtypes_metadata_and_exact_tensors(tmp_path):
    sd = _state()
    ck = _write_sharded(tmp_path / "ck", sd, metadata={"format": "pt", "note": "x"})
    nnp = tmp_path / "m.nnp"
    rep = nnpress.compress(ck, nnp)
    ref = nnpress.decompress(nnp)
    out = tmp_path / "out"
    s = nnpress.decompress_to_file(nnp, out, max_shard_size="4KB")
    shards = sorted(p for p in os.listdir(out) if p.endswith(".safetensors"))
    assert len(shards) > 2 and all(p.endswith(f"-of-{len(shards):05d}.safetensors") for p in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(sd)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in sd.values())
    assert s["files"][-1].endswith("model.safetensors.index.json")
    back = {}
    for p in shards:  # every tensor's data starts at a multiple of its element size (zero-copy loaders)
        raw = (out / p).read_bytes()
        (hlen,) = struct.unpack("<Q", raw[:8])
        assert hlen % 8 == 0
        for name, spec in json.loads(raw[8 : 8 + hlen]).items():
            if name != "__metadata__":
                assert spec["data_offsets"][0] % {"I64": 8, "F32": 4}.get(spec["dtype"], 2) == 0, (p, name)
        assert os.path.getsize(out / p) <= 4000 + 4096 or len(safetensors_torch.load_file(out / p)) == 1
        with safetensors_torch.safe_open(out / p, "pt") as f:
            assert f.metadata() == {"format": "pt", "note": "x"}
        back.update(safetensors_torch.load_file(out / p))
    exact = {t.name for t in rep.tensors if t.storage == "raw"}
    assert {"model.odd.weight", "model.rotary.inv_freq"} <= exact
    # norms are quantized near-losslessly by default (config.fine_roles): close, in their dtype
    norm = "model.layers.0.input_layernorm.weight"
    assert norm not in exact and back[norm].dtype == torch.bfloat16
    assert (back[norm].float() - sd[norm].float()).abs().max() <= 0.01
    for name, t in sd.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(back[name], ref[name]) or name == "model.odd.weight"
        if name in exact:
            assert torch.equal(back[name], t) or name == "model.odd.weight"
    assert torch.equal(torch.isnan(back["model.odd.weight"]), torch.isnan(sd["model.odd.weight"]))
    assert torch.equal(back["model.odd.weight"].nan_to_num(), sd["model.odd.weight"].nan_to_num())
    # one file; and the shard folder compresses back to the same file (names, dtypes, metadata kept)
    nnpress.decompress_to_file(nnp, tmp_path / "one.safetensors")
    one = safetensors_torch.load_file(tmp_path / "one.safetensors")
    assert list(one) == list(sd) or sorted(one) == sorted(sd)
    assert all(torch.equal(one[n].nan_to_num(), back[n].nan_to_num()) for n in sd)
    assert open_checkpoint(out).metadata == {"format": "pt", "note": "x"}


def test_single_shard_is_model_safetensors_and_stale_weights_go(tmp_path):
    sd = _state()
    nnp = tmp_path / "m.nnp"
    nnpress.compress(sd, nnp)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    nnpress.decompress_to_file(nnp, out, max_shard_size="4KB")
    assert (out / "model.safetensors.index.json").exists()
    nnpress.decompress_to_file(nnp, out)  # fits one shard now: the old shards and index go
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    with safetensors_torch.safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}  # transformers requires it; the source had none


def test_random_access_decodes_one_tensor(tmp_path):
    sd = _state()
    nnp = tmp_path / "m.nnp"
    nnpress.compress(sd, nnp)
    f = nnpress.NnpFile(nnp)
    assert f.keys() == list(sd)
    full = nnpress.decompress(nnp, as_numpy=True)
    np.testing.assert_array_equal(f["model.rotary.inv_freq"], sd["model.rotary.inv_freq"].numpy())
    np.testing.assert_array_equal(nnpress.container.bfloat16_to_float32(f["lm_head.weight"]), full["lm_head.weight"])
    assert f.get("missing") is None and f.get("missing", 7) == 7
    with pytest.raises(KeyError, match="missing"):
        f["missing"]
    buf = np.empty(f.nbytes("lm_head.weight"), np.uint8)
    f.read_into("lm_head.weight", buf)
    np.testing.assert_array_equal(buf.view(np.uint16).reshape(96, 32), f["lm_head.weight"])
    with pytest.raises(ValueError, match="bytes"):
        f.read_into("lm_head.weight", np.empty(3, np.uint8))


# ------------------------------------------------------------------ load_state_dict
class _Tiny(torch.nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.emb = torch.nn.Embedding(96, 32, dtype=dtype)
        self.fc = torch.nn.Linear(32, 80, dtype=dtype)
        self.norm = torch.nn.LayerNorm(80, dtype=dtype)
        self.head = torch.nn.Linear(32, 96, bias=False, dtype=dtype)
        self.head.weight = self.emb.weight  # tied
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


def test_load_state_dict_in_place_and_converting(tmp_path, monkeypatch):
    src = _Tiny(torch.bfloat16)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    nnp = tmp_path / "t.nnp"
    nnpress.compress(src, nnp)
    ref = nnpress.decompress(nnp)
    assert nnpress.NnpFile(nnp).entry("head.weight")["storage"] == "alias"
    # same dtype: decoded straight into the parameters' storage (the data pointers do not move)
    dst = _Tiny(torch.bfloat16)
    ptrs = {n: p.data_ptr() for n, p in dst.state_dict().items()}
    temporaries = []
    real_read = nnpress.NnpFile.read
    monkeypatch.setattr(nnpress.NnpFile, "read", lambda self, n, **k: temporaries.append(n) or real_read(self, n, **k))
    res = nnpress.load_state_dict(dst, nnp)
    assert temporaries == []  # no decoded copy: every tensor went into its parameter
    assert res.missing_keys == [] and res.unexpected_keys == []
    for n, t in dst.state_dict().items():
        assert t.data_ptr() == ptrs[n] and torch.equal(t, ref[n]), n
    assert dst.head.weight is dst.emb.weight
    # another dtype: converted one tensor at a time
    dst32 = _Tiny(torch.float32)
    nnpress.load_state_dict(dst32, nnp)
    assert sorted(temporaries) == sorted(set(ref) - {"head.weight", "steps"})  # one temporary per converted tensor
    for n, t in dst32.state_dict().items():
        assert t.dtype == (torch.int64 if n == "steps" else torch.float32)
        assert torch.equal(t, ref[n].to(t.dtype)), n


def test_load_state_dict_strictness(tmp_path):
    nnp = tmp_path / "t.nnp"
    sd = _Tiny().state_dict()
    nnpress.compress({k: v for k, v in sd.items() if k != "fc.bias"} | {"extra": torch.ones(3)}, nnp)
    dst = _Tiny()
    before = dst.fc.weight.detach().clone()
    with pytest.raises(nnpress.NnpMismatchError, match=r"missing keys \['fc.bias'\].*unexpected keys \['extra'\]"):
        nnpress.load_state_dict(dst, nnp)
    assert torch.equal(dst.fc.weight, before)  # nothing written before the check
    res = nnpress.load_state_dict(dst, nnp, strict=False)
    assert res.missing_keys == ["fc.bias"] and res.unexpected_keys == ["extra"]
    assert not torch.equal(dst.fc.weight, before)
    nnpress.compress({"fc.weight": torch.zeros(3, 3)}, nnp)
    with pytest.raises(nnpress.NnpMismatchError, match="shape mismatch"):
        nnpress.load_state_dict(_Tiny(), nnp, strict=False)


# ------------------------------------------------------------------ outputs complete or absent
def _run_with_file_limit(limit: int, argv: list[str]):
    """``nnpress argv`` in a child whose files may not grow beyond ``limit`` bytes (a full disk:
    writes fail with EFBIG; SIGXFSZ ignored so that the process sees the error)."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from nnpress.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _listing(folder):
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))}


def test_full_disk_compress_leaves_old_file_and_no_temporaries(tmp_path):
    sd = _state()
    ck = _write_sharded(tmp_path / "ck", sd)
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.nnp").write_bytes(b"old")
    full = nnpress.compress(ck, tmp_path / "ref.nnp").file_bytes
    r = _run_with_file_limit(full // 2, ["compress", str(ck), str(out / "m.nnp"), "-q"])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("nnpress compress: error:") and len(r.stderr.strip().splitlines()) == 1
    assert "too large" in r.stderr.lower() or "space" in r.stderr.lower()
    assert _listing(out) == {"m.nnp": b"old"}


@pytest.mark.parametrize("existing", [False, True])
def test_full_disk_decompress_to_a_folder_leaves_nothing_partial(tmp_path, existing):
    sd = _state()
    nnp = tmp_path / "m.nnp"
    nnpress.compress(sd, nnp)
    out = tmp_path / "out"
    if existing:
        nnpress.decompress_to_file(nnp, out, max_shard_size="4KB")
        (out / "config.json").write_text("{}")
        before = _listing(out)
    r = _run_with_file_limit(6000, ["decompress", str(nnp), str(out), "--max-shard-size", "5KB"])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("nnpress decompress: error:") and len(r.stderr.strip().splitlines()) == 1
    if existing:
        assert _listing(out) == before  # old checkpoint intact, no temporaries
    else:
        assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == (["m.nnp", "out"] if existing else ["m.nnp"])


def test_full_disk_decompress_to_a_file(tmp_path):
    nnp = tmp_path / "m.nnp"
    nnpress.compress(_state(), nnp)
    (tmp_path / "o.safetensors").write_bytes(b"old")
    r = _run_with_file_limit(4000, ["decompress", str(nnp), str(tmp_path / "o.safetensors")])
    assert r.returncode == 1, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.nnp", "o.safetensors"]
    assert (tmp_path / "o.safetensors").read_bytes() == b"old"


def test_error_mid_stream_removes_the_temporary_output(tmp_path, monkeypatch):
    sd = _state()
    ck = _write_sharded(tmp_path / "ck", sd)
    real = stream.read_tensor
    calls = [0]

    def failing(info):
        calls[0] += 1
        if calls[0] == 5:
            raise OSError("read error in the middle")
        return real(info)

    monkeypatch.setattr(stream, "read_tensor", failing)
    (tmp_path / "x.nnp").write_bytes(b"old")
    with pytest.raises(OSError, match="read error in the middle"):
        nnpress.compress(ck, tmp_path / "x.nnp")
    assert sorted(os.listdir(tmp_path)) == ["ck", "x.nnp"] and (tmp_path / "x.nnp").read_bytes() == b"old"


def test_cli_decompress_folder_and_sizes(tmp_path):
    nnp = tmp_path / "m.nnp"
    nnpress.compress(_state(), nnp)
    from nnpress.cli import main

    assert main(["decompress", str(nnp), str(tmp_path / "d") + "/", "--max-shard-size", "4KB", "-q"]) == 0
    assert (tmp_path / "d" / "model.safetensors.index.json").exists()
    assert main(["decompress", str(nnp), str(tmp_path / "d2"), "--max-shard-size", "lots"]) == 1
    assert main(["decompress", str(nnp), str(tmp_path / "x.safetensors"), "--max-shard-size", "1GB"]) == 1
    assert not (tmp_path / "d2").exists() and not (tmp_path / "x.safetensors").exists()


def test_info_reads_only_the_table(tmp_path):
    """``nnpress info`` and NnpFile work from the header and table alone: with every chunk's bytes
    overwritten, the table still lists everything, and only decoding a tensor finds the damage."""
    nnp = tmp_path / "m.nnp"
    nnpress.compress(_state(), nnp)
    data = bytearray(nnp.read_bytes())
    table_offset = struct.unpack_from("<Q", data, 16)[0]
    data[40:table_offset] = bytes(table_offset - 40)  # the data region: every chunk zeroed
    nnp.write_bytes(bytes(data))
    from nnpress.api import info

    d = info(nnp)
    assert d["tensors"] == len(_state()) and d["metadata"]["producer"] == "nnpress"
    f = nnpress.NnpFile(nnp)
    with pytest.raises(nnpress.FormatError):
        f["lm_head.weight"]


def test_a_folder_destination_is_a_one_line_error_naming_it(tmp_path):
    """compress to a folder (existing, or a path ending in '/'): IsADirectoryError naming the path,
    before any work, from every writer (in-memory, streamed, the writers below them)."""
    sd = _state()
    st = tmp_path / "m.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    (tmp_path / "dd").mkdir()
    dests = [tmp_path / "dd", f"{tmp_path / 'dd'}/", f"{tmp_path / 'new'}/", f"{tmp_path / 'new'}/.", f"{tmp_path}/.."]
    for dest in dests:
        for source in (st, sd):  # streamed, in memory
            progress = []
            with pytest.raises(
                IsADirectoryError, match="^" + re.escape(f"cannot write '{dest}': ") + ".*folder, not a file"
            ):
                nnpress.compress(source, dest, progress=lambda *a, seen=progress: seen.append(a))
            assert progress == []  # refused before encoding anything
        ckpt = open_checkpoint(st)
        with pytest.raises(IsADirectoryError, match="folder, not a file"):
            stream.compress_checkpoint(ckpt, os.fspath(dest), nnpress.CodecConfig(), {})
        with pytest.raises(IsADirectoryError, match="folder, not a file"):
            nnpress.container.write_bytes_atomic(dest, b"x")
    assert sorted(os.listdir(tmp_path)) == ["dd", "m.safetensors"] and os.listdir(tmp_path / "dd") == []
    for args in ([st, tmp_path / "dd"], [st, f"{tmp_path / 'dd'}/"], [tmp_path / "m.pt", f"{tmp_path / 'dd'}/"]):
        torch.save(sd, tmp_path / "m.pt")
        r = subprocess.run(
            [sys.executable, "-m", "nnpress.cli", "compress", *map(str, args)], capture_output=True, text=True
        )
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"nnpress compress: error: cannot write '{args[1]}': "), r.stderr
        assert "Writer" not in r.stderr and ".tmp" not in r.stderr  # no class name, no temporary file
