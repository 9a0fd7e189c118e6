"""Streaming compress / decompress on a synthetic LLM-shaped bfloat16 checkpoint (issue 16).

Writes a sharded checkpoint under a temporary folder (``--dir``, default /tmp): ``--blocks`` transformer
blocks of 11008x4096 (up), 4096x11008 (down), 4x 4096x4096 (q, k, v, o) plus two 4096 norms, an
embedding and a head of ``--vocab`` x 4096, in shards of at most ``--shard-size``. Then, each in a fresh
process under ``/usr/bin/time -v``:

- ``nnpress compress ckpt/ x.nnp`` and ``nnpress decompress x.nnp out/``: peak resident memory, next to
  the issue's budget (4x the largest tensor's float32 size + 500 MB);
- decode throughput of the ``.nnp`` (the tensors of the first ``--throughput-blocks`` blocks decoded
  into a reused buffer, nothing written) with one thread and with all threads, in weights/s and MB/s
  of bfloat16 output, next to reading the raw safetensors from disk (page cache dropped where allowed,
  else warm) and, with ``--nncodec``, NNCodec's decoder on block 0's q_proj (its bitstream of the same
  tensor, float32 in, its default qp -38).

With ``--scale 2`` the same with twice the blocks, to show that the peak does not grow with the model.
Everything is deleted at the end (``--keep`` keeps it). The numbers are printed as JSON and a table.

Usage::

    python bench/python/bench_stream.py --blocks 12            # ~4.2 GB checkpoint (plus --scale 2)
    python bench/python/bench_stream.py --blocks 1 --vocab 4096 # small, for development
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HIDDEN, FFN = 4096, 11008


def block_shapes(i: int) -> list[tuple[str, tuple[int, ...]]]:
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (HIDDEN,)),
        (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        (p + "post_attention_layernorm.weight", (HIDDEN,)),
        (p + "mlp.up_proj.weight", (FFN, HIDDEN)),
        (p + "mlp.down_proj.weight", (HIDDEN, FFN)),
    ]


def all_shapes(blocks: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (vocab, HIDDEN))]
    for i in range(blocks):
        out += block_shapes(i)
    out += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (vocab, HIDDEN))]
    return out


def bf16(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    """Gaussian values as bfloat16 bit patterns (uint16), generated row block by row block."""
    out = np.empty(shape, np.uint16)
    flat = out.reshape(shape[0], -1) if len(shape) > 1 else out.reshape(1, -1)
    for r in range(0, flat.shape[0], 512):
        x = rng.standard_normal(flat[r : r + 512].shape, dtype=np.float32) * scale
        flat[r : r + 512] = (x.view(np.uint32) >> 16).astype(np.uint16)
    return out


def write_checkpoint(folder: str, blocks: int, vocab: int, shard_bytes: int, seed: int = 0) -> dict:
    """A sharded bfloat16 checkpoint (model-0000k-of-0000N.safetensors + index), written tensor by tensor."""
    from nnpress.checkpoint import OutSpec, plan_shards, write_safetensors

    os.makedirs(folder, exist_ok=True)
    shapes = all_shapes(blocks, vocab)
    specs = {n: OutSpec(n, "bfloat16", s) for n, s in shapes}
    shards = plan_shards([(n, specs[n].nbytes) for n, _ in shapes], shard_bytes)
    rng = np.random.default_rng(seed)
    wm = {}
    for k, names in enumerate(shards):
        fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"

        def fill(spec):
            if len(spec.shape) == 1:
                return (np.ones(spec.shape, np.float32).view(np.uint32) >> 16).astype(np.uint16)
            return bf16(rng, spec.shape, 0.02)

        with open(os.path.join(folder, fn), "wb") as f:
            write_safetensors(f, [specs[n] for n in names], fill, {"format": "pt"})
        wm.update(dict.fromkeys(names, fn))
    total = sum(s.nbytes for s in specs.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f)
    largest = max(int(np.prod(s)) for _, s in shapes)
    return {
        "blocks": blocks,
        "tensors": len(shapes),
        "shards": len(shards),
        "params": sum(int(np.prod(s)) for _, s in shapes),
        "bytes": total,
        "largest_elements": largest,
    }


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: wall seconds and peak RSS (bytes)."""
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)[1]) * 1024
    return {"seconds": wall, "peak_rss": rss}


def drop_cache(path: str) -> bool:
    """Ask the kernel to forget the file's cached pages (posix_fadvise DONTNEED); True if it could."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (OSError, AttributeError):
        return False


def throughput_names(blocks: int) -> list[str]:
    """The tensors the throughput runs decode and read: the first ``blocks`` transformer blocks."""
    return [n for i in range(blocks) for n, _ in block_shapes(i)]


def decode_throughput(nnp: str, threads: int | None, names: list[str]) -> dict:
    """Decode ``names`` into a reused buffer (nothing written): seconds, weights/s, MB/s of output."""
    import nnpress

    drop_cache(nnp)
    f = nnpress.NnpFile(nnp)
    largest = max(f.nbytes(n) for n in names)
    buf = np.empty(largest, np.uint8)
    t = time.perf_counter()
    weights = out_bytes = 0
    for n in names:
        b = f.nbytes(n)
        f.read_into(n, buf[:b], threads=threads)
        weights += f.entry(n)["count"]
        out_bytes += b
    s = time.perf_counter() - t
    return {
        "threads": threads or os.cpu_count(),
        "seconds": s,
        "weights_per_s": weights / s,
        "MB_per_s": out_bytes / s / 1e6,
    }


def raw_read_throughput(folder: str, names: list[str]) -> dict:
    """Read ``names`` from the safetensors shards on disk (readinto), as a baseline."""
    from nnpress.checkpoint import open_checkpoint, read_tensor

    ck = open_checkpoint(folder)
    cold = all(drop_cache(f.path) for f in ck.files)
    t = time.perf_counter()
    weights = nbytes = 0
    for n in names:
        a = read_tensor(ck.info(n))
        weights += a.size
        nbytes += a.nbytes
        del a
    s = time.perf_counter() - t
    return {"seconds": s, "weights_per_s": weights / s, "MB_per_s": nbytes / s / 1e6, "page_cache_dropped": cold}


def nncodec_decode(folder: str, names: list[str], work: str) -> dict | None:
    """NNCodec 2.1.3 (in /work/venvs/nnc) on the given tensors, widened to float32 (its input): encode
    with its defaults (qp -38, dependent quantization), then time its decoder."""
    py = "/work/venvs/nnc/bin/python"
    if not os.path.exists(py):
        return None
    from nnpress.checkpoint import open_checkpoint

    ck = open_checkpoint(folder)
    npz = os.path.join(work, "nncodec_in.npz")
    np.savez(npz, **{n: (ck.read(n).astype(np.uint32) << 16).view(np.float32) for n in names})
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"""
import json, sys, numpy as np
sys.path.insert(0, {here!r})
import peers
ws = dict(np.load({npz!r}))
data, info = peers.nncodec_compress_state_dict(ws)
out, dinfo = peers.nncodec_decompress(data, return_info=True)
n = sum(a.size for a in ws.values())
print(json.dumps({{"weights": n, "bytes": len(data), "encode_s": info.get("encode_s"),
                  "decode_s": dinfo["decode_s"], "weights_per_s": n / dinfo["decode_s"],
                  "MB_per_s_float32": 4 * n / dinfo["decode_s"] / 1e6}}))
"""
    r = subprocess.run([py, "-c", code], capture_output=True, text=True)
    os.remove(npz)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(args, blocks: int) -> dict:
    work = tempfile.mkdtemp(prefix="nnpress-bench-stream-", dir=args.dir)
    try:
        ck = os.path.join(work, "ckpt")
        t = time.perf_counter()
        info = write_checkpoint(ck, blocks, args.vocab, args.shard_size)
        info["write_seconds"] = time.perf_counter() - t
        nnp = os.path.join(work, "model.nnp")
        exe = [sys.executable, "-m", "nnpress.cli"]
        res = {"checkpoint": info}
        res["compress"] = timed([*exe, "compress", ck, nnp, "-q"])
        res["nnp_bytes"] = os.path.getsize(nnp)
        res["decompress"] = timed([*exe, "decompress", nnp, os.path.join(work, "out"), "-q"])
        shutil.rmtree(os.path.join(work, "out"))
        budget = 4 * 4 * info["largest_elements"] + 500e6
        res["budget_bytes"] = budget
        if not args.skip_throughput:
            names = throughput_names(min(blocks, args.throughput_blocks))
            res["throughput_tensors"] = len(names)
            res["decode_1_thread"] = decode_throughput(nnp, 1, names)
            res["decode_all_threads"] = decode_throughput(nnp, None, names)
            res["raw_safetensors_read"] = raw_read_throughput(ck, names)
            if args.nncodec:
                res["nncodec"] = nncodec_decode(ck, [block_shapes(0)[1][0]], work)
        return res
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--shard-size", type=int, default=2 * 10**9, help="bytes per input shard")
    p.add_argument("--dir", default="/tmp")
    p.add_argument("--scale", type=int, default=2, help="also run with this many times the blocks (1: no)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--throughput-blocks", type=int, default=2, help="blocks decoded/read for the throughput runs")
    p.add_argument("--nncodec", action="store_true", help="time NNCodec's decoder on block 0's q_proj")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    out = {"uptime": os.getloadavg(), "cpus": os.cpu_count(), "runs": []}
    sizes = [a.blocks] + ([a.blocks * a.scale] if a.scale > 1 else [])
    for i, b in enumerate(sizes):
        out["runs"].append(run(a, b) if i == 0 else run(argparse.Namespace(**{**vars(a), "skip_throughput": True}), b))
    out["uptime_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    for r in out["runs"]:
        c = r["checkpoint"]
        print(
            f"\n{c['blocks']} blocks, {c['tensors']} tensors in {c['shards']} shards, "
            f"{c['params'] / 1e9:.2f} G params, "
            f"{c['bytes'] / 1e9:.2f} GB bf16 -> {r['nnp_bytes'] / 1e9:.3f} GB .nnp; budget "
            f"{r['budget_bytes'] / 1e6:.0f} MB"
        )
        for k in ("compress", "decompress"):
            print(f"  {k:<10} peak RSS {r[k]['peak_rss'] / 1e6:8.0f} MB   {r[k]['seconds']:8.1f} s")
        for k in ("decode_1_thread", "decode_all_threads", "raw_safetensors_read"):
            if k in r:
                print(f"  {k:<20} {r[k]['weights_per_s'] / 1e6:8.1f} M weights/s {r[k]['MB_per_s']:8.1f} MB/s")
        if r.get("nncodec"):
            print(f"  nncodec: {r['nncodec']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
