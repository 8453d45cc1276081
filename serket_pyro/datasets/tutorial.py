"""The 3,000 image / speech pairs of the original Serket tutorials (``serket_tutorial.npz``).

The exact data of naka-lab/Serket ``examples/VAE+GMM+MLDA/data.zip`` (Nakamura, Nagai, Taniguchi
2018): MNIST training images (CC BY-SA 3.0) paired with histogram-of-acoustic-co-occurrence
features of UCI Spoken Arabic Digit utterances (CC BY 4.0); row ``n`` has digit ``n % 10``.
The file stores ``images`` as uint8 pixels and ``hac`` as uint8 counts; :func:`load_tutorial`
returns the original's floats.
"""

from __future__ import annotations

import os
import zipfile
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
    zip_member,
)

__all__ = ["TutorialData", "load_tutorial", "tutorial_from_texts", "tutorial_from_zip"]

FILENAME = "serket_tutorial.npz"

#: Given in the data README.  The second URL (the same archive in the VAE+GMM+MLDA+MM example
#: folder) is INFERRED.
SOURCES = (
    Source(
        "data.zip",
        (
            f"{SERKET_RAW}/VAE%2BGMM%2BMLDA/data.zip",
            f"{SERKET_RAW}/VAE%2BGMM%2BMLDA%2BMM/data.zip",  # INFERRED
        ),
    ),
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "images": ("|u1", (3000, 784)),
    "hac": ("|u1", (3000, 2400)),
    "category": ("<i8", (3000,)),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "5f469e796710b7f19a040e0bb3e7346ffe57d7d11ad78eeaedc2fc4e391007f7"


@dataclass(frozen=True, eq=False)
class TutorialData(Record):
    """The 3,000 image / speech pairs of the original Serket tutorials.

    Attributes
    ----------
    images : ndarray, shape (3000, 784), float32
        MNIST training images, 28x28 pixels flattened row-major, intensity
        ``pixel / 255`` in [0, 1] (the values of the original ``data1.txt``).
    hac : ndarray, shape (3000, 2400), float64
        Histogram-of-acoustic-co-occurrence counts (non-negative integers) of
        UCI Spoken Arabic Digit utterances: 3 MFCC streams x 2 lags x 20 x 20
        codewords (the original ``data2.txt``).
    category : ndarray, shape (3000,), int64
        The digit 0-9 of both modalities; ``category[n] == n % 10`` (the rows
        are in the cyclic order the Markov-model tutorials need).
    """

    images: np.ndarray
    hac: np.ndarray
    category: np.ndarray


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


def tutorial_from_texts(data1: str | bytes, data2: str | bytes, category: str | bytes) -> dict[str, np.ndarray]:
    """Arrays of ``serket_tutorial.npz`` from the text files of the original ``data.zip``.

    ``data1`` holds one image per line, ``pixel / 255`` as whitespace-separated
    floats; ``data2`` the HAC counts; ``category`` one digit per line.  Returns
    ``images`` (n, d1) uint8 (``round(255 * data1)``), ``hac`` (n, d2) uint8 and
    ``category`` (n,) int64.
    """
    x1 = loadtxt(data1, "data1.txt")
    x2 = loadtxt(data2, "data2.txt")
    cat = loadtxt(category, "category.txt", ndmin=1).ravel()
    if not (len(x1) == len(x2) == len(cat)):
        raise DatasetCorruptError(
            f"data1.txt, data2.txt and category.txt have {len(x1)}, {len(x2)} and {len(cat)} rows"
        )
    scaled = x1 * 255.0
    images = np.rint(scaled)
    if np.any(np.abs(scaled - images) > 1e-3) or images.min(initial=0) < 0 or images.max(initial=0) > 255:
        raise DatasetCorruptError("data1.txt: values are not pixel/255 with pixels in 0..255")
    hac = to_int64(x2, "data2.txt")
    if hac.min(initial=0) < 0 or hac.max(initial=0) > 255:
        raise DatasetCorruptError("data2.txt: counts outside 0..255")
    return {
        "images": images.astype(np.uint8),
        "hac": hac.astype(np.uint8),
        "category": to_int64(cat, "category.txt"),
    }


def tutorial_from_zip(path_or_file) -> dict[str, np.ndarray]:
    """Arrays of ``serket_tutorial.npz`` from the original ``data.zip`` (path or file object).

    The archive must contain ``data1.txt``, ``data2.txt`` and ``category.txt``
    (at any depth); see :func:`tutorial_from_texts`.
    """
    with zipfile.ZipFile(path_or_file) as zf:
        texts = [zf.read(zip_member(zf, n)) for n in ("data1.txt", "data2.txt", "category.txt")]
    return tutorial_from_texts(*texts)


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return tutorial_from_zip(files["data.zip"])


FILE = register(DataFile(FILENAME, "Serket tutorial MNIST images + spoken-digit HAC features",
                         LAYOUT, SHA256, SOURCES, _convert))


def load_tutorial(root: str | os.PathLike | None = None, download: bool = True) -> TutorialData:
    """The 3,000 image / speech pairs of the Serket tutorials (``serket_tutorial.npz``).

    Returns a :class:`TutorialData` with ``images`` (3000, 784) float32 in
    [0, 1] (pixel / 255), ``hac`` (3000, 2400) float64 counts and ``category``
    (3000,) int64 with ``category[n] == n % 10``.
    """
    a = load_arrays(FILE, root, download)
    return TutorialData(
        images=a["images"].astype(np.float32) / np.float32(255.0),
        hac=a["hac"].astype(np.float64),
        category=a["category"],
    )
