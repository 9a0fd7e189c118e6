"""The ``nnpress`` command: compress, decompress, info, demo.

Exit codes: 0 success; 1 a user-facing error (missing file, corrupt/unsupported file, bad value,
missing optional dependency) reported in one line on stderr, no traceback; 2 bad command-line usage
(argparse); 130 interrupted; 141 (128 + SIGPIPE) when stdout is closed early, e.g. ``nnpress info
x.nnp | head``: nothing is printed about it, as with standard Unix tools. ``--json`` prints one
JSON document on stdout (``compress --json FILE`` writes it to FILE); progress goes to stderr (a
bar when stderr is a terminal, or with ``--progress``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .config import CONFIG_METHODS, SPREADS

__all__ = ["main"]


class _Progress:
    """tqdm if installed, else a one-line stderr counter. Silent unless enabled."""

    def __init__(self, enabled: bool, desc: str):
        self.enabled, self.desc, self.bar, self.last = enabled, desc, None, 0.0

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.desc, unit="tensor", file=sys.stderr, leave=False)
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.n = done
            self.bar.set_postfix_str(name[-40:], refresh=True)
            if done >= total:
                self.bar.close()
            return
        now = time.monotonic()
        if done >= total or now - self.last > 0.1:
            self.last = now
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\r{self.desc}: {done}/{total} tensors {name[-40:]:<40}{end}")
            sys.stderr.flush()


def _config_from_args(a):
    from .config import CodecConfig

    kw = {}
    if a.method:
        kw["method"] = a.method
    if a.step is not None:
        kw["step"] = a.step
    if a.qp is not None:
        kw["qp"] = a.qp
    if a.rel_step is not None:
        kw["rel_step"] = a.rel_step
    if a.size_exponent is not None:
        kw["size_exponent"] = a.size_exponent
    if a.spread is not None:
        kw["spread"] = a.spread
    if a.lam_scale is not None:
        kw["lam_scale"] = a.lam_scale
    if a.lossless_roles is not None:
        kw["lossless_roles"] = tuple(r for r in a.lossless_roles.split(",") if r)
    if a.block_elements is not None:
        kw["block_elements"] = a.block_elements
    if a.prune is not None:
        kw["prune"] = a.prune
    if a.threads is not None:
        kw["threads"] = a.threads
    if a.synthetic_feedback:
        kw["synthetic_feedback"] = True
    if a.plan:
        plan = _read_plan(a.plan)
        kw["plan"] = plan.get("plan", plan.get("overrides", plan))
    return CodecConfig(**kw)


def _read_plan(arg: str) -> dict:
    """``--plan``: the path of a JSON file or an inline JSON object, holding tensor name/pattern ->
    settings (or ``{"plan": {...}}``; ``{"overrides": {...}}``, its old name, is read too)."""
    if os.path.isfile(arg):
        what = arg
        with open(arg, encoding="utf-8") as f:
            text = f.read()
    elif arg.lstrip().startswith("{"):
        what, text = "inline JSON", arg
    else:
        raise ValueError(
            f"--plan {arg!r}: neither an existing file nor an inline JSON object "
            '(e.g. --plan \'{"fc.*": {"step": 0.01}}\')'
        )
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--plan: {what} is not valid JSON: {e}") from None
    if not isinstance(plan, dict):
        raise ValueError(
            f"--plan: {what} holds a JSON {type(plan).__name__}, expected an object of tensor name/pattern -> settings"
        )
    return plan


def _cmd_compress(a) -> int:
    from .api import compress
    from .budget_report import calibration_options_without_data, run_compress

    if not os.path.exists(a.source):
        raise FileNotFoundError(f"no such file: {a.source}")
    if a.calibration is not None:  # the smallest file for a fidelity budget
        return run_compress(a, _config_from_args)
    stray = calibration_options_without_data(a)
    if stray:
        verb = "needs" if len(stray) == 1 else "need"
        raise ValueError(f"{', '.join(stray)} {verb} calibration data: add --calibration DATA")
    config = _config_from_args(a)
    if a.json not in (None, "-"):  # before the work, not after it
        from .container import file_destination

        file_destination(a.json)
    show = a.progress or (not a.quiet and sys.stderr.isatty())
    rep = compress(a.source, a.dest, config, progress=_Progress(show, "quantizing"))
    if a.json not in (None, "-"):
        from .container import write_bytes_atomic

        write_bytes_atomic(a.json, (json.dumps(rep.to_dict(), indent=1) + "\n").encode("utf-8"))
    if a.json == "-":
        print(json.dumps(rep.to_dict(), indent=1))
    elif not a.quiet:
        print(rep.table(max_rows=None if a.verbose else 30))
    return 0


def _add_budget_arguments(c) -> None:
    """``compress``'s options for the smallest file that meets a fidelity budget."""
    from .calibration import KINDS

    g = c.add_argument_group(
        "fidelity budget (with --calibration: the smallest file whose fidelity on held-out calibration samples "
        "meets --budget)"
    )
    g.add_argument(
        "--calibration",
        metavar="DATA",
        help="calibration data: text (one sample per line), .jsonl (a text field), or .pt/.npy/.npz inputs",
    )
    g.add_argument("--budget", metavar="METRIC=VALUE", help="e.g. cos_mean=0.999, kl=0.01, accuracy_drop=0.2")
    g.add_argument("--kind", choices=KINDS, help="model kind (default: from the model folder's config)")
    g.add_argument("--heldout", metavar="F", help="held-out share: a fraction (default 0.25) or a count")
    g.add_argument("--seed", type=int, help="seed of the split and the estimates (default 0)")
    g.add_argument("--text-field", metavar="NAME", help="text field of .jsonl calibration files (default text)")
    g.add_argument("--max-samples", type=int, metavar="N", help="use the first N calibration samples (default 1024)")
    g.add_argument("--max-length", type=int, metavar="T", help="tokens per text sample / language-model row")
    g.add_argument("--batch-size", type=int, metavar="B", help="samples per calibration batch (default 16)")
    g.add_argument("--plot", metavar="PNG", help="write the rate-fidelity curve (needs matplotlib)")


def _cmd_decompress(a) -> int:
    from .api import decompress_to_file

    kw = {} if a.max_shard_size is None else {"max_shard_size": a.max_shard_size}
    summary = decompress_to_file(a.source, a.dest, threads=a.threads, **kw)
    if a.json:
        print(json.dumps(summary, indent=1))
    elif not a.quiet:
        files = len(summary["files"])
        print(
            f"{a.source} -> {summary['path']}: {summary['tensors']} tensors, "
            f"{summary['bytes']:,} bytes" + (f" in {files} files" if files > 1 else "") + " "
            f"(decode {summary['decode_seconds']:.3f} s, write {summary['write_seconds']:.3f} s)"
        )
    return 0


def _cmd_info(a) -> int:
    from .api import info

    d = info(a.file)
    if a.verify:
        from .container import NnpFile

        NnpFile(a.file).verify()
        d["checksums"] = "ok"
    if a.json:
        print(json.dumps(d, indent=1))
        return 0
    head = (
        f"{'tensor':<50} {'shape':<16} {'dtype':<9} {'role':<9} {'stored':<9} {'step':>10} {'bytes':>11} {'bits/p':>7}"
    )
    print(
        f"{d['path']}: .nnp format {d['version'][0]}.{d['version'][1]}, {d['tensors']} tensors, "
        f"{d['params']:,} parameters"
    )
    print(head)
    print("-" * len(head))
    for e in d["entries"]:
        name = e["name"] if len(e["name"]) <= 50 else "…" + e["name"][-49:]
        shape = "x".join(str(s) for s in e["shape"]) or "()"
        kind = e.get("method", e["storage"]) if e["storage"] == "quantized" else e["storage"]
        step = f"{e['step']:.3g}" if "step" in e else ""
        print(
            f"{name:<50} {shape:<16} {e['dtype']:<9} {e['role']:<9} {kind:<9} {step:>10} "
            f"{e['stored_bytes']:>11,} {e['bits_per_param']:>7.3f}"
        )
    print("-" * len(head))
    print(
        f"file {d['file_bytes']:,} bytes; decoded {d['original_bytes']:,} bytes; "
        f"ratio {d['ratio']:.2f}x; "
        f"{d['bits_per_param']:.3f} bits/param" + ("; checksums ok" if a.verify else "")
    )
    return 0


def _cmd_demo(a) -> int:
    from .demo import format_demo, format_demo_line, run_demo

    log = (lambda s: print(s, file=sys.stderr)) if not (a.quiet or a.json) else None
    r = run_demo(a.out, plot=not a.no_plot, log=log)
    if a.json:
        print(json.dumps(r, indent=1))
    elif a.quiet:
        print(format_demo_line(r))
    else:
        print(format_demo(r))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like the rest of the command's errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nnpress", description="Compress neural networks with DeepCABAC (.nnp files).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{compress,decompress,info,demo}")

    c = sub.add_parser("compress", help="model (.safetensors / checkpoint folder / .pt/.pth) -> .nnp")
    c.add_argument(
        "source",
        help="a .safetensors file, a Hugging Face checkpoint folder or its model.safetensors.index.json "
        "(read one tensor at a time), or a .pt/.pth state_dict (loaded weights-only) or TorchScript "
        "archive (its weights)",
    )
    c.add_argument("dest", help="the .nnp file to write (atomically)")
    c.add_argument(
        "--method",
        choices=CONFIG_METHODS,
        help="quantizer (default auto: the trellis at every model size)",
    )
    g = c.add_mutually_exclusive_group()
    g.add_argument("--step", type=float, help="one absolute step size for all quantized tensors")
    g.add_argument("--qp", type=int, help="NNCodec-style quantization parameter: step = 2**(qp/4)")
    g.add_argument(
        "--rel-step",
        type=float,
        help="step = REL_STEP x spread x sqrt(size / mean size) of each tensor, halved for the "
        "trellis (default 1/22; the data-free default, see CodecConfig)",
    )
    c.add_argument(
        "--spread",
        choices=SPREADS,
        help="the spread of --rel-step: robust (default: the bulk's, outliers clipped) or std",
    )
    c.add_argument(
        "--size-exponent",
        type=float,
        help="the sqrt(size / mean size) factor of --rel-step raised to this power "
        "(default 1; 0 = step from the spread alone)",
    )
    c.add_argument("--lam-scale", type=float, help="rate-distortion lambda = LAM_SCALE x step^2 (rdoq/trellis)")
    c.add_argument(
        "--lossless-roles",
        metavar="ROLES",
        help="comma-separated roles stored exactly (default buffer,other: biases and norms are "
        "quantized near-losslessly; '' = none)",
    )
    c.add_argument("--block-elements", type=int, help="elements per independently decodable row block")
    c.add_argument(
        "--prune",
        type=float,
        metavar="FRACTION",
        help="set this fraction of each quantized tensor's smallest weights to zero first (default 0); with "
        "--calibration: a fixed sparsity for the search's pruning (default: the search tries sparsities; 0: none)",
    )
    c.add_argument(
        "--plan",
        metavar="JSON",
        help="the per-tensor plan, a JSON file or an inline JSON object: {name or glob: {step, method, ...}}",
    )
    c.add_argument(
        "--synthetic-feedback",
        action="store_true",
        help="text models (a model folder that loads and runs): error feedback from K-FAC blocks estimated on "
        "random token ids, no data needed; a smaller file for several times the encode time",
    )
    c.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    _add_budget_arguments(c)
    c.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="the report as JSON: on stdout in place of the table, or written to FILE",
    )
    c.add_argument("-v", "--verbose", action="store_true", help="list every tensor")
    c.add_argument("-q", "--quiet", action="store_true", help="no table, and no progress bar unless --progress")
    c.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    c.set_defaults(func=_cmd_compress)

    d = sub.add_parser("decompress", help=".nnp -> sharded checkpoint folder / .safetensors / .npz / .pt")
    d.add_argument("source", help="the .nnp file to decode")
    d.add_argument(
        "dest",
        help="a folder (existing, ending in '/' or without a suffix: shards + model.safetensors.index.json, "
        "as transformers writes them), or a .safetensors, .npz, .pt or .pth file",
    )
    d.add_argument(
        "--max-shard-size",
        metavar="SIZE",
        help="folder output: at most SIZE bytes of tensors per shard, e.g. 5GB (default), 500MB, 2GiB",
    )
    d.add_argument("--threads", type=int, help="worker threads (default: all cores)")
    d.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON (path, files, tensors, bytes, decode/write seconds) in place of the line",
    )
    d.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    d.set_defaults(func=_cmd_decompress)

    i = sub.add_parser("info", help="tensor table of a .nnp file (decodes nothing)")
    i.add_argument("file", help="the .nnp file to describe (decodes nothing)")
    i.add_argument("--verify", action="store_true", help="also check every chunk's CRC")
    i.add_argument(
        "--json",
        action="store_true",
        help="print the table as JSON (totals, metadata and one entry per tensor) in place of the text table",
    )
    i.set_defaults(func=_cmd_info)

    m = sub.add_parser("demo", help="train the digits CNN, compress, decompress, compare accuracy, plot")
    m.add_argument("--out", default="nnpress-demo", help="output folder (default ./nnpress-demo)")
    m.add_argument("--no-plot", action="store_true", help="do not draw the rate-accuracy plot")
    m.add_argument("--json", action="store_true", help="print the results as JSON in place of the summary")
    m.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only one line: the compressed file, its size and the accuracy before/after",
    )
    m.set_defaults(func=_cmd_demo)
    return p


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as standard Unix tools do. stdout
    now points to /dev/null so that the interpreter's final flush does not report the pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (e.g. captured in tests)
        pass
    return 128 + 13  # as if killed by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    a = parser.parse_args(argv)
    if a.version:
        from . import __version__

        print(f"nnpress {__version__}")
        return 0
    if not getattr(a, "command", None):
        parser.print_help(sys.stderr)
        return 2
    if getattr(a, "threads", None) is not None and a.threads < 1:
        print(f"nnpress {a.command}: error: --threads must be >= 1", file=sys.stderr)
        return 2
    from .errors import FormatError, PickledObjectError

    try:
        code = a.func(a)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except PickledObjectError as e:
        print(f"nnpress {a.command}: error: {e}", file=sys.stderr)
    except FormatError as e:
        msg = str(e)
        src = getattr(a, "source", None) or getattr(a, "file", None)
        if src and str(src) not in msg:  # errors raised while decoding name the tensor, not the file
            msg = f"{src}: {msg}"
        print(f"nnpress {a.command}: error: invalid or corrupt file: {msg}", file=sys.stderr)
    except FileNotFoundError as e:
        print(
            f"nnpress {a.command}: error: {e.strerror + ': ' + repr(e.filename) if e.filename else e}",
            file=sys.stderr,
        )
    except (IsADirectoryError, PermissionError, OSError) as e:
        print(f"nnpress {a.command}: error: {e}", file=sys.stderr)
    except KeyError as e:
        print(f"nnpress {a.command}: error: {e.args[0] if e.args else e}", file=sys.stderr)
    except (ValueError, TypeError) as e:
        print(f"nnpress {a.command}: error: {e}", file=sys.stderr)
    except ImportError as e:
        print(f"nnpress {a.command}: error: a required package is missing: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"nnpress {a.command}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
