"""Sharded Hugging Face checkpoints and the lazy safetensors reader: what is read, and every bad
input a clear FormatError naming the files."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import nnpress
from nnpress.checkpoint import SafetensorsFile, open_checkpoint, parse_size, plan_shards
from nnpress.errors import FormatError
from nnpress.traverse import collect, load_safetensors, save_safetensors


def _raw_file(path, header: dict | bytes, body: bytes = b"", hlen: int | None = None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if hlen is None else hlen) + h + body)
    return path


def _shards(folder, parts: list[dict], index: bool = True, n: int | None = None):
    """Shards model-0000k-of-0000N.safetensors of numpy tensors, plus an index unless told not to."""
    os.makedirs(folder, exist_ok=True)
    n = len(parts) if n is None else n
    wm = {}
    for k, part in enumerate(parts):
        fn = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_safetensors(part, os.path.join(folder, fn), metadata={"format": "pt"})
        wm.update(dict.fromkeys(part, fn))
    if index:
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
    return wm


def _parts(seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"a.weight": rng.standard_normal((8, 4)).astype(np.float32), "a.bias": np.zeros(8, np.float32)},
        {"b.weight": rng.standard_normal((4, 8)).astype(np.float16)},
        {"c.ids": np.arange(5, dtype=np.int64)},
    ]


def test_folder_index_and_names_open_the_same_checkpoint(tmp_path):
    _shards(tmp_path / "ck", _parts())
    by_folder = open_checkpoint(tmp_path / "ck")
    by_index = open_checkpoint(tmp_path / "ck" / "model.safetensors.index.json")
    assert by_folder.names == by_index.names == ["a.weight", "a.bias", "b.weight", "c.ids"]
    assert by_folder.metadata == {"format": "pt"}
    os.remove(tmp_path / "ck" / "model.safetensors.index.json")  # shard names alone
    assert open_checkpoint(tmp_path / "ck").names == by_folder.names
    # collect (the in-memory route) reads the same tensors, dtypes kept
    ents = collect(tmp_path / "ck")
    assert [e.name for e in ents] == by_folder.names
    assert [e.dtype for e in ents] == ["float32", "float32", "float16", "int64"]
    np.testing.assert_array_equal(ents[2].values, _parts()[1]["b.weight"])


def test_reading_one_tensor_reads_only_its_bytes(tmp_path, monkeypatch):
    _shards(tmp_path / "ck", _parts())
    ck = open_checkpoint(tmp_path / "ck")
    import builtins

    opened = []
    real_open = builtins.open

    def spy(path, *a, **k):
        opened.append(os.fspath(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    got = ck.read("b.weight")
    assert opened == [str(tmp_path / "ck" / "model-00002-of-00003.safetensors")]
    np.testing.assert_array_equal(got, _parts()[1]["b.weight"])


def test_missing_shard_with_and_without_index(tmp_path):
    _shards(tmp_path / "ck", _parts())
    os.remove(tmp_path / "ck" / "model-00002-of-00003.safetensors")
    with pytest.raises(FormatError, match=r"missing shard.*model-00002-of-00003\.safetensors"):
        open_checkpoint(tmp_path / "ck")
    os.remove(tmp_path / "ck" / "model.safetensors.index.json")
    with pytest.raises(FormatError, match=r"missing shard.*model-00002-of-00003\.safetensors"):
        open_checkpoint(tmp_path / "ck")


def test_index_naming_a_tensor_its_shard_lacks(tmp_path):
    wm = _shards(tmp_path / "ck", _parts())
    wm["ghost.weight"] = "model-00001-of-00003.safetensors"
    with open(tmp_path / "ck" / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": wm}, f)
    with pytest.raises(FormatError, match=r"ghost\.weight.*model-00001-of-00003\.safetensors"):
        open_checkpoint(tmp_path / "ck")


def test_tensor_in_a_shard_but_not_in_the_index(tmp_path):
    wm = _shards(tmp_path / "ck", _parts())
    del wm["a.bias"]
    with open(tmp_path / "ck" / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": wm}, f)
    with pytest.raises(FormatError, match=r"model-00001-of-00003\.safetensors holds tensor\(s\) \['a\.bias'\]"):
        open_checkpoint(tmp_path / "ck")


def test_duplicate_names_across_shards(tmp_path):
    parts = _parts()
    parts[2]["a.weight"] = parts[0]["a.weight"]
    _shards(tmp_path / "ck", parts)  # the index maps a.weight to the last shard
    with pytest.raises(FormatError, match=r"'a\.weight' is in two shards: .*00001-of-00003.* and .*00003-of-00003"):
        open_checkpoint(tmp_path / "ck")
    os.remove(tmp_path / "ck" / "model.safetensors.index.json")
    with pytest.raises(FormatError, match=r"'a\.weight' is in two shards"):
        open_checkpoint(tmp_path / "ck")
    with pytest.raises(FormatError, match="two shards"):  # compress says it too
        nnpress.compress(tmp_path / "ck", tmp_path / "x.nnp")
    assert not os.path.exists(tmp_path / "x.nnp")


def test_index_pointing_outside_its_folder(tmp_path):
    _shards(tmp_path / "ck", _parts())
    with open(tmp_path / "ck" / "model.safetensors.index.json", "w") as f:
        json.dump({"weight_map": {"a.weight": "../elsewhere.safetensors"}}, f)
    with pytest.raises(FormatError, match="not a file name in the index's folder"):
        open_checkpoint(tmp_path / "ck")
    with open(tmp_path / "ck" / "model.safetensors.index.json", "w") as f:
        f.write('{"weight_map": [1, 2]}')
    with pytest.raises(FormatError, match="no weight_map"):
        open_checkpoint(tmp_path / "ck")


def test_folder_without_weights(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without safetensors"):
        collect(tmp_path / "empty")


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize(
    ("header", "body", "hlen", "message"),
    [
        (GOOD, b"\0" * 16, 1 << 40, "header length"),  # claims more than the file: nothing allocated
        (b"{not json", b"", None, "not valid JSON"),
        (b"[1, 2]", b"", None, "not a JSON object"),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {}}', b"\0" * 4, None, "appears twice"),
        ({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"\0" * 2, None, "unsupported dtype"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b"", None, "negative dimension"),
        ({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 12, None, "bad data offsets"),
        (GOOD, b"\0" * 8, None, "bad data offsets"),  # truncated: the data region is too short
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16, None, "end at data offset 8"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            None,
            "without gaps or overlap",
        ),
        ({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, b"\0" * 8, None, "bad header entry"),
        ({"__metadata__": {"format": 1}, **GOOD}, b"\0" * 16, None, "__metadata__"),
    ],
)
def test_hostile_headers_are_format_errors(tmp_path, header, body, hlen, message):
    p = _raw_file(tmp_path / "bad.safetensors", header, body, hlen)
    with pytest.raises(FormatError, match=message):
        SafetensorsFile(p)
    with pytest.raises(FormatError):
        load_safetensors(p)
    with pytest.raises(FormatError):
        nnpress.compress(p, tmp_path / "bad.nnp")


def test_too_short_file(tmp_path):
    p = tmp_path / "short.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="too short"):
        SafetensorsFile(p)


def test_sizes_and_shard_plan():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("1.5KB") == 1500
    assert parse_size(4096) == 4096
    for bad in ("5 parsecs", "", "-1MB"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError):
        parse_size(0)
    # a tensor bigger than the limit gets a shard of its own; order kept
    assert plan_shards([("a", 4), ("b", 4), ("c", 9), ("d", 1)], 8) == [["a", "b"], ["c"], ["d"]]
    assert plan_shards([], 8) == [[]]


def test_written_tensors_are_aligned_and_listed_in_order(tmp_path):
    from nnpress.checkpoint import OutSpec, safetensors_layout

    specs = [OutSpec("a", "bfloat16", (3,)), OutSpec("b", "int64", (4,)), OutSpec("c", "float32", (2,))]
    head, order = safetensors_layout(specs, {"format": "pt"})
    header = json.loads(head[8:])
    assert len(head) % 8 == 0 and [k for k in header if k != "__metadata__"] == ["a", "b", "c"]
    for s in specs:
        assert header[s.name]["data_offsets"][0] % (s.nbytes // max(1, int(np.prod(s.shape)))) == 0, s.name
    assert [s.name for s in order] == ["b", "c", "a"]
