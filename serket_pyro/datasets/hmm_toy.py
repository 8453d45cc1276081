"""The original Serket HMM example (``serket_hmm_toy.npz``).

100 2-D points from 4 Gaussian classes visited cyclically, from naka-lab/Serket ``examples/HMM/``
(``data.txt`` and ``correct.txt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ._base import (
    SERKET_RAW,
    DataFile,
    DatasetCorruptError,
    Record,
    Source,
    load_arrays,
    loadtxt,
    register,
    to_int64,
)

__all__ = ["HMMToyData", "hmm_toy_from_texts", "load_hmm_toy"]

FILENAME = "serket_hmm_toy.npz"

#: INFERRED: the data README only names the folder naka-lab/Serket examples/HMM/; the file names
#: are those read by the original examples/HMM/hmm.py.
SOURCES = (
    Source("data.txt", (f"{SERKET_RAW}/HMM/data.txt",)),
    Source("correct.txt", (f"{SERKET_RAW}/HMM/correct.txt",)),
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "data": ("<f8", (100, 2)),
    "category": ("<i8", (100,)),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "c3664840947dedfa68421e921d41ec50051b6a9b897e666b6733e0900d1250c7"


@dataclass(frozen=True, eq=False)
class HMMToyData(Record):
    """The original Serket HMM example.

    Attributes
    ----------
    data : ndarray, shape (100, 2), float64
        2-D points (unitless) drawn from 4 Gaussians with means (0,0), (1,0),
        (1,1), (0,1) and standard deviation 0.2, visited cyclically.
    category : ndarray, shape (100,), int64
        True class 0-3 of each point; ``category[n] == n % 4``.
    """

    data: np.ndarray
    category: np.ndarray


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


def hmm_toy_from_texts(data: str | bytes, correct: str | bytes) -> dict[str, np.ndarray]:
    """Arrays of ``serket_hmm_toy.npz`` from the original ``data.txt`` and ``correct.txt``.

    Returns ``data`` (n, 2) float64 and ``category`` (n,) int64.
    """
    x = loadtxt(data, "data.txt")
    c = to_int64(loadtxt(correct, "correct.txt", ndmin=1).ravel(), "correct.txt")
    if len(x) != len(c):
        raise DatasetCorruptError(f"data.txt has {len(x)} rows but correct.txt {len(c)}")
    return {"data": x, "category": c}


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return hmm_toy_from_texts(files["data.txt"].read_text(), files["correct.txt"].read_text())


FILE = register(DataFile(FILENAME, "Serket HMM toy example", LAYOUT, SHA256, SOURCES, _convert))


def load_hmm_toy(root: str | os.PathLike | None = None, download: bool = True) -> HMMToyData:
    """The Serket HMM toy example (``serket_hmm_toy.npz``).

    Returns a :class:`HMMToyData` with ``data`` (100, 2) float64 and
    ``category`` (100,) int64 (``n % 4``).
    """
    a = load_arrays(FILE, root, download)
    return HMMToyData(data=a["data"], category=a["category"])
