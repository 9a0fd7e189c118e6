"""What ``nnpress.compress`` reports: one :class:`TensorReport` per tensor and a
:class:`CompressionReport` for the file (numpy-free, no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["CompressionReport", "TensorReport"]


@dataclass
class TensorReport:
    name: str
    shape: tuple
    dtype: str
    role: str
    storage: str  # "quantized" | "raw" | "alias"
    method: str | None
    step: float | None
    params: int
    original_bytes: int
    stored_bytes: int
    rel_error: float  # ||w - w_hat|| / ||w|| (0 for exact storage)
    alias_of: str | None = None

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.stored_bytes / self.params if self.params else 0.0


@dataclass
class CompressionReport:
    path: str
    tensors: list[TensorReport]
    file_bytes: int
    original_bytes: int
    params: int
    times: dict[str, float] = field(default_factory=dict)  # seconds per stage: load, quantize, encode, write, total
    config: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.file_bytes if self.file_bytes else float("inf")

    @property
    def bits_per_param(self) -> float:
        return 8.0 * self.file_bytes / self.params if self.params else 0.0

    @property
    def quantized_params(self) -> int:
        return sum(t.params for t in self.tensors if t.storage == "quantized")

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "file_bytes": self.file_bytes,
            "original_bytes": self.original_bytes,
            "params": self.params,
            "quantized_params": self.quantized_params,
            "ratio": self.ratio,
            "bits_per_param": self.bits_per_param,
            "times": dict(self.times),
            "config": self.config,
            "tensors": [dict(asdict(t), shape=list(t.shape), bits_per_param=t.bits_per_param) for t in self.tensors],
        }

    def table(self, max_rows: int | None = None) -> str:
        """Per-tensor table plus totals, as text."""
        head = (
            f"{'tensor':<44} {'shape':<16} {'dtype':<8} {'role':<9} {'stored':<9} {'bytes':>10} {'bits/p':>7} "
            f"{'rel.err':>8}"
        )
        lines = [head, "-" * len(head)]
        rows = self.tensors if max_rows is None else self.tensors[:max_rows]
        for t in rows:
            name = t.name if len(t.name) <= 44 else "…" + t.name[-43:]
            shape = "x".join(str(d) for d in t.shape) or "()"
            kind = t.method if t.storage == "quantized" else t.storage
            lines.append(
                f"{name:<44} {shape:<16} {t.dtype:<8} {t.role:<9} {kind:<9} {t.stored_bytes:>10,} "
                f"{t.bits_per_param:>7.3f} {t.rel_error:>8.2e}"
            )
        if max_rows is not None and len(self.tensors) > max_rows:
            lines.append(f"... {len(self.tensors) - max_rows} more tensors")
        lines.append("-" * len(head))
        lines.append(
            f"{len(self.tensors)} tensors, {self.params:,} parameters: {self.original_bytes:,} -> "
            f"{self.file_bytes:,} bytes, ratio {self.ratio:.2f}x, {self.bits_per_param:.3f} bits/param"
        )
        if self.times:
            lines.append("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in self.times.items()))
        return "\n".join(lines)

    def __str__(self) -> str:
        return (
            f"CompressionReport({self.path!r}: {self.original_bytes:,} -> {self.file_bytes:,} bytes, "
            f"{self.ratio:.2f}x, {self.bits_per_param:.3f} bits/param)"
        )
