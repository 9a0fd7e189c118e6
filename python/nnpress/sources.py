"""Calibration tasks from what users hold: ``load_task(source, calibration, ...) -> Task``.

Sources
-------
- a Hugging Face model folder (``config.json`` + ``model.safetensors``, sharded with
  ``model.safetensors.index.json``, or ``pytorch_model.bin``; + a tokenizer), loaded offline with
  ``transformers`` (``local_files_only``; nothing is downloaded). The kind comes from the folder:
  ``modules.json`` / ``config_sentence_transformers.json`` (a sentence-transformers folder) or an
  architecture without a head (``BertModel``) -> ``"text-embedding"``; ``*ForCausalLM`` /
  ``*LMHeadModel`` -> ``"causal-lm"``; ``*ForSequenceClassification`` ->
  ``"sequence-classification"``; ``kind=`` overrides it.
    text-embedding           the sentence embedding: token states pooled over the attention mask
                             as the sentence-transformers pooling config says (mean, CLS, max,
                             mean/sqrt(len); mean when there is none), normalised when the folder
                             has a Normalize module; compared by cosine.
    causal-lm                the next-token distribution at every position (logits); the texts of
                             each part are tokenized, joined (each followed by the EOS token when
                             the tokenizer has one) and cut into rows of ``max_length`` tokens, so
                             no position is padding; compared by KL.
    sequence-classification  the class logits (labels from the ``label`` field of a .jsonl file,
                             names mapped with the model's label2id, enable ``accuracy_drop``).
- a sentence-transformers ``SentenceTransformer`` object (API): it is run through a wrapper whose
  forward takes the features as keyword arguments (what the Fisher estimators pass) and returns
  ``sentence_embedding``; file names are the object's own state_dict names.
- a ``transformers`` model object with ``tokenizer=`` (API): as a folder of that kind.
- a ``torch.nn.Module`` (API) or a TorchScript file (CLI): kind ``"module"``, calibration inputs a
  tensor file (``.pt``: a tensor, a tuple (x, y) or a dict with ``x``/``inputs`` and optionally
  ``y``/``labels``; ``.npy``: x; ``.npz``: ``x`` and optionally ``y``, or a single array) or, in
  the API, a tensor / array, or any iterable of batches (as ``fisher_diagonal`` takes them).

Calibration text: a file with one sample per line (blank lines skipped), or ``.jsonl`` with a text
field (``text_field``, default ``"text"``) and optionally a label field; in the API also a list of
strings.

The split
---------
The samples (lines, examples; for batches that cannot be cut into examples, batches) are cut to the
first ``max_samples`` (default ``DEFAULT_MAX_SAMPLES``; None: all), then ``heldout`` of them (a
fraction in (0, 1), at least one sample, or a count) are held out: a random permutation from
``numpy.random.default_rng(seed)``, its first ``n_heldout`` indices held out, both parts kept in
file order. Nothing is estimated on held-out samples. ``task.split`` says all of this (and
``available``: how many samples the data held).

File names
----------
The tensors are written under the source checkpoint's names, so the decoded file loads where the
source did: each module tensor is matched to the checkpoint's name (as is, with or without the
model's ``base_model_prefix``, else a checkpoint tensor of the same shape and values); a tied copy
gets the file name of the tensor it is tied to (stored once); a buffer the checkpoint does not hold
keeps its name in the model; a parameter the checkpoint has no value for (one the
loader initialised at random: the wrong ``kind``) is an error; checkpoint tensors the module does
not hold (old buffers) are stored exactly (``Task.extra``). The source's dtypes are kept
(``Task.dtypes``).

Errors (:class:`~nnpress.calibration.CalibrationError`, a ``ValueError``; raised before anything is
written): an unknown calibration file type, an empty calibration file, too few samples to split, a
missing text field, a folder without tokenizer, data that does not fit the model (the model is run
once on the held-out batches while loading, and its error is reported as such), labels a model
cannot use, a kind that does not fit the source.

Importing this module needs only numpy; torch and transformers are imported by the functions that
need them.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .calibration import KINDS, CalibrationError, Task

__all__ = ["detect_kind", "load_task", "read_texts", "split_indices"]

DEFAULT_HELDOUT = 0.25
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_LENGTH = 256
# Samples read by default: every metric is computed on all held-out samples at every point of the
# search, so a large calibration file would make each point slow without making it more certain.
DEFAULT_MAX_SAMPLES = 1024
TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TENSOR_SUFFIXES = (".pt", ".pth", ".npy", ".npz")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit", ".zip")

_HEADLESS = ("Model", "EncoderModel")
_CAUSAL = ("ForCausalLM", "LMHeadModel")
_SEQCLS = ("ForSequenceClassification",)


# ---------------------------------------------------------------- the split


def split_indices(n: int, heldout: float | int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(fit indices, held-out indices, the rule as a dict) for ``n`` samples; see the module
    docstring."""
    if isinstance(heldout, bool) or not isinstance(heldout, (int, float, np.integer, np.floating)):
        raise TypeError(f"heldout must be a fraction in (0, 1) or a count >= 1, got {heldout!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if isinstance(heldout, (float, np.floating)) and not float(heldout).is_integer():
        if not 0.0 < heldout < 1.0:
            raise ValueError(f"heldout fraction must lie in (0, 1), got {heldout!r}")
        n_held = max(1, round(n * float(heldout)))
        rule = f"fraction {float(heldout):g} of the samples, at least one"
    else:
        n_held = int(heldout)
        if n_held < 1:
            raise ValueError(f"heldout must be a fraction in (0, 1) or a count >= 1, got {heldout!r}")
        rule = f"{n_held} samples"
    if n < 2 or n_held >= n:
        raise CalibrationError(
            f"too few calibration samples to split: {n} sample{'s' if n != 1 else ''}, {n_held} to hold out "
            "and at least one to estimate on"
        )
    perm = np.random.default_rng(int(seed)).permutation(n)
    held = np.sort(perm[:n_held])
    fit = np.sort(perm[n_held:])
    info = {
        "samples": n,
        "fit": int(fit.size),
        "heldout": int(held.size),
        "seed": int(seed),
        "rule": f"held out: {rule}, the first indices of numpy.random.default_rng(seed).permutation(samples)",
    }
    return fit, held, info


def _parse_heldout(value: Any) -> float | int:
    """A CLI/API heldout value: '0.25' -> 0.25, '50' -> 50."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"heldout {value!r} is neither a fraction nor a count") from None
    return value


# ---------------------------------------------------------------- calibration files


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def read_texts(path, text_field: str = "text", label_field: str | None = "label") -> tuple[list[str], list | None]:
    """(texts, labels or None) of a text file (one sample per line) or a .jsonl file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such calibration file: {path!r}")
    suffix = _suffix(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    texts: list[str] = []
    labels: list = []
    if suffix in JSONL_SUFFIXES:
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CalibrationError(f"{path}:{i}: not a JSON object: {e.msg}") from None
            if not isinstance(obj, dict):
                raise CalibrationError(f"{path}:{i}: a JSON {type(obj).__name__}, expected an object")
            if text_field not in obj:
                raise CalibrationError(
                    f"{path}:{i}: no text field {text_field!r} (fields: {', '.join(map(str, obj)) or 'none'}); "
                    "choose it with --text-field / text_field="
                )
            text = obj[text_field]
            if not isinstance(text, str):
                raise CalibrationError(f"{path}:{i}: field {text_field!r} is a {type(text).__name__}, not text")
            if not text.strip():
                continue
            texts.append(text)
            labels.append(obj.get(label_field) if label_field else None)
    elif suffix in TEXT_SUFFIXES or suffix == "":
        texts = [line for line in lines if line.strip()]
    else:
        raise CalibrationError(_unknown_file(path))
    if not texts:
        raise CalibrationError(f"{path}: the calibration file holds no text")
    have = [lab is not None for lab in labels]
    if any(have) and not all(have):
        raise CalibrationError(
            f"{path}: {have.count(False)} of {len(have)} samples lack the label field {label_field!r}"
        )
    return texts, (labels if labels and all(have) else None)


def _unknown_file(path: str) -> str:
    return (
        f"unknown calibration file type {_suffix(path) or '(none)'!r} ({path}): use text with one sample per line "
        f"({', '.join(TEXT_SUFFIXES)}), {', '.join(JSONL_SUFFIXES)} with a text field, or a tensor file "
        f"({', '.join(TENSOR_SUFFIXES)})"
    )


def _read_tensor_file(path: str) -> tuple[Any, Any]:
    """(inputs, labels or None) of a .pt/.npy/.npz file, as torch tensors."""
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such calibration file: {path!r}")
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            obj: Any = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                obj = {k: z[k] for k in z.files}
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the loaders raise many types for a bad file
        raise CalibrationError(
            f"{path}: cannot read as a {suffix} tensor file: {str(e).splitlines()[0][:200]}"
        ) from None
    x, y = _inputs_labels(obj, path)
    return _as_tensor(x, path, "inputs"), (None if y is None else _as_tensor(y, path, "labels"))


def _inputs_labels(obj: Any, where: str) -> tuple[Any, Any]:
    if isinstance(obj, Mapping):
        xk = next((k for k in ("x", "inputs", "input", "data") if k in obj), None)
        yk = next((k for k in ("y", "labels", "label", "targets") if k in obj), None)
        if xk is None:
            if len(obj) == 1:
                return next(iter(obj.values())), None
            raise CalibrationError(
                f"{where}: cannot tell the inputs among {sorted(obj)}: name them 'x' (and the labels 'y')"
            )
        return obj[xk], (obj[yk] if yk else None)
    if isinstance(obj, (tuple, list)):
        if len(obj) in (1, 2):
            return obj[0], (obj[1] if len(obj) == 2 else None)
        raise CalibrationError(f"{where}: a {type(obj).__name__} of {len(obj)} items; expected x or (x, y)")
    return obj, None


def _is_xy_pair(obj: Any) -> bool:
    """A tuple (x, y) of two arrays/tensors with the same number of examples whose second is a
    vector of integers: inputs and class labels, not two batches of inputs."""
    import torch

    if not (isinstance(obj, tuple) and len(obj) == 2):
        return False
    x, y = obj
    arrays = (np.ndarray, torch.Tensor)
    if not (isinstance(x, arrays) and isinstance(y, arrays)) or x.ndim == 0 or y.ndim != 1:
        return False
    integer = np.issubdtype(y.dtype, np.integer) if isinstance(y, np.ndarray) else _torch_integer(y)
    return x.shape[0] == y.shape[0] and integer


def _torch_integer(t: Any) -> bool:
    import torch

    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


def _as_tensor(a: Any, where: str, what: str):
    import torch

    if isinstance(a, np.ndarray):
        if a.dtype == object:
            raise CalibrationError(f"{where}: {what} are Python objects, not numbers")
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise CalibrationError(f"{where}: {what} must be a tensor or array, got {type(a).__name__}")
    if a.dim() == 0 or a.shape[0] == 0:
        raise CalibrationError(f"{where}: {what} of shape {tuple(a.shape)} hold no sample")
    if a.is_floating_point() and a.dtype != torch.float32:
        a = a.float()  # the model runs in float32
    return a


# ---------------------------------------------------------------- models: kind and names


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: not valid JSON: {e}") from None


def _st_layout(folder: str) -> dict | None:
    """The sentence-transformers layout of a folder (transformer path, pooling, normalize, max
    length), or None when it is not one."""
    modules_path = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_path):
        if os.path.isfile(os.path.join(folder, "config_sentence_transformers.json")):
            return {"path": folder, "pooling": "mean", "normalize": False, "max_length": None}
        return None
    modules = _read_json(modules_path)
    if not isinstance(modules, list):
        raise CalibrationError(f"{modules_path}: expected a list of modules")
    out = {"path": None, "pooling": "mean", "normalize": False, "max_length": None}
    for m in modules:
        mtype = str(m.get("type", ""))
        sub = os.path.join(folder, m.get("path", ""))
        if mtype.endswith(".Transformer"):
            out["path"] = sub
            cfg = os.path.join(sub, "sentence_bert_config.json")
            if os.path.isfile(cfg):
                out["max_length"] = _read_json(cfg).get("max_seq_length")
        elif mtype.endswith(".Pooling"):
            cfg_path = os.path.join(sub, "config.json")
            cfg = _read_json(cfg_path) if os.path.isfile(cfg_path) else {}
            modes = [
                k
                for k in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
                if cfg.get(f"pooling_mode_{k}")
            ]
            if len(modes) > 1:
                raise CalibrationError(f"{cfg_path}: pooling modes {modes} combined are not supported")
            out["pooling"] = {
                "cls_token": "cls",
                "mean_tokens": "mean",
                "max_tokens": "max",
                "mean_sqrt_len_tokens": "mean_sqrt_len",
            }[modes[0] if modes else "mean_tokens"]
        elif mtype.endswith(".Normalize"):
            out["normalize"] = True
        else:
            raise CalibrationError(
                f"{modules_path}: module type {mtype!r} is not supported from a folder; load the model with "
                "sentence_transformers and pass the object to nnpress in Python"
            )
    if out["path"] is None:
        raise CalibrationError(f"{modules_path}: no sentence_transformers.models.Transformer module")
    return out


def detect_kind(folder: str) -> str:
    """The task kind of a Hugging Face / sentence-transformers folder (see the module docstring)."""
    if _st_layout(folder) is not None:
        return "text-embedding"
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise CalibrationError(f"{folder}: no config.json: not a Hugging Face model folder")
    archs = _read_json(cfg_path).get("architectures") or []
    for arch in archs:
        if arch.endswith(_CAUSAL):
            return "causal-lm"
        if arch.endswith(_SEQCLS):
            return "sequence-classification"
        if arch.endswith(_HEADLESS):
            return "text-embedding"
    raise CalibrationError(
        f"{cfg_path}: cannot tell the kind of model from architectures {archs}; pass kind= / --kind "
        "(text-embedding, causal-lm, sequence-classification)"
    )


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _safetensors_header(path: str) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CalibrationError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 2**20:
            raise CalibrationError(f"{path}: not a safetensors file (header of {n} bytes)")
        try:
            return {k: v for k, v in json.loads(f.read(n)).items() if k != "__metadata__"}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CalibrationError(f"{path}: not a safetensors file (bad header)") from None


class _Checkpoint:
    """The tensors of a model folder's weight files: names in order, dtypes, values on demand."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files: dict[str, str] = {}  # name -> file
        self.dtypes: dict[str, str] = {}
        self._torch: dict[str, Any] = {}
        index = os.path.join(folder, "model.safetensors.index.json")
        single = os.path.join(folder, "model.safetensors")
        if os.path.isfile(index):
            weight_map = _read_json(index).get("weight_map") or {}
            for shard in dict.fromkeys(weight_map.values()):
                self._add_safetensors(os.path.join(folder, shard))
        elif os.path.isfile(single):
            self._add_safetensors(single)
        else:
            import torch

            bins = [os.path.join(folder, "pytorch_model.bin")]
            bin_index = os.path.join(folder, "pytorch_model.bin.index.json")
            if os.path.isfile(bin_index):
                bins = [
                    os.path.join(folder, s)
                    for s in dict.fromkeys((_read_json(bin_index).get("weight_map") or {}).values())
                ]
            if not all(os.path.isfile(b) for b in bins):
                raise CalibrationError(f"{folder}: no model.safetensors (or its index) or pytorch_model.bin")
            for b in bins:
                sd = torch.load(b, map_location="cpu", weights_only=True)
                for k, v in sd.items():
                    self.files[k] = b
                    self.dtypes[k] = str(v.dtype).removeprefix("torch.")
                    self._torch[k] = v

    def _add_safetensors(self, path: str) -> None:
        if not os.path.isfile(path):
            raise CalibrationError(f"{self.folder}: the index names a missing shard {os.path.basename(path)!r}")
        header = _safetensors_header(path)
        for k in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
            self.files[k] = path
            self.dtypes[k] = _ST_DTYPES.get(header[k]["dtype"], header[k]["dtype"].lower())

    def shape(self, name: str) -> tuple:
        if name in self._torch:
            return tuple(self._torch[name].shape)
        return tuple(_safetensors_header(self.files[name])[name]["shape"])

    def tensor(self, name: str):
        if name in self._torch:
            return self._torch[name]
        from safetensors import safe_open

        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name)


def _storage_key(t) -> Any:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def _shared_parts(a: str, b: str) -> int:
    """How many leading dotted parts two tensor names share."""
    n = 0
    for x, y in zip(a.split("."), b.split(".")):
        if x != y:
            break
        n += 1
    return n


def match_names(module, ckpt: _Checkpoint, prefix: str = "", kind: str = "") -> tuple[dict, dict, dict]:
    """(names, extra, dtypes) of ``module``'s tensors against a checkpoint; see the module
    docstring ("File names"). ``prefix`` is prepended to the module's names (a wrapper's
    attribute)."""
    import torch

    sd = module.state_dict()
    params = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    base = getattr(module, "base_model_prefix", "") or ""
    matched: dict[str, str] = {}
    used: set[str] = set()
    for k in sd:
        cands = [k]
        if base:
            cands += [f"{base}.{k}", k[len(base) + 1 :] if k.startswith(base + ".") else None]
        for c in cands:
            if c and c in ckpt.files and c not in used:
                matched[k] = c
                used.add(c)
                break
    written = {_storage_key(sd[k]): matched[k] for k in matched}
    missing = []
    for k, t in sd.items():
        if k in matched:
            continue
        key = _storage_key(t)
        if key in written:  # a tied copy of a written tensor: the same file name, stored once
            matched[k] = written[key]
            continue
        # equal values under another name (a legacy name such as LayerNorm.gamma); among several
        # equal candidates (e.g. freshly initialised norms, all ones) the one whose name shares
        # the longest dotted prefix with the module's
        found, best = None, -1
        for c in ckpt.files:
            if c not in used and ckpt.shape(c) == tuple(t.shape):
                if torch.equal(ckpt.tensor(c).to(t.dtype), t):
                    common = _shared_parts(c, k)
                    if common > best:
                        found, best = c, common
        if found is not None:
            matched[k] = found
            used.add(found)
            written[key] = found
        elif k in params:
            missing.append(k)
        else:  # a buffer the checkpoint does not hold: the name the model's own save would use
            matched[k] = k
    if missing:
        raise CalibrationError(
            f"{ckpt.folder}: the checkpoint holds no values for {len(missing)} parameter(s) of the model "
            f"loaded as {kind or 'this kind'} ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): "
            "they would be random; is the kind right? (kind= / --kind)"
        )
    order = {c: i for i, c in enumerate(ckpt.files)}
    names = {prefix + k: c for k, c in sorted(matched.items(), key=lambda kc: order.get(kc[1], len(order)))}
    extra = {c: ckpt.tensor(c) for c in ckpt.files if c not in used}
    dtypes = {c: ckpt.dtypes[c] for c in ckpt.files if ckpt.dtypes[c] != "float32" and c not in extra}
    return names, extra, dtypes


# ---------------------------------------------------------------- wrappers (what the Fisher runs)


def _torch_nn():
    import torch

    return torch.nn


def _pool(hidden, mask, pooling: str):
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    total = (hidden * m).sum(dim=1)
    count = m.sum(dim=1).clamp_min(1.0)
    return total / (count.sqrt() if pooling == "mean_sqrt_len" else count)


def _make_wrappers():
    nn = _torch_nn()

    class SentenceEmbedding(nn.Module):
        """A transformers encoder + pooling (+ L2 normalisation): the sentence embedding."""

        def __init__(self, hf, pooling: str, normalize: bool):
            super().__init__()
            self.hf, self.pooling, self.normalize = hf, pooling, normalize

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            out = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kw)
            hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            emb = _pool(hidden, attention_mask, self.pooling)
            return nn.functional.normalize(emb, dim=-1) if self.normalize else emb

    class Logits(nn.Module):
        """A transformers model with a head: its logits (no cache)."""

        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            if attention_mask is not None:
                kw["attention_mask"] = attention_mask
            return self.hf(input_ids=input_ids, use_cache=False, **kw).logits

    class STForward(nn.Module):
        """A SentenceTransformer run with keyword features: its ``sentence_embedding``."""

        def __init__(self, st):
            super().__init__()
            self.st = st

        def forward(self, **features):
            return self.st(dict(features))["sentence_embedding"]

    class Scripted(nn.Module):
        """A TorchScript module inside a plain one: torch.func's functional_call (what the Fisher
        estimators use) refuses a scripted module at the top, not below it."""

        def __init__(self, ts):
            super().__init__()
            self.ts = ts

        def forward(self, *args, **kwargs):
            return self.ts(*args, **kwargs)

    return SentenceEmbedding, Logits, STForward, Scripted


def _identity(out):
    return out


# ---------------------------------------------------------------- batches


def _batches_of(items: Sequence[int], batch_size: int) -> list[list[int]]:
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def _tokenized_batches(tokenizer, texts, idx, batch_size, max_length, labels, where):
    import torch

    out, lab = [], []
    for group in _batches_of(idx, batch_size):
        enc = tokenizer(
            [texts[i] for i in group], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if "input_ids" not in batch:
            raise CalibrationError(f"{where}: the tokenizer gave no input_ids")
        if labels is not None:
            y = torch.as_tensor([labels[i] for i in group], dtype=torch.long)
            batch["labels"] = y
            lab.append(y)
        out.append(batch)
    return out, (lab if labels is not None else None)


def _packed_batches(tokenizer, texts, idx, batch_size, max_length):
    """Rows of ``max_length`` tokens cut from the part's texts joined (each + EOS)."""
    import torch

    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for i in idx:
        ids = tokenizer(texts[i], add_special_tokens=True)["input_ids"]
        stream.extend(ids)
        if eos is not None and (not ids or ids[-1] != eos):
            stream.append(eos)
    rows = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
    rows = [r for r in rows if len(r) >= 2]
    full = [r for r in rows if len(r) == max_length]
    tail = [r for r in rows if len(r) < max_length]
    batches = [{"input_ids": torch.tensor(full[i : i + batch_size])} for i in range(0, len(full), batch_size)]
    batches += [{"input_ids": torch.tensor([r])} for r in tail]
    return batches, len(stream)


def _check_fits(task: Task, what: str) -> Task:
    """Run the model once on the held-out batches; errors become 'does not fit the model'."""
    try:
        ref = task.reference()
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as e:
        msg = " ".join(str(e).split())[:300]
        raise CalibrationError(
            f"the calibration data does not fit the model ({what}): {type(e).__name__}: {msg}"
        ) from None
    for i, r in enumerate(ref):
        if not r.is_floating_point() or r.dim() == 0:
            raise CalibrationError(f"the model's output on held-out batch {i} is not a (batch, ...) float tensor")
    return task


def _label_ids(labels: list, label2id: Mapping | None, num_labels: int | None, where: str) -> list[int]:
    out = []
    for lab in labels:
        if isinstance(lab, bool):
            raise CalibrationError(f"{where}: label {lab!r} is neither a class index nor a class name")
        if isinstance(lab, str):
            if not label2id or lab not in label2id:
                raise CalibrationError(
                    f"{where}: label {lab!r} is not one of the model's classes {sorted(label2id or {})}"
                )
            lab = label2id[lab]
        if not isinstance(lab, (int, np.integer)) or (num_labels is not None and not 0 <= lab < num_labels):
            raise CalibrationError(f"{where}: label {lab!r} is not a class index in [0, {num_labels})")
        out.append(int(lab))
    return out


# ---------------------------------------------------------------- text tasks


def _texts_of(calibration, text_field: str, label_field: str | None) -> tuple[list[str], list | None, str]:
    if isinstance(calibration, (str, os.PathLike)):
        path = os.fspath(calibration)
        if _suffix(path) in TENSOR_SUFFIXES:
            raise CalibrationError(
                f"{path}: a tensor file, but this model reads text: give a text file (one sample per line) or .jsonl"
            )
        texts, labels = read_texts(path, text_field, label_field)
        return texts, labels, path
    if isinstance(calibration, Sequence) and calibration and all(isinstance(t, str) for t in calibration):
        texts = [t for t in calibration if t.strip()]
        if not texts:
            raise CalibrationError("the calibration texts are all empty")
        return texts, None, f"{len(texts)} texts"
    raise CalibrationError(
        "this model reads text: calibration must be a text file (one sample per line), a .jsonl file or a "
        f"list of strings, not {type(calibration).__name__}"
    )


def _text_task(
    tokenizer,
    kind,
    calibration,
    *,
    heldout,
    seed,
    max_samples,
    max_length,
    batch_size,
    text_field,
    label_field,
    config=None,
):
    texts, labels, where = _texts_of(calibration, text_field, label_field)
    available = len(texts)
    if max_samples is not None:
        texts = texts[:max_samples]
        labels = labels[:max_samples] if labels is not None else None
    fit, held, split = split_indices(len(texts), heldout, seed)
    split["available"] = available
    split["unit"] = "texts"
    split["max_length"] = max_length
    if labels is not None and kind != "sequence-classification":
        labels = None  # labels mean nothing to an embedding or a language model
    if labels is not None:
        labels = _label_ids(labels, getattr(config, "label2id", None), getattr(config, "num_labels", None), where)
    if kind == "causal-lm":
        fit_b, n_fit = _packed_batches(tokenizer, texts, fit, batch_size, max_length)
        held_b, n_held = _packed_batches(tokenizer, texts, held, batch_size, max_length)
        split.update(
            fit_tokens=n_fit,
            heldout_tokens=n_held,
            rows=f"texts joined (+EOS) and cut into rows of {max_length} tokens",
        )
        held_labels = None
    else:
        fit_b, _ = _tokenized_batches(tokenizer, texts, fit, batch_size, max_length, labels, where)
        held_b, held_labels = _tokenized_batches(tokenizer, texts, held, batch_size, max_length, labels, where)
    if not fit_b or not held_b:
        raise CalibrationError(f"{where}: too little text: a part of the split has no row of at least 2 tokens")
    split.update(fit_batches=len(fit_b), heldout_batches=len(held_b), batch_size=batch_size)
    return fit_b, held_b, held_labels, split


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _load_tokenizer(folder: str):
    """The folder's own tokenizer. Its files must be there: transformers would otherwise build an
    empty tokenizer for the model type, which turns every text into nothing."""
    from transformers import AutoTokenizer

    if not any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES):
        raise CalibrationError(
            f"{folder}: no usable tokenizer: none of {', '.join(TOKENIZER_FILES)} is in the folder "
            "(save it with tokenizer.save_pretrained(folder))"
        )
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CalibrationError(f"{folder}: no usable tokenizer: {' '.join(str(e).split())[:200]}") from None
    if len(tok) < 2:
        raise CalibrationError(f"{folder}: no usable tokenizer: it has a vocabulary of {len(tok)} tokens")
    return tok


def _ensure_pad(tokenizer, where: str) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CalibrationError(f"{where}: the tokenizer has neither a padding nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token


def _drop_unsaved_pooler(hf, ckpt: _Checkpoint) -> None:
    """An encoder's pooler (BERT's dense + tanh on the first token) that the checkpoint does not
    hold - a masked-LM checkpoint loaded as a text encoder - is random and unused by the sentence
    embedding: remove it rather than store random weights."""
    pooler = getattr(hf, "pooler", None)
    if pooler is None or not any(True for _ in pooler.parameters()):
        return
    prefix = getattr(hf, "base_model_prefix", "") or ""
    held = any(k.startswith("pooler.") or (prefix and k.startswith(f"{prefix}.pooler.")) for k in ckpt.files)
    if not held:
        hf.pooler = None


def _hf_folder_task(folder: str, calibration, kind: str | None, opts: dict) -> Task:
    st = _st_layout(folder)
    kind = kind or detect_kind(folder)
    if kind == "module":
        raise CalibrationError(f"{folder}: kind 'module' is for torch modules; a model folder is one of {KINDS[:3]}")
    model_dir = st["path"] if st else folder
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise CalibrationError(f"{model_dir}: no config.json: not a Hugging Face model folder")
    ckpt = _Checkpoint(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    import transformers

    cls = {
        "text-embedding": transformers.AutoModel,
        "causal-lm": transformers.AutoModelForCausalLM,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    try:
        hf = cls.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CalibrationError(f"{model_dir}: cannot load as {kind}: {' '.join(str(e).split())[:300]}") from None
    hf = hf.float().eval()
    if kind == "text-embedding":
        _drop_unsaved_pooler(hf, ckpt)
    names, extra, dtypes = match_names(hf, ckpt, prefix="hf.", kind=kind)
    max_length = opts.pop("max_length") or (st or {}).get("max_length") or DEFAULT_MAX_LENGTH
    max_pos = getattr(hf.config, "max_position_embeddings", None) or getattr(hf.config, "n_positions", None)
    if max_pos:
        max_length = min(int(max_length), int(max_pos))
    SentenceEmbedding, Logits, _, _ = _make_wrappers()
    if kind == "text-embedding":
        model = SentenceEmbedding(hf, (st or {}).get("pooling", "mean"), bool((st or {}).get("normalize")))
        fisher_output = "gaussian"
    else:
        model = Logits(hf)
        fisher_output = "classifier"
    if kind != "causal-lm":
        _ensure_pad(tokenizer, model_dir)
        if getattr(hf.config, "pad_token_id", 0) is None:  # classifiers find each text's last token by it
            hf.config.pad_token_id = tokenizer.pad_token_id
    fit_b, held_b, labels, split = _text_task(
        tokenizer, kind, calibration, max_length=max_length, config=hf.config, **opts
    )
    if kind == "text-embedding":
        split["pooling"] = model.pooling + (" + normalize" if model.normalize else "")
    task = Task(
        model=model.eval(),
        kind=kind,
        fit=fit_b,
        heldout=held_b,
        output_fn=_identity,
        fisher_output=fisher_output,
        labels=labels,
        names=names,
        split=split,
        extra=extra,
        dtypes=dtypes,
        source=f"{folder} ({type(hf).__name__}, {kind})",
    )
    return _check_fits(task, f"{type(hf).__name__} from {folder}")


def _hf_object_task(hf, tokenizer, calibration, kind: str | None, opts: dict) -> Task:
    archs = [type(hf).__name__]
    if kind is None:
        arch = archs[0]
        kind = (
            "causal-lm"
            if arch.endswith(_CAUSAL)
            else "sequence-classification"
            if arch.endswith(_SEQCLS)
            else "text-embedding"
            if arch.endswith(_HEADLESS)
            else None
        )
        if kind is None:
            raise CalibrationError(f"cannot tell the kind of a {arch}; pass kind=")
    hf = hf.float().eval()
    max_length = opts.pop("max_length") or DEFAULT_MAX_LENGTH
    SentenceEmbedding, Logits, _, _ = _make_wrappers()
    model = SentenceEmbedding(hf, "mean", False) if kind == "text-embedding" else Logits(hf)
    if kind != "causal-lm":
        _ensure_pad(tokenizer, archs[0])
    fit_b, held_b, labels, split = _text_task(
        tokenizer, kind, calibration, max_length=max_length, config=hf.config, **opts
    )
    names = {f"hf.{k}": k for k in hf.state_dict()}
    task = Task(
        model=model.eval(),
        kind=kind,
        fit=fit_b,
        heldout=held_b,
        output_fn=_identity,
        fisher_output="gaussian" if kind == "text-embedding" else "classifier",
        labels=labels,
        names=names,
        split=split,
        source=f"{archs[0]} object ({kind})",
    )
    return _check_fits(task, archs[0])


def _is_sentence_transformer(obj) -> bool:
    return any(c.__module__.startswith("sentence_transformers") for c in type(obj).__mro__)


def _st_object_task(st, calibration, kind: str | None, opts: dict) -> Task:
    if kind not in (None, "text-embedding"):
        raise CalibrationError(f"a SentenceTransformer is a text-embedding model, not {kind}")
    texts, _, where = _texts_of(calibration, opts.pop("text_field"), opts.pop("label_field"))
    max_length = opts.pop("max_length")
    if max_length:
        st.max_seq_length = int(max_length)
    max_samples = opts.pop("max_samples")
    available = len(texts)
    if max_samples is not None:
        texts = texts[:max_samples]
    fit, held, split = split_indices(len(texts), opts.pop("heldout"), opts.pop("seed"))
    split["available"] = available
    batch_size = opts.pop("batch_size")
    split.update(unit="texts", max_length=getattr(st, "max_seq_length", None), batch_size=batch_size)

    def batches(idx):
        out = []
        for group in _batches_of(idx, batch_size):
            tok = getattr(st, "preprocess", None) or st.tokenize
            feats = tok([texts[i] for i in group])
            out.append({k: v for k, v in feats.items() if hasattr(v, "shape")})
        return out

    _, _, STForward, _ = _make_wrappers()
    model = STForward(st).eval()
    fit_b, held_b = batches(fit), batches(held)
    split.update(fit_batches=len(fit_b), heldout_batches=len(held_b))
    names = {f"st.{k}": k for k in st.state_dict()}
    task = Task(
        model=model,
        kind="text-embedding",
        fit=fit_b,
        heldout=held_b,
        output_fn=_identity,
        fisher_output="gaussian",
        names=names,
        split=split,
        source=f"SentenceTransformer object ({where})",
    )
    return _check_fits(task, "SentenceTransformer")


# ---------------------------------------------------------------- module tasks


def _examples_of(batches: list) -> tuple[Any, Any] | None:
    """(inputs, labels or None) as one tensor each when every batch is a tensor or an (x, y) pair
    of tensors with the same trailing shapes; None otherwise (the split is then by batch)."""
    import torch

    xs, ys = [], []
    for b in batches:
        if isinstance(b, torch.Tensor):
            xs.append(b)
            ys.append(None)
        elif isinstance(b, (tuple, list)) and len(b) in (1, 2) and all(isinstance(t, torch.Tensor) for t in b):
            xs.append(b[0])
            ys.append(b[1] if len(b) == 2 else None)
        else:
            return None
    if len({tuple(x.shape[1:]) for x in xs}) != 1 or len({x.dtype for x in xs}) != 1:
        return None
    have = {y is not None for y in ys}
    if len(have) != 1:
        return None
    if True in have and len({tuple(y.shape[1:]) for y in ys}) != 1:
        return None
    return torch.cat(xs), (torch.cat(ys) if True in have else None)


def _module_task(model, calibration, kind: str | None, opts: dict, source: str) -> Task:
    import torch

    if kind not in (None, "module"):
        raise CalibrationError(f"a plain torch module is run as kind 'module', not {kind!r}")
    heldout, seed, batch_size, max_samples = opts["heldout"], opts["seed"], opts["batch_size"], opts["max_samples"]
    where = "calibration data"
    if isinstance(calibration, (str, os.PathLike)):
        where = os.fspath(calibration)
        if _suffix(where) not in TENSOR_SUFFIXES:
            raise CalibrationError(
                _unknown_file(where)
                if _suffix(where) not in TEXT_SUFFIXES + JSONL_SUFFIXES
                else f"{where}: text calibration needs a model with a tokenizer (a Hugging Face folder); "
                "give this model a tensor file (.pt, .npy, .npz)"
            )
        data: Any = _read_tensor_file(where)
    elif isinstance(calibration, (np.ndarray, torch.Tensor)):
        data = (_as_tensor(calibration, where, "inputs"), None)
    elif isinstance(calibration, Mapping) and any(k in calibration for k in ("x", "inputs")):
        x, y = _inputs_labels(calibration, where)
        data = (_as_tensor(x, where, "inputs"), None if y is None else _as_tensor(y, where, "labels"))
    elif _is_xy_pair(calibration):  # (x, y): inputs and labels, as in a tensor file
        x, y = calibration
        data = (_as_tensor(x, where, "inputs"), _as_tensor(y, where, "labels"))
    elif isinstance(calibration, Iterable) and not isinstance(calibration, (str, bytes, Mapping)):
        batches = list(calibration)
        if not batches:
            raise CalibrationError("the calibration batches are empty")
        data = _examples_of(batches)
        if data is None:  # batches that cannot be cut into examples: split by batch
            available = len(batches)
            if max_samples is not None:
                batches = batches[:max_samples]
            fit, held, split = split_indices(len(batches), heldout, seed)
            split["available"] = available
            split["unit"] = "batches"
            from .fisher.batches import _split_batch

            labels = [_split_batch(batches[i], f"batch {i}")[1] for i in held]
            labels = labels if all(lab is not None for lab in labels) else None
            task = Task(
                model=model,
                kind="module",
                fit=[batches[i] for i in fit],
                heldout=[batches[i] for i in held],
                output_fn=_default_output_fn,
                fisher_output=_module_fisher_output(labels),
                labels=labels,
                split=split,
                source=source,
            )
            return _check_fits(task, "the batches")
    else:
        raise CalibrationError(
            "calibration for a torch module must be a tensor file (.pt, .npy, .npz), a tensor/array, "
            f"a dict with 'x' (and 'y'), or an iterable of batches; got {type(calibration).__name__}"
        )
    x, y = data
    note = None
    if y is not None:
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise CalibrationError(f"{where}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            y, note = None, "ignored: not class indices"  # regression targets: no accuracy to count
        else:
            y = y.long()
    available = int(x.shape[0])
    if max_samples is not None:
        x = x[:max_samples]
        y = y[:max_samples] if y is not None else None
    fit, held, split = split_indices(int(x.shape[0]), heldout, seed)
    split["available"] = available
    split.update(unit="examples", batch_size=batch_size)
    if note:
        split["labels"] = note

    def batches_of(idx):
        out, labs = [], []
        for group in _batches_of(list(idx), batch_size):
            g = torch.as_tensor(group)
            if y is None:
                out.append(x[g])
            else:
                out.append((x[g], y[g]))
                labs.append(y[g])
        return out, (labs if y is not None else None)

    fit_b, _ = batches_of(fit)
    held_b, labels = batches_of(held)
    split.update(fit_batches=len(fit_b), heldout_batches=len(held_b))
    task = Task(
        model=model,
        kind="module",
        fit=fit_b,
        heldout=held_b,
        output_fn=_default_output_fn,
        fisher_output=_module_fisher_output(labels),
        labels=labels,
        split=split,
        source=source,
    )
    _check_fits(task, f"inputs of shape {tuple(x.shape[1:])} per sample, {str(x.dtype).removeprefix('torch.')}")
    if labels is not None:
        ref = task.reference()[0]
        n_out = ref.shape[-1] if ref.dim() >= 2 else None
        top = int(max(int(lab.max()) for lab in labels))
        if ref.dim() != 2 or (n_out is not None and top >= n_out) or int(min(int(lab.min()) for lab in labels)) < 0:
            raise CalibrationError(
                f"{where}: labels up to {top} do not fit the model's output of shape {tuple(ref.shape)} "
                "(accuracy needs (batch, classes) logits and labels in [0, classes))"
            )
    return task


def _default_output_fn(out):
    from .fisher.batches import _default_output

    return _default_output(out)[0]


def _module_fisher_output(labels) -> str:
    """The likelihood of a plain module's output: a classifier when there are class labels (the
    output is then checked to be (batch, classes) logits), else a gaussian around the output."""
    return "classifier" if labels is not None else "gaussian"


def _load_torchscript(path: str):
    import torch

    try:
        with warnings.catch_warnings():  # the TorchScript deprecation notice is not the user's business here
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError) as e:
        first = " ".join(str(e).split())[:200]
        raise CalibrationError(
            f"{path}: not a TorchScript model ({first}). Calibration needs a model that can run: a Hugging "
            "Face folder, a TorchScript file (torch.jit.save), or a torch.nn.Module in Python; a state_dict "
            "holds only weights"
        ) from None


# ---------------------------------------------------------------- entry point


def load_task(
    source,
    calibration,
    *,
    kind: str | None = None,
    heldout: float | int | str = DEFAULT_HELDOUT,
    seed: int = 0,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    max_length: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    text_field: str = "text",
    label_field: str | None = "label",
    tokenizer=None,
) -> Task:
    """A calibration :class:`~nnpress.calibration.Task` for ``source`` (a model folder, a
    TorchScript file, a SentenceTransformer / transformers / torch module) and ``calibration`` (a
    text, .jsonl or tensor file, a list of texts, a tensor, or batches). See the module docstring
    for the kinds, the split, the file names and the errors."""
    if kind is not None and kind not in KINDS:
        raise CalibrationError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2
    ):
        raise ValueError(f"max_samples must be an int >= 2 (one to fit, one to hold out), got {max_samples!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    heldout = _parse_heldout(heldout)
    if isinstance(heldout, bool) or not isinstance(heldout, (int, float)) or not heldout > 0:
        raise ValueError(f"heldout must be a fraction in (0, 1) or a count >= 1, got {heldout!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if calibration is None:
        raise CalibrationError("no calibration data given")
    opts = dict(
        heldout=heldout,
        seed=seed,
        max_samples=max_samples,
        max_length=max_length,
        batch_size=batch_size,
        text_field=text_field,
        label_field=label_field,
    )
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model: {path!r}")
        if isinstance(calibration, (str, os.PathLike)) and not os.path.exists(calibration):
            raise FileNotFoundError(f"no such calibration file: {os.fspath(calibration)!r}")
        if os.path.isdir(path):
            return _hf_folder_task(path, calibration, kind, opts)
        if _suffix(path) == ".safetensors":
            raise CalibrationError(
                f"{path}: a .safetensors file holds only weights; calibration needs a model that can run: its "
                "Hugging Face folder (config.json + tokenizer), a TorchScript file, or a torch.nn.Module in Python"
            )
        if _suffix(path) not in TORCHSCRIPT_SUFFIXES:
            raise CalibrationError(f"{path}: unknown model file type; use a Hugging Face folder or a TorchScript file")
        scripted = _load_torchscript(path).eval()
        *_, Scripted = _make_wrappers()
        task = _module_task(Scripted(scripted).eval(), calibration, kind, opts, source=f"{path} (TorchScript)")
        task.names = {f"ts.{k}": k for k in scripted.state_dict()}
        return task
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is needed for any model object
        raise TypeError(
            f"source must be a model folder, a TorchScript file or a torch module, not {type(source).__name__}"
        ) from None
    if not isinstance(source, torch.nn.Module):
        raise TypeError(
            f"source must be a model folder, a TorchScript file or a torch module, not {type(source).__name__}"
        )
    if _is_sentence_transformer(source):
        return _st_object_task(source.eval(), calibration, kind, opts)
    if tokenizer is not None:
        return _hf_object_task(source, tokenizer, calibration, kind, opts)
    if (
        hasattr(source, "config")
        and hasattr(source, "base_model_prefix")
        and isinstance(calibration, (str, os.PathLike, list))
    ):
        if isinstance(calibration, list) or _suffix(os.fspath(calibration)) not in TENSOR_SUFFIXES:
            raise CalibrationError("a transformers model object with text calibration needs tokenizer=")
    return _module_task(source.eval(), calibration, kind, opts, source=f"{type(source).__name__} object")
