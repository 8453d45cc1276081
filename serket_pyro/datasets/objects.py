"""The original Serket mMLDA example: 50 real objects observed by a robot (``serket_objects.npz``).

Visual (dense SIFT), auditory (MFCC), haptic and joint-angle bag-of-features histograms with
object and motion categories, from naka-lab/Serket ``examples/mMLDA/``.
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

__all__ = ["ObjectsData", "load_objects", "objects_from_texts"]

FILENAME = "serket_objects.npz"

#: INFERRED: the data README only names the folder naka-lab/Serket examples/mMLDA/; the file
#: names are those read by the original examples/mMLDA/mMLDA.py (some revisions of the
#: repository capitalise the category files, tried second).
SOURCES = (
    Source("dsift.txt", (f"{SERKET_RAW}/mMLDA/dsift.txt",)),
    Source("mfcc.txt", (f"{SERKET_RAW}/mMLDA/mfcc.txt",)),
    Source("tactile.txt", (f"{SERKET_RAW}/mMLDA/tactile.txt",)),
    Source("angle.txt", (f"{SERKET_RAW}/mMLDA/angle.txt",)),
    Source(
        "object_category.txt",
        (
            f"{SERKET_RAW}/mMLDA/object_category.txt",
            f"{SERKET_RAW}/mMLDA/Object_Category.txt",
        ),
    ),
    Source(
        "motion_category.txt",
        (
            f"{SERKET_RAW}/mMLDA/motion_category.txt",
            f"{SERKET_RAW}/mMLDA/Motion_Category.txt",
        ),
    ),
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "dsift": ("<f8", (50, 500)),
    "mfcc": ("<f8", (50, 50)),
    "tactile": ("<f8", (50, 15)),
    "angle": ("<f8", (50, 70)),
    "object_category": ("<i8", (50,)),
    "motion_category": ("<i8", (50,)),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "24cc8d2989a572990a88764b98837816d2490cc3035b75776b7a12e2e24a9e42"


@dataclass(frozen=True, eq=False)
class ObjectsData(Record):
    """The original Serket mMLDA example: 50 real objects observed by a robot.

    Attributes
    ----------
    dsift : ndarray, shape (50, 500), float64
        Visual bag-of-features histogram (dense SIFT, 500 codewords), counts.
    mfcc : ndarray, shape (50, 50), float64
        Auditory bag-of-features histogram (MFCC, 50 codewords), counts (a
        few non-integer values as in the original file).
    tactile : ndarray, shape (50, 15), float64
        Haptic histogram (15 bins), counts.
    angle : ndarray, shape (50, 70), float64
        Joint-angle (motion) histogram (70 bins), counts.
    object_category : ndarray, shape (50,), int64
        Object category 0-9.
    motion_category : ndarray, shape (50,), int64
        Motion category 0-9.
    """

    dsift: np.ndarray
    mfcc: np.ndarray
    tactile: np.ndarray
    angle: np.ndarray
    object_category: np.ndarray
    motion_category: np.ndarray


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


def objects_from_texts(
    dsift: str | bytes,
    mfcc: str | bytes,
    tactile: str | bytes,
    angle: str | bytes,
    object_category: str | bytes,
    motion_category: str | bytes,
) -> dict[str, np.ndarray]:
    """Arrays of ``serket_objects.npz`` from the original mMLDA text files.

    The four histograms are returned as (n, bins) float64, the two category
    files as (n,) int64.
    """
    out = {
        "dsift": loadtxt(dsift, "dsift.txt"),
        "mfcc": loadtxt(mfcc, "mfcc.txt"),
        "tactile": loadtxt(tactile, "tactile.txt"),
        "angle": loadtxt(angle, "angle.txt"),
        "object_category": to_int64(loadtxt(object_category, "object_category.txt", 1).ravel(), "object_category.txt"),
        "motion_category": to_int64(loadtxt(motion_category, "motion_category.txt", 1).ravel(), "motion_category.txt"),
    }
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        raise DatasetCorruptError(f"the mMLDA files disagree on the number of objects: {sorted(n)}")
    return out


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return objects_from_texts(**{k: files[f"{k}.txt"].read_text() for k in LAYOUT})


FILE = register(DataFile(FILENAME, "Serket mMLDA multimodal objects example", LAYOUT, SHA256, SOURCES, _convert))


def load_objects(root: str | os.PathLike | None = None, download: bool = True) -> ObjectsData:
    """The Serket mMLDA multimodal objects example (``serket_objects.npz``).

    Returns an :class:`ObjectsData` with histograms ``dsift`` (50, 500),
    ``mfcc`` (50, 50), ``tactile`` (50, 15), ``angle`` (50, 70) float64 and
    ``object_category``, ``motion_category`` (50,) int64.
    """
    a = load_arrays(FILE, root, download)
    return ObjectsData(**a)
