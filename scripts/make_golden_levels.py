"""Writes the frozen level streams in tests/golden/ (format version 1).

Run only when the level-stream format changes on purpose (new version): the test
tests/python/test_codec.py::test_golden_streams checks that today's encoder reproduces these
bytes exactly and today's decoder reads them.  python scripts/make_golden_levels.py
"""
from pathlib import Path

import numpy as np

import nnpress

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def golden_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261129)
    sparse = rng.laplace(0, 1.5, (64, 48)).round().astype(np.int32)
    sparse[rng.random(sparse.shape) < 0.7] = 0
    return {
        "empty": np.zeros((0, 3), np.int32),
        "scalar": np.array(-7, np.int32),
        "extremes": np.array([[np.iinfo(np.int32).min, np.iinfo(np.int32).max, 0, 1, -1]], np.int32),
        "laplace_conv": rng.laplace(0, 4.0, (16, 8, 3, 3)).round().astype(np.int32),
        "sparse_fc": sparse,
        "wide": rng.laplace(0, 3000.0, (257,)).round().astype(np.int32),
    }


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, arr in golden_arrays().items():
        np.save(GOLDEN / f"levels_{name}.npy", arr)
        (GOLDEN / f"levels_{name}.npl").write_bytes(nnpress.encode_levels(arr))


if __name__ == "__main__":
    main()
