"""Tiny Hugging Face model folders built offline for the calibration tests: a word-level tokenizer
made from a toy corpus, a GPT-2 causal LM trained on it for a few hundred steps, a BERT text
encoder laid out as a sentence-transformers folder, and a BERT sequence classifier."""

from __future__ import annotations

import json
import os

import numpy as np

WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
COLOURS = "red green blue black white".split()
THINGS = "cat dog bird fish horse".split()


def corpus(n: int, seed: int = 0) -> list[str]:
    """Counting runs ('three four five six') and 'the red cat sees the blue dog' sentences."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            start = int(rng.integers(0, len(WORDS) - 4))
            length = int(rng.integers(3, 8))
            out.append(" ".join(WORDS[start : start + length]))
        else:
            c1, c2 = rng.choice(COLOURS, 2)
            t1, t2 = rng.choice(THINGS, 2)
            out.append(f"the {c1} {t1} sees the {c2} {t2}")
    return out


def save_tokenizer(folder: str, *, bert_style: bool = False):
    """A word-level tokenizer over the corpus vocabulary, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<eos>"]
    vocab = {t: i for i, t in enumerate(special + WORDS + COLOURS + THINGS + ["the", "sees"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
        )
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")
    fast.save_pretrained(folder)
    return fast, len(vocab)


def make_causal_lm(folder: str, steps: int = 100, seed: int = 0) -> str:
    """A 2-layer GPT-2 (tied embedding and head) trained on the corpus; saved with a tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    os.makedirs(folder, exist_ok=True)
    tok, vocab = save_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    ids = []
    for s in corpus(400, seed):
        ids += tok(s)["input_ids"] + [tok.eos_token_id]
    data = torch.tensor(ids[: (len(ids) // 32) * 32]).reshape(-1, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend
    try:
        for _ in range(steps):
            b = data[torch.randint(0, data.shape[0], (16,), generator=g)]
            loss = model(input_ids=b, labels=b).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    return folder


def make_bert(folder: str, *, sentence_transformers: bool = True, classifier: bool = False, seed: int = 0) -> str:
    """A 2-layer BERT: a text encoder (with a sentence-transformers layout: mean pooling +
    normalize) or a 3-class sequence classifier. Random weights: fidelity, not quality, is tested."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    os.makedirs(folder, exist_ok=True)
    _, vocab = save_tokenizer(folder, bert_style=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        id2label={0: "counting", 1: "animals", 2: "other"},
        label2id={"counting": 0, "animals": 1, "other": 2},
    )
    model = (BertForSequenceClassification if classifier else BertModel)(cfg).eval()
    model.save_pretrained(folder)
    if sentence_transformers and not classifier:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        with open(os.path.join(folder, "modules.json"), "w") as f:
            json.dump(modules, f)
        os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
        os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
        with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
            json.dump({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}, f)
        with open(os.path.join(folder, "sentence_bert_config.json"), "w") as f:
            json.dump({"max_seq_length": 16, "do_lower_case": False}, f)
    return folder


def write_lines(path, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)
