"""The opt-in data-free error feedback from synthetic inputs (CodecConfig.synthetic_feedback,
nnpress.synthetic): which tensors get blocks, what the encode path does with them, the fallback
for sources with no module to run, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnpress
import nnpress.cli
from nnpress.config import FEEDBACK_STEP_RATIO, CodecConfig
from nnpress.encode import ModelStats, data_free_hessians, encode_model, encode_tensor, model_stats
from nnpress.traverse import collect

ON = CodecConfig(synthetic_feedback=True)


class _Text(torch.nn.Module):
    """Embedding -> LayerNorm -> Linear -> ReLU -> Linear, mean over tokens; one unused Linear."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(200, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.fc1 = torch.nn.Linear(32, 48)
        self.fc2 = torch.nn.Linear(48, 8)
        self.unused = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.norm(self.emb(x))))).mean(1)


def _text_model(seed=31):
    torch.manual_seed(seed)
    return _Text().eval()


def test_blocks_for_the_rule4_linear_and_embedding_weights():
    net = _text_model()
    entries = collect(net)
    h = data_free_hessians(net, entries, ON)
    # Linear and Embedding weights the output depends on; not biases, norms, or the unused layer
    assert set(h) == {"emb.weight", "fc1.weight", "fc2.weight"}
    for name, cols in (("emb.weight", 32), ("fc1.weight", 32), ("fc2.weight", 48)):
        b = h[name]
        assert b.shape == (cols, cols) and b.dtype == np.float64
        assert np.allclose(b, b.T) and np.all(np.linalg.eigvalsh(b) > -1e-9 * np.abs(b).max())
    # the embedding is followed by a LayerNorm: errors along the all-ones direction do not reach
    # the output, which the block says (that direction's curvature is ~0 relative to the rest)
    ones = np.ones(32) / np.sqrt(32)
    assert ones @ h["emb.weight"] @ ones < 1e-6 * np.trace(h["emb.weight"]) / 32
    # deterministic
    h2 = data_free_hessians(_text_model(), collect(_text_model()), ON)
    assert all(np.array_equal(h[k], h2[k]) for k in h)


def test_no_blocks_without_a_module_or_with_the_option_off():
    net = _text_model()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    assert data_free_hessians(sd, collect(sd), ON) is None
    assert data_free_hessians(net, collect(net), CodecConfig(synthetic_feedback=False)) is None
    # no rule-4 tensor (an absolute step): nothing to give feedback to
    assert data_free_hessians(net, collect(net), CodecConfig(step=0.01, synthetic_feedback=True)) is None

    class Odd(torch.nn.Module):  # does not run on synthetic token ids (wrong vocabulary width)
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.fc = torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.fc(self.emb(x))

    assert data_free_hessians(Odd(), collect(Odd()), ON) is None
    # a model fed vectors (or images): random ones are unlike data, so no blocks
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    assert data_free_hessians(mlp, collect(mlp), ON) is None
    with pytest.raises(TypeError):
        CodecConfig(synthetic_feedback=1)


def test_compress_a_module_uses_the_blocks(tmp_path):
    """The option on a module (off by default): feedback on the blocks' tensors, the Linear ones' rule-4 steps
    FEEDBACK_STEP_RATIO coarser, the rest as for a state_dict; recorded in the metadata;
    deterministic; a state_dict (nothing to run) gets the rules without feedback."""
    net = _text_model()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    paths = {k: tmp_path / f"{k}.nnp" for k in ("mod", "mod2", "sd", "off")}
    rep = nnpress.compress(net, paths["mod"], ON)
    nnpress.compress(_text_model(), paths["mod2"], ON)
    nnpress.compress(sd, paths["sd"])
    nnpress.compress(net, paths["off"])  # the default: off
    assert paths["mod"].read_bytes() == paths["mod2"].read_bytes()
    assert rep.times["synthetic"] > 0
    f, f_sd = nnpress.NnpFile(paths["mod"]), nnpress.NnpFile(paths["sd"])
    assert f.metadata["synthetic_feedback"] is True
    assert "synthetic_feedback" not in f_sd.metadata
    assert "synthetic_feedback" not in nnpress.NnpFile(paths["off"]).metadata
    sd_out, off_out = (nnpress.decompress(paths[k], as_numpy=True) for k in ("sd", "off"))
    assert all(np.array_equal(sd_out[k], off_out[k]) for k in sd)
    for name in sd:  # (the embedding table has a block but keeps rule 4's step)
        ratio = FEEDBACK_STEP_RATIO if name in ("fc1.weight", "fc2.weight") else 1.0
        if f_sd.entry(name).get("step") is not None:
            assert f.entry(name)["step"] == pytest.approx(ratio * f_sd.entry(name)["step"], rel=1e-12), name


def test_encode_model_quantizes_with_the_blocks():
    """encode_model(synthetic_hessians=) is encode_tensor with those blocks as hessians and the
    feedback step ratio; blocks the caller passes as hessians win."""
    net = _text_model()
    entries = collect(net)
    cfg = CodecConfig(threads=1, synthetic_feedback=True)
    h = data_free_hessians(net, entries, cfg)
    out = {t.record.name: t for t in encode_model(entries, cfg, synthetic_hessians=h)}
    base = model_stats(entries, cfg)
    stats = ModelStats(base.mean_size, base.total_size, {k: FEEDBACK_STEP_RATIO for k in h if k != "emb.weight"})
    assert model_stats(entries, cfg, feedback=h).step_factors == stats.step_factors
    by_name = {e.name: e for e in entries}
    for name in h:
        ref = encode_tensor(by_name[name], cfg, stats, hessian=h[name])
        assert np.array_equal(out[name].record.data, ref.record.data), name
        plain = encode_tensor(by_name[name], cfg, stats)  # same step, no feedback: other levels
        assert not np.array_equal(out[name].record.data, plain.record.data), name
    # a caller's block for a tensor replaces the synthetic one there (and its step stays rule 4's)
    eye = {"fc1.weight": np.eye(32)}
    mixed = {t.record.name: t for t in encode_model(entries, cfg, hessians=eye, synthetic_hessians=h)}
    ref = encode_tensor(by_name["fc1.weight"], cfg, base, hessian=eye["fc1.weight"])
    assert np.array_equal(mixed["fc1.weight"].record.data, ref.record.data)
    assert np.array_equal(mixed["fc2.weight"].record.data, out["fc2.weight"].record.data)


def test_feedback_lowers_the_output_error_at_equal_step():
    """What the blocks are for: at the same steps, the output of the decoded model on fresh
    synthetic inputs is closer to the original's with feedback than without."""
    from nnpress.fisher.probe import synthetic_inputs

    net = _text_model()
    entries = collect(net)
    cfg = CodecConfig(threads=1, rel_step=1 / 6, synthetic_feedback=True)
    h = data_free_hessians(net, entries, cfg)
    stats = model_stats(entries, cfg, feedback=h)
    x = synthetic_inputs(net, seed=99, batch=64)
    with torch.no_grad():
        ref = net(x)

    def err(hess):
        state = {}
        for e in entries:
            t = encode_tensor(e, cfg, stats, hessian=None if hess is None else hess.get(e.name))
            state[e.name] = torch.from_numpy(t.recon) if t.recon is not None else e.values
        m = _text_model()
        m.load_state_dict(state)
        with torch.no_grad():
            return float((m(x) - ref).pow(2).mean())

    assert err(h) < 0.8 * err(None)


def test_synthetic_inputs_batches_and_image_sizes():
    from nnpress.fisher.probe import synthetic_inputs
    from nnpress.synthetic import synthetic_batches

    class Small(torch.nn.Module):  # a classifier head that fixes the image size at 8 x 8
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    x = synthetic_inputs(Small(), batch=5)
    assert x.shape == (5, 1, 8, 8)
    bs = synthetic_batches(_text_model(), n_batches=3, batch_size=4)
    assert len(bs) == 3 and all(b.shape == (4, 32) for b in bs)
    assert not torch.equal(bs[0], bs[1])  # different seeds
    with pytest.raises(ValueError):
        synthetic_inputs(Small(), batch=0)


def test_a_model_folder_runs_on_synthetic_texts(tmp_path):
    """A Hugging Face folder that loads and runs is compressed in memory with synthetic feedback,
    under the checkpoint's names; with the option off it is streamed as before (same names)."""
    pytest.importorskip("transformers")
    from hf_tiny import make_bert
    from nnpress.synthetic import folder_model, synthetic_texts

    folder = make_bert(str(tmp_path / "bert"))
    loaded = folder_model(folder, ON)
    assert loaded is not None and loaded.batches
    assert folder_model(folder, CodecConfig(synthetic_feedback=False)) is None
    assert folder_model(str(tmp_path), ON) is None  # no config.json: nothing to run
    texts = synthetic_texts(__import__("transformers").AutoTokenizer.from_pretrained(folder), n=3)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    on, off = tmp_path / "on.nnp", tmp_path / "off.nnp"
    rep = nnpress.compress(folder, on, ON)
    cli_on = tmp_path / "cli_on.nnp"
    assert nnpress.cli.main(["compress", "-q", "--synthetic-feedback", folder, str(cli_on)]) == 0
    assert cli_on.read_bytes() == on.read_bytes()
    nnpress.compress(folder, off)  # the default: off (streamed)
    f_on, f_off = nnpress.NnpFile(on), nnpress.NnpFile(off)
    assert f_on.metadata.get("synthetic_feedback") is True and "synthetic_feedback" not in f_off.metadata
    assert rep.times["synthetic"] > 0
    a, b = nnpress.decompress(on, as_numpy=True), nnpress.decompress(off, as_numpy=True)
    assert set(a) == set(b) and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    w = "encoder.layer.0.intermediate.dense.weight"
    assert f_on.entry(w)["step"] == pytest.approx(FEEDBACK_STEP_RATIO * f_off.entry(w)["step"], rel=1e-9)


def test_options_that_cannot_apply_say_so(tmp_path):
    """synthetic_feedback / probe on a source that cannot run (a state_dict, a safetensors file) warn
    that they were not applied; the file is the encode without them."""
    net = _text_model()
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match=r"synthetic_feedback=True\) was not applied: the source is not a model"):
        nnpress.compress(sd, tmp_path / "a.nnp", ON)
    with pytest.warns(UserWarning, match=r"probe=True\) was not applied"):
        nnpress.compress(sd, tmp_path / "b.nnp", CodecConfig(probe=True))
    nnpress.compress(sd, tmp_path / "c.nnp")
    a, c = (nnpress.decompress(tmp_path / f"{k}.nnp", as_numpy=True) for k in "ac")
    assert all(np.array_equal(a[k], c[k]) for k in c)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nnpress.compress(net, tmp_path / "d.nnp", ON)  # applied: no warning
