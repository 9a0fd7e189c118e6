"""What ``nnpress compress --calibration ... --budget ...`` shows: a progress bar with the stage and
its ETA, the report a user can act on (every point tried, the chosen one, the held-out fidelity and
the split, per-tensor bits and steps), the JSON document and the rate-fidelity plot.

Everything here reads the dict of ``BudgetReport.to_dict()`` (keys "budget", "met", "chosen",
"points", "tensors", "heldout", "split", "times", "path", "file_bytes", "params"), so the text, the
JSON and the plot say the same thing. matplotlib is imported only by :func:`write_plot`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, TextIO

__all__ = ["StageProgress", "check_plot_available", "format_report", "run_compress", "write_plot"]


# ---------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class StageProgress:
    """``progress(stage, done, total)`` drawn as one line per stage on ``stream``: the stage, a bar,
    done/total, the time spent in the stage and the ETA of the stage (its mean time per step so far
    times the steps left). Silent when not ``enabled``. Redraws at most every ``min_interval``
    seconds, and always at a stage's last step."""

    def __init__(
        self,
        enabled: bool,
        stream: TextIO | None = None,
        width: int = 24,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.enabled, self.stream, self.width = enabled, stream, width
        self.min_interval, self.clock = min_interval, clock
        self.stage: str | None = None
        self.start = self.last = 0.0
        self.open_line = False

    def line(self, stage: str, done: int, total: int, elapsed: float) -> str:
        frac = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        fill = round(frac * self.width)
        bar = "#" * fill + "." * (self.width - fill)
        eta = elapsed / done * (total - done) if done > 0 else float("nan")
        return f"{stage:<18} [{bar}] {done}/{total}  {_clock(elapsed)} elapsed  ETA {_clock(eta)}"

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        out = self.stream or sys.stderr
        now = self.clock()
        if stage != self.stage:
            if self.open_line:
                out.write("\n")
            self.stage, self.start, self.last = stage, now, float("-inf")
        finished = total > 0 and done >= total
        if not finished and now - self.last < self.min_interval:
            return
        self.last = now
        out.write("\r" + self.line(stage, done, total, now - self.start))
        self.open_line = not finished
        if finished:
            out.write("\n")
        out.flush()

    def close(self) -> None:
        if self.enabled and self.open_line:
            (self.stream or sys.stderr).write("\n")
            self.open_line = False


# ---------------------------------------------------------------- the report as text


def _budget_parts(d: Mapping) -> tuple[str | None, str]:
    """(budget metric, budget as text) of a report dict."""
    b = d.get("budget")
    if isinstance(b, Mapping):
        metric = b.get("metric")
        value = b.get("value")
        from .calibration import METRICS

        op = ">=" if metric in METRICS and METRICS[metric].higher_is_better else "<="
        return metric, f"{metric} {op} {value:g}" if isinstance(value, (int, float)) else str(b)
    if isinstance(b, str):
        for sep in (">=", "<=", "="):
            if sep in b:
                return b.partition(sep)[0].strip(), b
        return None, b
    return None, str(b)


def _chosen_index(d: Mapping) -> int | None:
    chosen, points = d.get("chosen"), d.get("points") or []
    if isinstance(chosen, bool) or chosen is None:
        return None
    if isinstance(chosen, int):
        return chosen if 0 <= chosen < len(points) else None
    if isinstance(chosen, Mapping):
        for i, p in enumerate(points):
            if p == chosen:
                return i
        for i, p in enumerate(points):
            if p.get("file_bytes") == chosen.get("file_bytes") and p.get("setting") == chosen.get("setting"):
                return i
    return None


def _fmt_metric(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.6f}" if abs(v) < 10 else f"{v:.3f}"
    return f"{v:.3e}"


def _fmt_setting(s: Any) -> str:
    if isinstance(s, Mapping):
        parts = []
        for k, v in s.items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        return " ".join(parts)
    return "" if s is None else str(s)


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def format_report(d: Mapping, *, max_tensors: int | None = 30) -> str:
    """The human report of a budget run (``BudgetReport.to_dict()``)."""
    lines = []
    metric, budget_text = _budget_parts(d)
    params = d.get("params") or 0
    file_bytes = d.get("file_bytes")
    met = d.get("met")
    heldout = d.get("heldout") or {}
    split = d.get("split") or {}
    if d.get("source"):
        lines.append(f"source: {d['source']}")
    if d.get("path"):
        lines.append(f"{d['path']}: {file_bytes:,} bytes, {params:,} parameters" if file_bytes else str(d["path"]))
    status = "met" if met else "NOT met"
    reached = f" (held-out {metric} = {_fmt_metric(heldout[metric])})" if metric in heldout else ""
    lines.append(f"budget: {budget_text}: {status}{reached}")
    if split:
        unit = split.get("unit", "samples")
        text = (
            f"held-out split: {split.get('heldout')} of {split.get('samples')} {unit} held out, "
            f"{split.get('fit')} used to estimate (seed {split.get('seed')})"
        )
        if "heldout_tokens" in split:
            text += f"; {split['fit_tokens']:,} / {split['heldout_tokens']:,} tokens"
        if split.get("available", split.get("samples")) != split.get("samples"):
            text += f" (the first {split['samples']} of {split['available']} {unit} read; --max-samples)"
        lines.append(text)
        if split.get("rule"):
            lines.append(f"  rule: {split['rule']}")
    pipeline = d.get("pipeline") or {}
    if pipeline:
        parts = []
        for k, v in pipeline.items():
            if isinstance(v, (list, tuple)) and k.startswith("feedback"):
                parts.append(f"{k.replace('_', ' ')}: {len(v)} tensor{'s' if len(v) != 1 else ''}")
            elif isinstance(v, (list, tuple)):
                parts.append(
                    f"{k.replace('_', ' ')}: {', '.join(f'{x:g}' if isinstance(x, float) else str(x) for x in v)}"
                )
            else:
                parts.append(f"{k.replace('_', ' ')}: {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')}: {v}")
        lines.append("pipeline: " + "; ".join(parts))
    if heldout:
        lines.append("held-out fidelity of the file: " + ", ".join(f"{k} {_fmt_metric(v)}" for k, v in heldout.items()))

    points = d.get("points") or []
    chosen = _chosen_index(d)
    if points:
        names = list(dict.fromkeys(k for p in points for k in (p.get("metrics") or {})))
        if metric in names:
            names.remove(metric)
            names.insert(0, metric)
        head = f"{'':2}{'#':>3} {'bits/param':>10} {'file bytes':>12} " + " ".join(f"{n:>12}" for n in names)
        head += f" {'seconds':>8}  setting"
        lines += ["", f"points tried ({len(points)}):", head, "-" * len(head)]
        for i, p in enumerate(points):
            ms = p.get("metrics") or {}
            mark = "*" if i == chosen else " "
            row = (
                f"{mark:2}{i:>3} {p.get('bits_per_param', float('nan')):>10.4f} {p.get('file_bytes', 0):>12,} "
                + " ".join(f"{_fmt_metric(ms[n]) if n in ms else '':>12}" for n in names)
                + f" {p.get('seconds', 0.0):>8.2f}  {_fmt_setting(p.get('setting'))}"
            )
            lines.append(row)
        if chosen is not None:
            c = points[chosen]
            text = (
                f"chosen: point {chosen}, {c.get('bits_per_param', float('nan')):.4f} bits/param "
                f"({c.get('file_bytes', 0):,} bytes)"
            )
            if c.get("standard_error") and metric in (c.get("metrics") or {}):
                text += (
                    f"; {metric} {_fmt_metric(c['metrics'][metric])} ± {c['standard_error']:.2g} (standard error "
                    "of the held-out mean: the budget is met with this margin)"
                )
            lines.append(text)
        else:
            lines.append("chosen: none of the points meets the budget")

    tensors = d.get("tensors") or []
    if tensors:
        shown = tensors if max_tensors is None else tensors[:max_tensors]
        head = f"{'tensor':<48} {'bits':>12} {'bits/param':>10} {'step':>10} {'method':<9} {'sparsity':>8}"
        lines += ["", "per tensor:", head, "-" * len(head)]
        for t in shown:
            step = t.get("step")
            sparsity = t.get("sparsity")
            lines.append(
                f"{_short(str(t.get('name', '')), 48):<48} {round(t.get('bits', 0)):>12,} "
                f"{t.get('bits_per_param', 0.0):>10.3f} {'' if step is None else format(step, '.4g'):>10} "
                f"{t.get('method') or ''!s:<9} {'' if sparsity is None else format(sparsity, '.3f'):>8}"
            )
        if len(shown) < len(tensors):
            lines.append(f"... {len(tensors) - len(shown)} more tensors (--verbose lists them all)")

    times = d.get("times") or {}
    if times:
        lines += ["", "times: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items() if isinstance(v, (int, float)))]
    return "\n".join(lines)


# ---------------------------------------------------------------- the plot


def check_plot_available() -> None:
    """ImportError with a clear message when matplotlib is missing (checked before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib (pip install matplotlib)") from None


def write_plot(d: Mapping, path: str) -> str:
    """The rate-fidelity curve of a budget run as a PNG: every point tried (bits/param against the
    budget metric on the held-out samples), the chosen point marked, the budget as a line."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metric, budget_text = _budget_parts(d)
    points = [p for p in d.get("points") or [] if metric in (p.get("metrics") or {})]
    if not points:
        raise ValueError(f"--plot: no point tried has a value of the budget metric {metric!r}")
    order = sorted(range(len(points)), key=lambda i: points[i].get("bits_per_param", 0.0))
    xs = [points[i]["bits_per_param"] for i in order]
    ys = [points[i]["metrics"][metric] for i in order]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        ax.plot(xs, ys, "o-", color="tab:blue", label="points tried")
        chosen = _chosen_index(d)
        all_points = d.get("points") or []
        if chosen is not None and metric in (all_points[chosen].get("metrics") or {}):
            c = all_points[chosen]
            ax.plot([c["bits_per_param"]], [c["metrics"][metric]], "*", ms=16, color="tab:red", label="chosen")
        b = d.get("budget")
        value = b.get("value") if isinstance(b, Mapping) else None
        if value is None and isinstance(b, str):
            try:
                value = float(b.replace(">=", "=").replace("<=", "=").partition("=")[2])
            except ValueError:
                value = None
        if value is not None:
            ax.axhline(value, color="tab:gray", ls="--", label=f"budget: {budget_text}")
        ax.set_xlabel("bits per parameter (whole file)")
        ax.set_ylabel(f"{metric} (held-out)")
        ax.set_title(os.path.basename(str(d.get("path", ""))) or "rate-fidelity")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        import io

        from .container import write_bytes_atomic

        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        write_bytes_atomic(path, buf.getvalue())
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------- the command


_CODEC_OPTIONS = (
    "method",
    "step",
    "qp",
    "rel_step",
    "size_exponent",
    "spread",
    "lam_scale",
    "lossless_roles",
    "block_elements",
    "threads",
    "plan",
)
_TASK_OPTIONS = ("budget", "kind", "heldout", "seed", "plot", "text_field", "max_samples", "max_length", "batch_size")


def calibration_options_without_data(a) -> list[str]:
    """The budget-run options given without --calibration (each an error)."""
    return ["--" + k.replace("_", "-") for k in _TASK_OPTIONS if getattr(a, k, None) is not None]


def _json_default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def run_compress(a, config_from_args: Callable[[Any], Any]) -> int:
    """``nnpress compress SOURCE DEST --calibration DATA --budget METRIC=VALUE ...``: checks every
    input before the search (budget, plot dependency, destination folder, calibration data, the
    metric for the model's kind), runs the search, prints the report."""
    from .calibration import CalibrationError, parse_budget
    from .sources import load_task

    if a.budget is None:
        raise CalibrationError("--calibration needs --budget METRIC=VALUE (e.g. cos_mean=0.999, kl=0.01)")
    budget = parse_budget(a.budget)
    if a.plot:
        check_plot_available()
    folder = os.path.dirname(os.path.abspath(a.dest))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"destination folder does not exist: {folder!r}")
    if not os.path.exists(a.calibration):
        raise FileNotFoundError(f"no such calibration file: {a.calibration!r}")
    show = getattr(a, "progress", False) or (not a.quiet and sys.stderr.isatty())
    bar = StageProgress(show)
    bar("loading", 0, 1)
    task_kw = {
        k: getattr(a, k)
        for k in ("kind", "heldout", "seed", "max_samples", "max_length", "batch_size", "text_field")
        if getattr(a, k, None) is not None
    }
    task = load_task(a.source, a.calibration, **task_kw)
    task.check_budget(budget)
    bar("loading", 1, 1)
    given = [k for k in _CODEC_OPTIONS if getattr(a, k, None) is not None]
    config = config_from_args(a) if given else None
    from .budget import compress_to_budget

    search_kw = {} if a.prune is None else {"prune": a.prune}  # else the search's own default
    from .budget import BudgetError

    try:
        rep = compress_to_budget(task, a.dest, budget, config=config, seed=a.seed or 0, progress=bar, **search_kw)
    except BudgetError as e:
        # the points tried say how close the budget was: on stdout; the error line goes to stderr
        bar.close()
        failed = getattr(e, "report", None)
        if failed is not None:
            d = failed.to_dict()
            d.setdefault("source", task.source or a.source)
            d["error"] = str(e)
            _emit(a, d)
        raise
    finally:
        bar.close()
    d = rep.to_dict()
    d.setdefault("source", task.source or a.source)
    if a.plot:
        write_plot(d, a.plot)
    _emit(a, d)
    return 0 if d.get("met", True) else 1


def _emit(a, d: dict) -> None:
    """The report where the options send it: ``--json FILE`` / ``--json -`` (stdout) and, unless
    ``--quiet`` or JSON goes to stdout, the human report on stdout. A failed search's report (the
    points tried) goes the same ways, so a script reading ``--json`` sees why it failed."""
    text = json.dumps(d, indent=1, default=_json_default)
    if a.json not in (None, "-"):
        from .container import write_bytes_atomic

        write_bytes_atomic(a.json, (text + "\n").encode("utf-8"))
    if a.json == "-":
        print(text)
    elif not a.quiet:
        print(format_report(d, max_tensors=None if a.verbose else 30))
        if a.plot and d.get("met"):
            print(f"plot: {a.plot}")
    sys.stdout.flush()
