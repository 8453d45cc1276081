#!/usr/bin/env python
"""Build ``serket_pyro/data/mnist_subset.npz``, the small MNIST subset shipped in the package.

Takes the first 300 training images of each digit, in the official MNIST
order, and interleaves them cyclically so that row ``n`` has digit ``n % 10``
(row ``n`` is the ``n // 10``-th training image of digit ``n % 10``).  The
result is deterministic.

Arrays: ``images`` (3000, 784) uint8 (pixels 0-255, row-major 28x28) and
``category`` (3000,) int64.  Saved with ``np.savez_compressed``.

Usage::

    python scripts/build_mnist_subset.py [--mnist PATH/TO/mnist.npz] [--out PATH]

By default ``mnist.npz`` is looked for like the package loaders do (the
``SERKET_PYRO_DATA`` directory, then the user cache; ``--root`` adds a
directory searched first).  After writing, the script prints the array
digest to record as ``SUBSET_SHA256`` in
``serket_pyro/datasets/mnist.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

PER_DIGIT = 300
N_DIGITS = 10
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "serket_pyro" / "data" / "mnist_subset.npz"


def subset_indices(y_train: np.ndarray, per_digit: int = PER_DIGIT) -> np.ndarray:
    """Rows of the training set used by the subset, in subset order (cyclic 0..9)."""
    y = np.asarray(y_train)
    firsts = []
    for d in range(N_DIGITS):
        rows = np.flatnonzero(y == d)[:per_digit]
        if len(rows) < per_digit:
            raise ValueError(f"only {len(rows)} training images of digit {d}")
        firsts.append(rows)
    # (per_digit, 10) -> row-major flatten gives d0k0, d1k0, ..., d9k0, d0k1, ...
    return np.stack(firsts, axis=1).reshape(-1)


def build(x_train: np.ndarray, y_train: np.ndarray) -> dict[str, np.ndarray]:
    idx = subset_indices(y_train)
    images = np.ascontiguousarray(x_train[idx].reshape(len(idx), -1), dtype=np.uint8)
    category = np.asarray(y_train[idx], dtype=np.int64)
    assert np.array_equal(category, np.arange(len(idx)) % N_DIGITS)
    return {"images": images, "category": category}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", type=Path, help="path of mnist.npz (default: search like the loaders)")
    ap.add_argument("--root", type=Path, help="directory searched first for mnist.npz")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from serket_pyro.datasets import array_digest, find_data_file

    path = args.mnist or find_data_file("mnist.npz", args.root)
    if path is None:
        ap.error("mnist.npz not found: pass --mnist, --root, or set SERKET_PYRO_DATA")
    with np.load(path, allow_pickle=False) as z:
        arrays = build(z["x_train"], z["y_train"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(f"array digest: {array_digest(arrays)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
