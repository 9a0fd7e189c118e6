"""transformers and the streaming paths: shards written by ``nnpress decompress`` load with
``from_pretrained`` as they are, and ``nnpress.from_pretrained`` loads a folder whose weights are a
``.nnp`` file; all-MiniLM-L6-v2 gives the same embeddings all three ways."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import nnpress  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _tiny_bert(folder):
    cfg = transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg).eval()
    model.save_pretrained(folder, max_shard_size="40KB")  # sharded, with an index
    return model


def _copy_config(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):  # everything but the weights: config, tokenizer
        path = os.path.join(src, name)
        if os.path.isfile(path) and not name.endswith((".safetensors", ".safetensors.index.json")):
            shutil.copy(path, dst)


def test_tiny_bert_from_shards_and_from_nnp(tmp_path):
    _tiny_bert(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    nnp = tmp_path / "bert.nnp"
    nnpress.compress(tmp_path / "hf", nnp)  # the sharded folder as source
    ref = nnpress.decompress(nnp)
    out = tmp_path / "out"
    _copy_config(tmp_path / "hf", out)  # an existing folder with config.json
    nnpress.decompress_to_file(nnp, out, max_shard_size="40KB")
    assert (out / "model.safetensors.index.json").exists()
    loaded = transformers.AutoModel.from_pretrained(out).eval()
    for name, t in loaded.state_dict().items():
        if name in ref:
            assert torch.equal(t, ref[name]), name
    # the folder with model.nnp instead of safetensors
    nf = tmp_path / "nnpdir"
    _copy_config(tmp_path / "hf", nf)
    shutil.copy(nnp, nf / "model.nnp")
    direct = nnpress.from_pretrained(nf)
    assert not direct.training
    for name, t in direct.state_dict().items():
        assert torch.equal(t, loaded.state_dict()[name]), name
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        assert torch.equal(direct(ids).last_hidden_state, loaded(ids).last_hidden_state)
    bf = nnpress.from_pretrained(nf, dtype="bfloat16")
    assert next(bf.parameters()).dtype == torch.bfloat16


def test_from_pretrained_errors(tmp_path):
    _tiny_bert(tmp_path / "hf")
    nf = tmp_path / "nf"
    _copy_config(tmp_path / "hf", nf)
    with pytest.raises(FileNotFoundError, match=r"no \.nnp"):
        nnpress.from_pretrained(nf)
    nnpress.compress({"unrelated.weight": torch.ones(4, 4)}, nf / "model.nnp")
    with pytest.raises(RuntimeError, match="no tensor"):
        nnpress.from_pretrained(nf)
    with pytest.raises(RuntimeError, match="no tensor"):  # not even strict=False loads a model from nothing
        nnpress.from_pretrained(nf, strict=False)
    nnpress.compress({"pooler.dense.bias": torch.full((32,), 0.5)}, nf / "model.nnp")  # one tensor of many
    with pytest.raises(nnpress.NnpMismatchError, match="missing keys"):
        nnpress.from_pretrained(nf)
    part = nnpress.from_pretrained(nf, strict=False)
    assert torch.equal(part.pooler.dense.bias, torch.full((32,), 0.5))


def test_from_pretrained_across_the_base_model_prefix(tmp_path):
    """As transformers does: a checkpoint saved from a model with a task head (names 'bert.…')
    loads into the base model, and a base checkpoint into the base of a model with a head."""
    cfg = transformers.BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    mlm = transformers.BertForMaskedLM(cfg).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    nf = tmp_path / "mlm_nnp"
    _copy_config(tmp_path / "mlm", nf)
    nnpress.compress(tmp_path / "mlm" / "model.safetensors", nf / "model.nnp")
    dec = nnpress.decompress(nf / "model.nnp")
    with pytest.raises(nnpress.NnpMismatchError, match=r"missing keys \['bert.pooler"):  # the MLM has no pooler
        nnpress.from_pretrained(nf)
    base = nnpress.from_pretrained(nf, strict=False)  # AutoModel: the BertModel inside the checkpoint
    assert type(base).__name__ == "BertModel"
    for name, t in base.state_dict().items():
        if "bert." + name in dec:
            assert torch.equal(t, dec["bert." + name]), name
    q = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(base.state_dict()[q], dec["bert." + q])
    # a base-model file into a model with a head: the base is filled, the head is what is missing
    bf = tmp_path / "base_nnp"
    _copy_config(tmp_path / "mlm", bf)
    nnpress.compress(base, bf / "model.nnp")
    with_head = nnpress.from_pretrained(bf, cls=transformers.AutoModelForMaskedLM, strict=False)
    assert torch.equal(with_head.bert.state_dict()[q], nnpress.decompress(bf / "model.nnp")[q])


def test_minilm_embeddings_equal_through_shards_loader_and_in_memory(tmp_path):
    sys.path.insert(0, str(REPO / "bench" / "python"))
    import minilm

    src = minilm.model_path()
    nnp = tmp_path / "minilm.nnp"
    nnpress.compress(os.path.join(src, "model.safetensors"), nnp)  # streamed
    model_names = set(minilm.load_minilm()[0].state_dict())  # the file also has the position_ids buffer
    decoded = {k: v for k, v in nnpress.decompress(nnp).items() if k in model_names}
    in_memory = minilm.embed(decoded, minilm.SENTENCES[:8])
    # 1. the decompressed shard folder, loaded by transformers as is
    shards = tmp_path / "shards"
    _copy_config(src, shards)
    nnpress.decompress_to_file(nnp, shards, max_shard_size="30MB")
    assert (shards / "model.safetensors.index.json").exists()
    from_shards = transformers.AutoModel.from_pretrained(shards).eval()
    # 2. the folder with model.nnp, through nnpress.from_pretrained
    nf = tmp_path / "nnpdir"
    _copy_config(src, nf)
    shutil.copy(nnp, nf / "model.nnp")
    from_nnp = nnpress.from_pretrained(nf)
    a = minilm.embed(from_shards, minilm.SENTENCES[:8])
    b = minilm.embed(from_nnp, minilm.SENTENCES[:8])
    assert (a == in_memory).all() and (b == in_memory).all()
    ref = minilm.embed(minilm.load_minilm()[0], minilm.SENTENCES[:8])
    assert minilm.cosine_fidelity(ref, b)[0] > 0.999
