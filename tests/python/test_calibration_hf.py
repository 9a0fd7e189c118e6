"""Hugging Face folders as users hold them, built offline in the test (hf_tiny.py): a causal LM
trained for a few seconds and compressed end to end with `nnpress compress ... --calibration ...
--budget kl=...`, a sentence-transformers folder and object, a sequence classifier with .jsonl
labels; file names, kinds, the split, and errors for folders that do not fit."""

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hf_tiny  # noqa: E402
from nnpress.calibration import CalibrationError, parse_budget  # noqa: E402
from nnpress.sources import detect_kind, load_task  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    lm = hf_tiny.make_causal_lm(str(root / "lm"))
    st = hf_tiny.make_bert(str(root / "st"))
    cls = hf_tiny.make_bert(str(root / "cls"), classifier=True)
    texts = hf_tiny.write_lines(root / "cal.txt", hf_tiny.corpus(48, seed=1))
    return {"root": root, "lm": lm, "st": st, "cls": cls, "texts": texts}


def _checkpoint_names(folder):
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def test_kind_detection(folders):
    assert detect_kind(folders["lm"]) == "causal-lm"
    assert detect_kind(folders["st"]) == "text-embedding"
    assert detect_kind(folders["cls"]) == "sequence-classification"


def test_causal_lm_task(folders):
    task = load_task(folders["lm"], folders["texts"], max_length=16, batch_size=4, seed=2)
    assert task.kind == "causal-lm" and task.fisher_output == "classifier"
    assert task.metrics[0] == "kl"
    # the file names are the checkpoint's; the tied head is stored once, under the embedding's name
    state = task.state_dict()
    assert set(state) == _checkpoint_names(folders["lm"])
    assert task.file_name("hf.lm_head.weight") == "transformer.wte.weight"
    # packed rows: every held-out row but the last is max_length tokens, no padding anywhere
    rows = [b["input_ids"] for b in task.heldout]
    assert all(r.shape[1] == 16 for r in rows[:-1]) and set(task.heldout[0]) == {"input_ids"}
    assert task.split["heldout"] == 12 and task.split["fit"] == 36 and task.split["seed"] == 2
    assert task.split["heldout_tokens"] == sum(r.numel() for r in rows)
    m0 = task.evaluate(None)
    assert m0["kl"] == 0 and m0["top1"] == 1
    g = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in state.items()}
    m1 = task.evaluate(noisy)  # under the file's names; the tied head follows the embedding
    assert m1["kl"] > 0 and m1["top1"] < 1
    assert task.evaluate(None)["kl"] == 0  # the model's own weights are back
    with pytest.raises(CalibrationError, match=r"'cos_mean' does not apply to a causal-lm task"):
        task.check_budget(parse_budget("cos_mean=0.99"))


def test_causal_lm_split_never_mixes(folders):
    """The held-out rows hold exactly the held-out texts' tokens (the fit rows never see them)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders["lm"])
    texts = open(folders["texts"]).read().splitlines()
    from nnpress.sources import split_indices

    _, held, _ = split_indices(len(texts), 0.25, 0)
    task = load_task(folders["lm"], folders["texts"], max_length=16)
    want = []
    for i in held:
        want += tok(texts[i])["input_ids"] + [tok.eos_token_id]
    got = torch.cat([b["input_ids"].reshape(-1) for b in task.heldout]).tolist()
    assert got == want


def test_sentence_transformers_folder_and_object(folders):
    task = load_task(folders["st"], folders["texts"], heldout=8)
    assert task.kind == "text-embedding" and task.split["pooling"] == "mean + normalize"
    assert task.split["max_length"] == 16  # sentence_bert_config.json
    assert set(task.state_dict()) == _checkpoint_names(folders["st"])
    emb = task.reference()[0]
    assert torch.allclose(emb.norm(dim=1), torch.ones(emb.shape[0]), atol=1e-5)
    # the same embedding by hand: mean over the attention mask, then L2-normalised
    batch = task.heldout[0]
    hidden = task.model.hf(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert torch.allclose(emb, by_hand, atol=1e-6)
    st_mod = pytest.importorskip("sentence_transformers")
    model = st_mod.SentenceTransformer(folders["st"], device="cpu")
    t2 = load_task(model, folders["texts"], heldout=8)
    assert torch.allclose(t2.reference()[0], emb, atol=1e-5)
    assert set(t2.state_dict()) == set(model.state_dict())  # the object's own names
    # the Fisher estimators run a SentenceTransformer through the task's batches
    import nnpress

    F = nnpress.fisher_diagonal(
        t2.model, t2.fit, output=t2.fisher_output, output_fn=t2.output_fn, method="loop", max_examples=4
    )
    assert set(t2.file_names(F)) <= set(model.state_dict())
    assert any(float(v.sum()) > 0 for v in F.values())


def test_sequence_classifier_with_jsonl_labels(folders):
    path = folders["root"] / "cls.jsonl"
    with open(path, "w") as f:
        for i, s in enumerate(hf_tiny.corpus(24)):
            f.write(json.dumps({"sentence": s, "label": ["counting", "animals"][i % 2]}) + "\n")
    task = load_task(folders["cls"], str(path), text_field="sentence")
    assert task.kind == "sequence-classification" and "accuracy_drop" in task.metrics
    assert torch.cat(task.labels).tolist() == [[0, 1][i % 2] for i in sorted(_held(24))]
    assert task.evaluate(None)["accuracy_drop"] == 0
    bad = folders["root"] / "bad.jsonl"
    bad.write_text(json.dumps({"text": "one two", "label": "weather"}) + "\n" + json.dumps({"text": "x", "label": 0}))
    with pytest.raises(CalibrationError, match=r"label 'weather' is not one of the model's classes"):
        load_task(folders["cls"], str(bad))


def _held(n):
    from nnpress.sources import split_indices

    return split_indices(n, 0.25, 0)[1]


def test_folder_errors(folders, tmp_path):
    # a base encoder loaded as a classifier would get a random head
    with pytest.raises(CalibrationError, match=r"holds no values for .*classifier.*is the kind right"):
        load_task(folders["st"], folders["texts"], kind="sequence-classification")
    # no tokenizer
    bare = tmp_path / "bare"
    shutil.copytree(folders["lm"], bare)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(bare / f)
    with pytest.raises(CalibrationError, match=r"no usable tokenizer"):
        load_task(str(bare), folders["texts"])
    # tensor data for a text model; an empty text file
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((4, 3), np.float32))
    with pytest.raises(CalibrationError, match=r"this model reads text"):
        load_task(folders["lm"], str(npy))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(CalibrationError, match=r"holds no text"):
        load_task(folders["lm"], str(empty))
    with pytest.raises(CalibrationError, match=r"no config.json"):
        load_task(str(tmp_path), folders["texts"])


def test_prefix_names_when_loaded_without_the_head(folders):
    """A causal LM folder loaded as a text encoder: the base model's names gain the checkpoint's
    ``transformer.`` prefix back."""
    task = load_task(folders["lm"], folders["texts"], kind="text-embedding", max_length=16)
    assert task.file_name("hf.h.0.attn.c_attn.weight") == "transformer.h.0.attn.c_attn.weight"
    assert set(task.state_dict()) == _checkpoint_names(folders["lm"])


def _half_copy(folders, tmp_path):
    from transformers import AutoModelForCausalLM

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(folders["lm"]).half().save_pretrained(half)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(folders["lm"], f), half / f)
    return str(half)


def test_float16_checkpoint_keeps_its_dtype(folders, tmp_path):
    task = load_task(_half_copy(folders, tmp_path), folders["texts"], max_length=16)
    assert next(task.model.parameters()).dtype == torch.float32  # calibration runs in float32
    sd = task.state_dict()
    assert sd["transformer.wte.weight"].dtype == torch.float16


def test_budget_file_keeps_the_checkpoints_names_and_dtypes(folders, tmp_path):
    """The searched file stores what the checkpoint holds, in its dtypes: decoded, it has exactly the
    checkpoint's names and float16 stays float16."""
    import nnpress
    from nnpress.budget import compress_to_budget

    half = _half_copy(folders, tmp_path)
    task = load_task(half, folders["texts"], max_length=16)
    out = tmp_path / "half.nnp"
    report = compress_to_budget(task, out, "kl=0.05", prune=None, feedback=False)
    assert report.met
    dec = nnpress.decompress(str(out))
    assert set(dec) == _checkpoint_names(half)
    assert all(t.dtype == torch.float16 for n, t in dec.items() if t.is_floating_point())


def test_causal_lm_end_to_end_cli(folders, tmp_path, capsys):
    """`nnpress compress LM_FOLDER out.nnp --calibration texts.txt --budget kl=...` writes a file that
    meets the budget on the held-out texts and decodes under the checkpoint's names."""
    pytest.importorskip("nnpress.budget")
    import nnpress
    from nnpress.cli import main

    out = tmp_path / "lm.nnp"
    rep = tmp_path / "rep.json"
    args = ["compress", folders["lm"], str(out), "--calibration", folders["texts"], "--budget", "kl=0.02"]
    assert main([*args, "--max-length", "16", "--json", str(rep)]) == 0
    text = capsys.readouterr().out
    assert "budget: kl <= 0.02: met" in text and "points tried" in text and "chosen: point" in text
    d = json.loads(rep.read_text())
    assert d["met"] and d["heldout"]["kl"] <= 0.02 and d["split"]["heldout"] == 12
    dec = nnpress.decompress(str(out))
    assert set(dec) == _checkpoint_names(folders["lm"])
    task = load_task(folders["lm"], folders["texts"], max_length=16)
    assert task.evaluate(dec)["kl"] == pytest.approx(d["heldout"]["kl"], rel=1e-6)
    assert d["file_bytes"] == os.path.getsize(out)


def test_sharded_checkpoint(folders, tmp_path):
    """A sharded folder (model.safetensors.index.json): the names of every shard, in order."""
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(folders["lm"]).save_pretrained(sharded, max_shard_size="20KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(folders["lm"], f), sharded / f)
    assert (sharded / "model.safetensors.index.json").exists() and not (sharded / "model.safetensors").exists()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    task = load_task(str(sharded), folders["texts"], max_length=16)
    assert set(task.state_dict()) == set(index) == _checkpoint_names(folders["lm"])
    ref = load_task(folders["lm"], folders["texts"], max_length=16)
    assert torch.equal(task.reference()[0], ref.reference()[0])


def test_transformers_object_with_tokenizer(folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folders["lm"])
    tok = AutoTokenizer.from_pretrained(folders["lm"])
    texts = open(folders["texts"]).read().splitlines()
    task = load_task(model, texts, tokenizer=tok, max_length=16)
    assert task.kind == "causal-lm" and set(task.state_dict()) == set(model.state_dict())
    ref = load_task(folders["lm"], folders["texts"], max_length=16)
    assert torch.equal(task.reference()[0], ref.reference()[0])
    with pytest.raises(CalibrationError, match="needs tokenizer="):
        load_task(model, texts)


def test_masked_lm_folder_as_text_encoder(folders, tmp_path):
    """A masked-LM checkpoint read as a text encoder: its head lands in Task.extra, the encoder's
    pooler (absent from the checkpoint, unused by the embedding) is dropped, not stored at random."""
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "mlm"
    hf_tiny.save_tokenizer(str(folder), bert_style=True)
    cfg = BertConfig(vocab_size=34, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    cfg.architectures = ["BertForMaskedLM"]
    BertForMaskedLM(cfg).save_pretrained(folder)
    with pytest.raises(CalibrationError, match="cannot tell the kind"):
        load_task(str(folder), folders["texts"])
    task = load_task(str(folder), folders["texts"], kind="text-embedding")
    ckpt = _checkpoint_names(str(folder))
    assert set(task.state_dict()) == ckpt
    assert not any("pooler" in k for k in task.state_dict())
    assert any(k.startswith("cls.") for k in task.extra)


def test_legacy_names_matched_by_value(folders, tmp_path):
    """A checkpoint with old names (LayerNorm.gamma/beta): each module tensor gets the checkpoint
    name of equal values, and among equal norms (all ones at initialisation) the same layer's."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "legacy"
    hf_tiny.make_bert(str(folder), sentence_transformers=False)
    sd = load_file(folder / "model.safetensors")
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in sd.items()
    }
    assert renamed != sd
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    task = load_task(str(folder), folders["texts"])
    assert set(task.state_dict()) == set(renamed)
    for layer in (0, 1):
        m = f"hf.encoder.layer.{layer}.output.LayerNorm.weight"
        assert task.file_name(m) == f"encoder.layer.{layer}.output.LayerNorm.gamma"


def test_sentence_encoder_end_to_end_loads_where_the_source_did(folders, tmp_path, capsys):
    """compress a sentence-transformers folder to a cos_mean budget, decompress into a copy of the
    folder: the copy loads as the source did, and its held-out embeddings give the reported fidelity."""
    pytest.importorskip("nnpress.budget")
    from nnpress.calibration import METRICS
    from nnpress.cli import main

    out, rep = tmp_path / "st.nnp", tmp_path / "rep.json"
    args = ["compress", folders["st"], str(out), "--calibration", folders["texts"], "--budget", "cos_mean=0.99"]
    assert main([*args, "--quiet", "--json", str(rep)]) == 0
    d = json.loads(rep.read_text())
    assert d["met"] and d["heldout"]["cos_mean"] >= 0.99
    copy = tmp_path / "copy"
    shutil.copytree(folders["st"], copy)
    assert main(["decompress", str(out), str(copy / "model.safetensors"), "--quiet"]) == 0
    original = load_task(folders["st"], folders["texts"])
    decoded = load_task(str(copy), folders["texts"])
    cos = METRICS["cos_mean"].fn(original.reference(), decoded.reference(), None)
    assert cos == pytest.approx(d["heldout"]["cos_mean"], abs=1e-6)
