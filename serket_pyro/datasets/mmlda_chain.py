"""The original Serket ``mMLDA2.py`` example: five MLDA modules in a chain (``serket_mmlda_chain.npz``).

50 documents in 10 categories, five count modalities of 10 bins each (every row sums to 1,000),
from naka-lab/Serket ``examples/mMLDA/`` (``data000.txt`` .. ``data004.txt`` and
``data_category.txt``).  In the original, MLDA1 models ``data000``, MLDA2 models MLDA1's message
together with ``data001``, and so on up to MLDA5.
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

__all__ = ["MMLDAChainData", "load_mmlda_chain", "mmlda_chain_from_texts"]

FILENAME = "serket_mmlda_chain.npz"

#: the five modalities, in chain order
MODALITIES = ("data000", "data001", "data002", "data003", "data004")

#: Given in the data README (naka-lab/Serket examples/mMLDA/).
SOURCES = tuple(
    Source(f"{name}.txt", (f"{SERKET_RAW}/mMLDA/{name}.txt",)) for name in MODALITIES + ("data_category",)
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {**{name: ("<i8", (50, 10)) for name in MODALITIES}, "category": ("<i8", (50,))}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "d8908cff086f9bbd71437e2c31caf76d8619014fef4e73b5eb91d8db216c27c7"


@dataclass(frozen=True, eq=False)
class MMLDAChainData(Record):
    """The five modalities and the categories of the original chained-MLDA example.

    Attributes
    ----------
    data000, data001, data002, data003, data004 : ndarray, shape (50, 10), int64
        Bag-of-words counts of each modality (10 words; every row sums to 1,000), in the order
        the chain consumes them.
    category : ndarray, shape (50,), int64
        Category 0-9 of each document (5 documents per category).
    """

    data000: np.ndarray
    data001: np.ndarray
    data002: np.ndarray
    data003: np.ndarray
    data004: np.ndarray
    category: np.ndarray

    def modalities(self) -> list[np.ndarray]:
        """The five count matrices in chain order."""
        return [getattr(self, name) for name in MODALITIES]


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


def mmlda_chain_from_texts(data: Mapping[str, str | bytes], category: str | bytes) -> dict[str, np.ndarray]:
    """Arrays of ``serket_mmlda_chain.npz`` from the original text files.

    ``data`` maps ``"data000"`` .. ``"data004"`` to the contents of those ``.txt`` files (one
    document per line, whitespace-separated counts); ``category`` is ``data_category.txt`` (one
    integer per line).  Returns the five (n, bins) int64 count matrices and ``category`` (n,) int64.
    """
    missing = sorted(set(MODALITIES) - set(data))
    if missing:
        raise DatasetCorruptError(f"mMLDA chain: missing modalities {missing}")
    out = {name: to_int64(loadtxt(data[name], f"{name}.txt"), f"{name}.txt") for name in MODALITIES}
    out["category"] = to_int64(loadtxt(category, "data_category.txt", ndmin=1).ravel(), "data_category.txt")
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        raise DatasetCorruptError(f"the mMLDA chain files disagree on the number of documents: {sorted(n)}")
    return out


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return mmlda_chain_from_texts(
        {name: files[f"{name}.txt"].read_text() for name in MODALITIES}, files["data_category.txt"].read_text()
    )


FILE = register(DataFile(FILENAME, "Serket mMLDA2 chained-MLDA example", LAYOUT, SHA256, SOURCES, _convert))


def load_mmlda_chain(root: str | os.PathLike | None = None, download: bool = True) -> MMLDAChainData:
    """The Serket chained-MLDA example (``serket_mmlda_chain.npz``).

    Returns an :class:`MMLDAChainData` with ``data000`` .. ``data004`` (50, 10) int64 counts
    and ``category`` (50,) int64.
    """
    return MMLDAChainData(**load_arrays(FILE, root, download))
