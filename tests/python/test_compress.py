"""nnpress.compress / nnpress.decompress: every input kind and dtype, roles, tied weights, random
access, CodecConfig rules, determinism, reports, and bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import nnpress
from nnpress.config import CodecConfig, TensorPlan, spread_of
from nnpress.traverse import collect, guess_role, load_safetensors, save_safetensors


class TiedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(40, 12)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.ln = torch.nn.LayerNorm(12)
        self.fc = torch.nn.Linear(12, 40)
        self.fc.weight = self.embed.weight  # tied
        self.register_buffer("mask", torch.tensor([True, False, True]))


def _model():
    torch.manual_seed(0)
    m = TiedNet()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
    return m


def _expected_value(name, cfg, tensor, f):
    """What the decoder must return for one tensor, from the file's step/method."""
    e = f.entry(name)
    if e["storage"] == "raw":
        return tensor
    if e["storage"] == "alias":
        return None
    w = tensor.float().numpy()
    q = nnpress.quantize(w, e["step"], lam=e["lambda"], method=e["method"], rows_per_block=e["rows_per_block"] or None)
    return nnpress.dequantize(q, e["step"], method=e["method"])


def test_module_round_trip_roles_and_ties(tmp_path):
    m = _model()
    path = tmp_path / "m.nnp"
    rep = nnpress.compress(m, path, CodecConfig(method="nearest"))
    f = nnpress.NnpFile(path)
    sd = m.state_dict()
    assert f.names == list(sd)
    roles = {e["name"]: e["role"] for e in f.entries}
    assert roles["embed.weight"] == "embedding"
    assert roles["conv.weight"] == "weight" and roles["conv.bias"] == "bias"
    assert roles["bn.weight"] == "norm" and roles["bn.running_var"] == "buffer"
    assert roles["bn.num_batches_tracked"] == "buffer" and roles["mask"] == "buffer"
    assert roles["ln.weight"] == "norm" and roles["ln.bias"] == "norm"
    assert f.entry("fc.weight")["storage"] == "alias" and f.entry("fc.weight")["alias_of"] == "embed.weight"
    storages = {e["name"]: e["storage"] for e in f.entries}
    assert storages["conv.weight"] == "quantized" and storages["conv.bias"] == "quantized"  # fine role
    assert f.entry("conv.bias")["method"] == "nearest" and storages["bn.running_var"] == "raw"
    out = nnpress.decompress(path)
    assert out["fc.weight"] is out["embed.weight"]
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
        exp = _expected_value(name, None, t, f)
        if exp is not None:
            np.testing.assert_array_equal(out[name].numpy(), np.asarray(exp), err_msg=name)
    m2 = TiedNet()
    m2.load_state_dict(out)
    assert rep.params == sum(t.numel() for n, t in sd.items() if n != "fc.weight")
    assert rep.file_bytes == os.path.getsize(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_float_dtypes(tmp_path, dtype):
    torch.manual_seed(1)
    sd = {"layer.weight": (torch.randn(33, 20) * 0.1).to(dtype), "layer.bias": torch.randn(33).to(dtype)}
    path = tmp_path / "d.nnp"
    nnpress.compress(sd, path, CodecConfig(method="nearest", step=2**-7, lossless_roles=("bias",)))
    out = nnpress.decompress(path)
    assert out["layer.weight"].dtype == dtype
    assert torch.equal(out["layer.bias"], sd["layer.bias"])  # its role is lossless
    w = sd["layer.weight"].to(torch.float64)
    # nearest rounding at step 2^-7: error at most step/2 plus the dtype's own rounding
    err = (out["layer.weight"].to(torch.float64) - w).abs().max().item()
    assert err <= 2**-8 * 1.01 + (w.abs().max().item() * 2**-7 if dtype == torch.bfloat16 else 1e-3 * 0.2)
    expected = torch.from_numpy(nnpress.dequantize(np.rint(w.numpy() / 2**-7).astype(np.int32), 2**-7)).to(dtype)
    assert torch.equal(out["layer.weight"], expected)
    npy = nnpress.decompress(path, as_numpy=True)
    if dtype == torch.bfloat16:
        assert npy["layer.weight"].dtype == np.float32
        assert torch.equal(torch.from_numpy(npy["layer.weight"]).to(torch.bfloat16), expected)
    else:
        np.testing.assert_array_equal(npy["layer.weight"], expected.numpy())


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool])
def test_integer_and_bool_tensors_are_exact(tmp_path, dtype):
    g = torch.Generator().manual_seed(2)
    t = torch.randint(
        -100 if dtype not in (torch.uint8, torch.bool) else 0, 100 if dtype != torch.bool else 2, (4, 7), generator=g
    ).to(dtype)
    path = tmp_path / "i.nnp"
    nnpress.compress({"buf": t, "w": torch.randn(5, 5)}, path)
    out = nnpress.decompress(path)
    assert out["buf"].dtype == dtype and torch.equal(out["buf"], t)
    assert nnpress.NnpFile(path).entry("buf")["role"] == "buffer"


def test_names_unicode_dots_empty_and_scalar(tmp_path):
    sd = {
        "módulo.peso.ünïcode.weight": torch.randn(6, 4),
        "a.b.c.d.e.f.g.h": torch.randn(3, 3, 3),
        "日本語": torch.randn(2, 5),
        "empty.weight": torch.zeros(0, 7),
        "empty1d": torch.zeros(0),
        "scalar_w": torch.tensor(0.75),
        "scalar_i": torch.tensor(5),
    }
    path = tmp_path / "u.nnp"
    nnpress.compress(sd, path, CodecConfig(plan={"scalar_w": TensorPlan(lossless=False, step=0.25, method="nearest")}))
    out = nnpress.decompress(path)
    assert list(out) == list(sd)
    for k, v in sd.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype, k
    assert out["scalar_w"].item() == 0.75  # 3 * 0.25, quantized exactly
    assert nnpress.NnpFile(path).entry("scalar_w")["storage"] == "quantized"
    assert out["scalar_i"].item() == 5


def test_numpy_state_dict_and_random_access(tmp_path):
    rng = np.random.default_rng(3)
    sd = {f"l{i}.weight": rng.standard_normal((20, 30)).astype(np.float32) for i in range(5)}
    sd["shared"] = sd["l2.weight"]  # the same array object: tied
    path = tmp_path / "n.nnp"
    nnpress.compress(sd, path, CodecConfig(block_elements=90))
    f = nnpress.NnpFile(path)
    assert f.entry("l0.weight")["chunks"] == 7  # 3 rows per block, 20 rows
    assert f.entry("shared")["storage"] == "alias"
    some = nnpress.decompress(path, as_numpy=True, names=["l3.weight", "shared"])
    assert list(some) == ["l3.weight", "shared"]
    full = nnpress.decompress(path, as_numpy=True, threads=1)
    np.testing.assert_array_equal(some["l3.weight"], full["l3.weight"])
    np.testing.assert_array_equal(some["shared"], full["l2.weight"])
    with pytest.raises(KeyError):
        nnpress.decompress(path, names=["nope"])


def test_safetensors_and_pt_inputs(tmp_path):
    m = _model()
    sd = {k: v.clone() for k, v in m.state_dict().items() if k != "fc.weight"}
    sd["half"] = torch.randn(4, 4).half()
    sd["bf"] = torch.randn(4, 4).to(torch.bfloat16)
    st = tmp_path / "m.safetensors"
    save_safetensors(sd, st)
    # our safetensors files are readable by the reference implementation, and vice versa
    import safetensors.torch

    ref = safetensors.torch.load_file(str(st))
    for k in sd:
        assert torch.equal(ref[k], sd[k]), k
    st2 = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(sd, str(st2))
    back = load_safetensors(st2)
    assert set(back) == set(sd)
    pt = tmp_path / "m.pt"
    torch.save(sd, pt)
    cfg = CodecConfig(method="nearest")
    a = nnpress.compress(st, tmp_path / "a.nnp", cfg)
    b = nnpress.compress(pt, tmp_path / "b.nnp", cfg)
    c = nnpress.compress(sd, tmp_path / "c.nnp", cfg)
    assert (tmp_path / "a.nnp").read_bytes() == (tmp_path / "b.nnp").read_bytes() == (tmp_path / "c.nnp").read_bytes()
    assert a.file_bytes == b.file_bytes == c.file_bytes
    out = nnpress.decompress(tmp_path / "a.nnp")
    assert out["bf"].dtype == torch.bfloat16 and out["half"].dtype == torch.float16


def test_torchscript_file_input(tmp_path):
    """A TorchScript archive (torch.jit.save) compresses to the same file as its module's state_dict,
    ties included; a broken archive is a FormatError."""
    import zipfile

    m = _model().eval()
    ts = tmp_path / "m.ts.pt"
    torch.jit.save(torch.jit.script(m), str(ts))
    nnpress.compress(ts, tmp_path / "a.nnp")
    nnpress.compress(m.state_dict(), tmp_path / "b.nnp")
    assert (tmp_path / "a.nnp").read_bytes() == (tmp_path / "b.nnp").read_bytes()
    assert nnpress.NnpFile(tmp_path / "a.nnp").entry("fc.weight")["storage"] == "alias"
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(ts) as z, zipfile.ZipFile(broken, "w") as out:
        for info in z.infolist():
            body = z.read(info.filename)
            out.writestr(info, body[: len(body) // 2] if info.filename.endswith("/data.pkl") else body)
    with pytest.raises(nnpress.FormatError, match="TorchScript archive that does not load"):
        nnpress.compress(broken, tmp_path / "c.nnp")


class Evil:
    """A pickled object that a weights-only load must refuse."""


def test_pt_with_pickled_objects_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.randn(2), "obj": Evil()}, p)
    with pytest.raises(nnpress.FormatError, match="weights-only"):
        nnpress.compress(p, tmp_path / "x.nnp")
    assert not (tmp_path / "x.nnp").exists()


def test_deterministic_for_any_thread_count(tmp_path):
    torch.manual_seed(4)
    sd = {"a": torch.randn(200, 64), "b": torch.randn(50, 3, 3, 3)}
    outs = []
    for threads in (1, 2, 3):
        p = tmp_path / f"t{threads}.nnp"
        nnpress.compress(sd, p, CodecConfig(threads=threads, block_elements=1000))
        outs.append(p.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_config_rules():
    w = np.random.default_rng(5).standard_normal(1000).astype(np.float32) * 0.5
    std = spread_of(w)  # rule 4's scale of the tensor
    assert CodecConfig(rel_step=0.1, method="nearest").resolve("x", "weight", "float32", w).step == pytest.approx(
        0.1 * std
    )
    assert CodecConfig(step=0.01).resolve("x", "weight", "float32", w).step == 0.01
    assert CodecConfig(qp=-38).resolve("x", "weight", "float32", w).step == 2 ** (-38 / 4)
    cfg = CodecConfig(
        step=0.01,
        lam_scale=2.0,
        plan={"x": TensorPlan(step=0.5, method="trellis"), "enc.*": {"rel_step": 0.2}, "keep": {"lossless": True}},
    )
    p = cfg.resolve("x", "weight", "float32", w)
    assert (p.step, p.method, p.lam) == (0.5, "trellis", 2.0 * 0.25)
    assert cfg.resolve("enc.layer.w", "weight", "float32", w).step == pytest.approx(0.2 * std)
    assert cfg.resolve("keep", "weight", "float32", w).lossless
    # a bias: the fine rule (near-lossless rounding), its step never coarser than the absolute one
    p = cfg.resolve("b", "bias", "float32", w)
    assert not p.lossless and p.method == "nearest" and p.step == pytest.approx(std / 256)
    assert CodecConfig(step=1e-4).resolve("b", "bias", "float32", w).step == 1e-4
    assert CodecConfig(lossless_roles=("bias",)).resolve("b", "bias", "float32", w).lossless
    assert cfg.resolve("i", "weight", "int32", None).lossless
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    for bad in (
        dict(method="best"),
        dict(step=0),
        dict(step=float("nan")),
        dict(qp=1.5),
        dict(rel_step=-1),
        dict(lossless_roles=("weights",)),
        dict(block_elements=0),
        dict(threads=0),
    ):
        with pytest.raises(ValueError):
            CodecConfig(**bad)
    with pytest.raises(ValueError):
        TensorPlan(method="x")
    with pytest.raises(TypeError):
        CodecConfig(plan={"a": 3})


def test_guess_role():
    assert guess_role("encoder.layer.0.attention.output.LayerNorm.weight", "float32", (384,)) == "norm"
    assert guess_role("bn1.running_mean", "float32", (8,)) == "buffer"
    assert guess_role("fc.bias", "float32", (8,)) == "bias"
    assert guess_role("embeddings.word_embeddings.weight", "float32", (100, 8)) == "embedding"
    assert guess_role("fc.weight", "float32", (8, 8)) == "weight"
    assert guess_role("pos_ids", "int64", (1, 8)) == "buffer"
    assert guess_role("temperature", "float32", ()) == "other"
    # GPT-2's token and position tables are known by their module's name (the leaf is "weight")
    assert guess_role("transformer.wte.weight", "float32", (50, 8)) == "embedding"
    assert guess_role("wpe.weight", "float32", (50, 8)) == "embedding"
    assert guess_role("h.0.attn.c_attn.weight", "float32", (8, 24)) == "weight"


def test_roles_are_the_same_from_the_module_and_from_its_state_dict(tmp_path):
    """A norm layer's affine pair under a name that does not say norm ("1.weight") is "norm" from
    the module, its state_dict, a .pt and a .safetensors file (streamed) alike, and so compresses to
    the same bytes; nothing else changes role (a Linear's or conv's bias, PReLU's weight)."""
    from nnpress.checkpoint import open_checkpoint
    from nnpress.stream import checkpoint_entries

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.PReLU(8),
        torch.nn.GroupNorm(2, 8),
        torch.nn.InstanceNorm2d(8, affine=True),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 16),
        torch.nn.LayerNorm(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 16),
        torch.nn.LayerNorm((4, 4)),  # a 2-D affine pair
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # no constant tensors: their steps are special
    sd = model.state_dict()
    save_safetensors(sd, tmp_path / "m.safetensors")
    torch.save(sd, tmp_path / "m.pt")
    by_module = {e.name: e.role for e in collect(model)}
    norms = {f"{i}.{p}" for i in (1, 3, 4, 7) for p in ("weight", "bias")} | {"10.weight", "10.bias"}
    assert {n for n, r in by_module.items() if r == "norm"} == norms
    assert by_module["0.bias"] == by_module["6.bias"] == "bias" and by_module["2.weight"] == "other"
    for source in (sd, dict(sd), tmp_path / "m.pt", tmp_path / "m.safetensors"):
        assert {e.name: e.role for e in collect(source)} == by_module, source
    ckpt = open_checkpoint(tmp_path / "m.safetensors")
    assert {e.name: e.role for e in checkpoint_entries(ckpt)} == by_module
    files = []
    for i, source in enumerate((model, sd, tmp_path / "m.safetensors")):
        nnpress.compress(source, tmp_path / f"{i}.nnp", CodecConfig(method="nearest"))
        files.append((tmp_path / f"{i}.nnp").read_bytes())
    assert files[0] == files[1] == files[2]
    # documented limit: a norm without a bias whose name does not say norm is "other" without the module
    rms = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4, bias=False))
    assert collect(rms)[2].role == "norm" and collect(rms.state_dict())[2].role == "other"


def test_report_contents(tmp_path):
    torch.manual_seed(6)
    sd = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    rep = nnpress.compress(sd, tmp_path / "r.nnp")
    d = rep.to_dict()
    assert d["params"] == 64 * 64 + 64
    assert d["original_bytes"] == 4 * (64 * 64 + 64)
    assert d["ratio"] == pytest.approx(d["original_bytes"] / d["file_bytes"])
    assert d["bits_per_param"] == pytest.approx(8 * d["file_bytes"] / d["params"])
    t = {x["name"]: x for x in d["tensors"]}
    assert t["b"]["storage"] == "raw" and t["b"]["stored_bytes"] == 256 and t["b"]["rel_error"] == 0
    assert t["w"]["storage"] == "quantized" and 0 < t["w"]["rel_error"] < 0.05
    assert sum(x["stored_bytes"] for x in d["tensors"]) < d["file_bytes"]
    for k in ("load", "quantize", "encode", "write", "total"):
        assert d["times"][k] >= 0
    text = rep.table()
    assert "w" in text and "ratio" in text and "bits/param" in text
    import json

    json.dumps(d)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        nnpress.compress(tmp_path / "missing.safetensors", tmp_path / "o.nnp")
    with pytest.raises(FileNotFoundError):
        nnpress.compress({"w": np.zeros(3, np.float32)}, tmp_path / "no_dir" / "o.nnp")
    with pytest.raises(TypeError):
        nnpress.compress(42, tmp_path / "o.nnp")
    with pytest.raises(TypeError):
        nnpress.compress({"w": "text"}, tmp_path / "o.nnp")
    with pytest.raises(TypeError):
        nnpress.compress({"w": np.zeros(3)}, tmp_path / "o.nnp", config={"step": 1})
    with pytest.raises(ValueError):
        nnpress.compress(str(tmp_path / "x.txt") if (tmp_path / "x.txt").write_text("hi") else "", tmp_path / "o.nnp")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    with pytest.raises(nnpress.FormatError):
        nnpress.compress(bad, tmp_path / "o.nnp")
    corrupt = tmp_path / "c.nnp"
    corrupt.write_bytes(b"\x89NNP\r\n\x1a\n" + bytes(50))
    with pytest.raises(nnpress.FormatError):
        nnpress.decompress(corrupt)


def test_nan_weights_are_kept_exact(tmp_path):
    w = torch.randn(8, 8)
    w[2, 3] = float("nan")
    nnpress.compress({"w": w}, tmp_path / "nan.nnp")
    out = nnpress.decompress(tmp_path / "nan.nnp")["w"]
    assert torch.equal(torch.nan_to_num(out, 7.0), torch.nan_to_num(w, 7.0))


def test_collect_reports_ties_for_numpy_views():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    entries = collect({"a": a, "b": a, "c": a.copy(), "d": a[:, :2]})
    assert [e.alias_of for e in entries] == [None, "a", None, None]


def test_progress_callback_sees_every_tensor(tmp_path):
    sd = {f"t{i}": torch.randn(4, 4) for i in range(5)}
    calls = []
    nnpress.compress(sd, tmp_path / "p.nnp", progress=lambda done, total, name: calls.append((done, total, name)))
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4, 5]
    assert all(c[1] == 5 for c in calls) and calls[0][2] == "" and sorted(c[2] for c in calls[1:]) == list(sd)


def test_tensors_encode_concurrently_with_the_same_bytes(tmp_path):
    sd = {f"t{i}": torch.randn(40, 30, generator=torch.Generator().manual_seed(i)) for i in range(9)}
    sd["bad"] = torch.full((3, 3), float("nan"))  # stored exact, on any thread
    one = nnpress.compress(sd, tmp_path / "a.nnp", CodecConfig(threads=1))
    many = nnpress.compress(sd, tmp_path / "b.nnp", CodecConfig(threads=4))
    assert (tmp_path / "a.nnp").read_bytes() == (tmp_path / "b.nnp").read_bytes()
    assert [t.name for t in many.tensors] == list(sd) == [t.name for t in one.tensors]
    assert many.tensors[-1].storage == "raw"  # the NaN tensor


def test_existing_file_survives_a_failed_compress(tmp_path):
    path = tmp_path / "m.nnp"
    nnpress.compress({"w": torch.randn(8, 8)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        nnpress.compress({"w": torch.randn(8, 8), "bad": "not a tensor"}, path)
    with pytest.raises(ValueError):
        nnpress.compress({"w": torch.randn(8, 8)}, path, CodecConfig(plan={"w": {"step": -1.0}}))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnp"]


def test_outlier_beyond_level_range_is_kept_exact(tmp_path):
    w = torch.zeros(64, 64)
    w[0, :32] = torch.randn(32) * 1e-6
    w[5, 5] = 1e6
    nnpress.compress({"w": w}, tmp_path / "o.nnp", CodecConfig(step=1e-5))
    assert nnpress.NnpFile(tmp_path / "o.nnp").entry("w")["storage"] == "raw"
    assert torch.equal(nnpress.decompress(tmp_path / "o.nnp")["w"], w)


def test_model_folder_input(tmp_path):
    sd = {"a.weight": torch.randn(6, 6)}
    save_safetensors(sd, tmp_path / "model.safetensors")
    rep = nnpress.compress(tmp_path, tmp_path / "f.nnp")
    assert [t.name for t in rep.tensors] == ["a.weight"]
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError):
        nnpress.compress(empty, tmp_path / "g.nnp")


def test_default_step_rule_grows_with_tensor_size():
    """Rule 4: rel_step * spread * sqrt(n / mean n) (clipped to [1/8, 8]), halved for the trellis."""
    w = np.random.default_rng(7).standard_normal((40, 50)).astype(np.float32)
    std = spread_of(w)
    near = CodecConfig(method="nearest", rel_step=0.1)
    for mean_size, factor in ((2000, 1.0), (500, 2.0), (8000, 0.5), (10, 8.0), (10**7, 1 / 8)):
        assert near.resolve("x", "weight", "float32", w, mean_size=mean_size).step == pytest.approx(0.1 * std * factor)
    assert near.replace(size_exponent=0).resolve("x", "weight", "float32", w, mean_size=500).step == pytest.approx(
        0.1 * std
    )
    assert near.replace(size_exponent=2).resolve("x", "weight", "float32", w, mean_size=500).step == pytest.approx(
        0.1 * std * 4
    )
    trel = near.replace(method="trellis").resolve("x", "weight", "float32", w, mean_size=500)
    assert (trel.method, trel.step) == ("trellis", pytest.approx(0.1 * std * 2.0 * 0.5))
    # absolute steps and per-tensor overrides are taken as given, for every method
    assert CodecConfig(method="trellis", step=0.01).resolve("x", "weight", "float32", w, mean_size=500).step == 0.01
    o = CodecConfig(method="trellis", plan={"x": {"rel_step": 0.2}})
    assert o.resolve("x", "weight", "float32", w, mean_size=500).step == pytest.approx(0.2 * std)
    for bad in (
        dict(method="fast"),
        dict(size_exponent=-1),
        dict(size_exponent=3),
        dict(size_exponent=float("nan")),
        dict(auto_trellis_max=-1),
        dict(auto_trellis_max=1.5),
        dict(auto_trellis_max=True),
    ):
        with pytest.raises(ValueError):
            CodecConfig(**bad)


def test_auto_method_is_the_trellis_at_every_size():
    cfg = CodecConfig()
    assert cfg.method == "auto" and cfg.auto_trellis_max is None
    for total in (1, 1 << 20, (1 << 20) + 1, 1 << 40, None):
        assert cfg.model_method(total) == "trellis"
    w = np.ones((4, 4), np.float32)
    assert cfg.resolve("x", "weight", "float32", w, total_size=1 << 30).method == "trellis"
    # the previous rule, for speed: rounding above auto_trellis_max quantized weights
    fast = CodecConfig(auto_trellis_max=1 << 20)
    assert fast.model_method(1 << 20) == "trellis" and fast.model_method((1 << 20) + 1) == "nearest"
    assert fast.model_method(None) == "nearest"
    assert fast.resolve("x", "weight", "float32", w).method == "trellis"  # alone, it is a small model
    assert fast.resolve("x", "weight", "float32", w, total_size=1 << 21).method == "nearest"
    assert CodecConfig(method="rdoq").model_method(10) == "rdoq"
    assert CodecConfig(plan={"x": {"method": "rdoq"}}).resolve("x", "weight", "float32", w).method == "rdoq"
    for c in (cfg, fast):
        assert CodecConfig.from_dict(c.to_dict()) == c
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            CodecConfig(auto_trellis_max=bad)


def test_compress_default_uses_the_models_mean_size(tmp_path):
    """The file's steps are what rule 4 gives with the mean size of the quantized tensors (biases,
    quantized near-losslessly by the fine rule, do not count), and the decoder returns exactly the
    levels * steps."""
    torch.manual_seed(8)
    sd = {
        "big.weight": torch.randn(300, 40) * 0.1,
        "small.weight": torch.randn(20, 15) * 0.3,
        "big.bias": torch.randn(300),
    }
    path = tmp_path / "d.nnp"
    nnpress.compress(sd, path)
    f = nnpress.NnpFile(path)
    mean_size = (300 * 40 + 20 * 15) / 2
    assert CodecConfig().rel_step == 1 / 22
    for name in ("big.weight", "small.weight"):
        w = sd[name].numpy()
        e = f.entry(name)
        assert e["method"] == "trellis"
        want = (1 / 22) * spread_of(w) * math.sqrt(w.size / mean_size) * 0.5
        assert e["step"] == pytest.approx(want, rel=1e-6)
    b = f.entry("big.bias")
    assert b["storage"] == "quantized" and b["method"] == "nearest"
    assert b["step"] == pytest.approx(spread_of(sd["big.bias"].numpy()) / 256, rel=1e-6)
    back = nnpress.decompress(path)
    for name, t in sd.items():
        np.testing.assert_array_equal(back[name].numpy(), _expected_value(name, None, t, f))
    # above auto_trellis_max the same model is rounded to the nearest level, with the plain step
    nnpress.compress(sd, path, CodecConfig(auto_trellis_max=10_000))
    e = nnpress.NnpFile(path).entry("big.weight")
    assert e["method"] == "nearest"
    assert e["step"] == pytest.approx(
        (1 / 22) * spread_of(sd["big.weight"].numpy()) * math.sqrt(12000 / mean_size), rel=1e-6
    )


def test_cli_default_method_and_size_exponent(tmp_path):
    from nnpress.cli import main

    torch.manual_seed(9)
    src = tmp_path / "m.safetensors"
    sd = {"a.weight": torch.randn(64, 32), "b.weight": torch.randn(8, 8) * 3}
    save_safetensors(sd, src)
    assert main(["compress", str(src), str(tmp_path / "x.nnp"), "-q"]) == 0
    assert (
        main(
            [
                "compress",
                str(src),
                str(tmp_path / "y.nnp"),
                "-q",
                "--method",
                "auto",
                "--size-exponent",
                "0",
                "--rel-step",
                "0.05",
            ]
        )
        == 0
    )
    fx, fy = nnpress.NnpFile(tmp_path / "x.nnp"), nnpress.NnpFile(tmp_path / "y.nnp")
    assert fx.entry("a.weight")["method"] == fy.entry("a.weight")["method"] == "trellis"
    assert fx.metadata["config"]["method"] == "auto"
    assert fy.metadata["config"]["size_exponent"] == 0
    # size_exponent 0: both tensors have the same step relative to their spread
    ra = fy.entry("a.weight")["step"] / spread_of(sd["a.weight"].numpy())
    rb = fy.entry("b.weight")["step"] / spread_of(sd["b.weight"].numpy())
    assert ra == pytest.approx(rb, rel=1e-6) and ra == pytest.approx(0.05 * 0.5, rel=1e-6)


def test_default_beats_the_previous_default_on_the_digits_cnn(tmp_path):
    """The data-free default (size rule, trellis on a small model) gives a smaller file than the
    previous default (nearest, std/32 per tensor) and predictions at least as close to the
    original's (mean KL on the held-out digits), with no calibration data."""
    from nnpress.demo_models import build_digits_model, load_digits_data, train_digits_model

    model = train_digits_model("cnn", seed=0)
    x = torch.from_numpy(load_digits_data().x_test)

    def kl_and_bytes(cfg, name):
        path = tmp_path / name
        rep = nnpress.compress(model, path, cfg)
        m = build_digits_model("cnn")
        m.load_state_dict(nnpress.decompress(path))
        m.eval()
        with torch.no_grad():
            p, q = torch.log_softmax(model(x), -1), torch.log_softmax(m(x), -1)
        return float((p.exp() * (p - q)).sum(-1).mean()), rep.file_bytes

    kl_new, bytes_new = kl_and_bytes(CodecConfig(), "new.nnp")
    kl_old, bytes_old = kl_and_bytes(CodecConfig(method="nearest", rel_step=1 / 32, size_exponent=0), "old.nnp")
    assert bytes_new < bytes_old and kl_new <= kl_old, (bytes_new, bytes_old, kl_new, kl_old)


def test_compress_refuses_to_overwrite_its_source(tmp_path):
    """Writing the .nnp over the checkpoint being read (the source file itself, or a checkpoint file
    of a source folder) raises ValueError and leaves the source as it was."""
    src = tmp_path / "model.safetensors"
    save_safetensors({"w": np.ones((4, 4), np.float32)}, src)
    before = src.read_bytes()
    with pytest.raises(ValueError, match=r"refusing to write .*the source"):
        nnpress.compress(src, src)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_safetensors({"w": np.ones((4, 4), np.float32)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match="a file of the source folder"):
        nnpress.compress(folder, folder / "model.safetensors")
    assert src.read_bytes() == before
    nnpress.compress(folder, folder / "model.nnp")  # a new file beside the checkpoint is fine
    nnpress.compress(src, tmp_path / "model.nnp")


def test_config_names_one_absolute_step_and_known_plan_fields():
    with pytest.raises(ValueError, match="give one of step= and qp="):
        CodecConfig(step=0.1, qp=-20)
    with pytest.raises(TypeError, match=r"plan\['a.weight'\]: unknown field\(s\) \['stepp'\]"):
        CodecConfig(plan={"a.weight": {"stepp": 0.1}})
    assert CodecConfig(plan={"a.weight": {"step": 0.1}}).plan["a.weight"].step == 0.1
