"""MNIST in the official order (``mnist.npz``) and the 3,000-image subset shipped in the package.

LeCun, Cortes, Burges, "The MNIST database of handwritten digits" (CC BY-SA 3.0).  The full set
is read from ``mnist.npz`` (converted from the four IDX files); the subset
(``serket_pyro/data/mnist_subset.npz``, the first 300 training images of each digit, built by
``scripts/build_mnist_subset.py``) is a package resource and needs no download.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ._base import (
    DataFile,
    DatasetChecksumError,
    DatasetCorruptError,
    DatasetNotFoundError,
    Record,
    Source,
    array_digest,
    check_split,
    load_arrays,
    read_npz,
    register,
)

__all__ = ["MNISTData", "MNISTSubset", "load_mnist", "load_mnist_subset", "mnist_from_idx", "read_idx"]

FILENAME = "mnist.npz"

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

#: File names given in the data README; the hosts are INFERRED (the README names no host): the
#: PyTorch (torchvision) mirror, the TensorFlow mirror and the original site, which often
#: refuses scripted downloads today.
SOURCES = tuple(
    Source(
        name,
        (
            f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}",
            f"https://storage.googleapis.com/cvdf-datasets/mnist/{name}",
            f"http://yann.lecun.com/exdb/mnist/{name}",
        ),
    )
    for name in _IDX_FILES
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "x_train": ("|u1", (60000, 28, 28)),
    "y_train": ("<i8", (60000,)),
    "x_test": ("|u1", (10000, 28, 28)),
    "y_test": ("<i8", (10000,)),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "64acd6374965f4b098335ebe1d046f78ecaf1db9352118d9935c315175865271"

#: the embedded subset: package resource path (below ``serket_pyro``), layout and digest
SUBSET_RESOURCE = ("data", "mnist_subset.npz")
SUBSET_LAYOUT = {
    "images": ("|u1", (3000, 784)),
    "category": ("<i8", (3000,)),
}
SUBSET_SHA256 = "338c1ee642650f3f559ba371f92b2b2045f8531adc72ca485e3bb39b82dae25a"


@dataclass(frozen=True, eq=False)
class MNISTData(Record):
    """One split of MNIST in the official order.

    Attributes
    ----------
    images : ndarray, uint8
        Pixel intensities 0-255; shape (n, 784) (row-major flattened 28x28)
        when loaded with ``flatten=True``, else (n, 28, 28).  ``n`` is 60,000
        (train) or 10,000 (test).
    labels : ndarray, shape (n,), int64
        Digit 0-9.
    split : str
        ``"train"`` or ``"test"``.
    """

    images: np.ndarray
    labels: np.ndarray
    split: str

    def as_float(self) -> np.ndarray:
        """``images / 255`` as float32 in [0, 1], same shape as ``images``."""
        return self.images.astype(np.float32) / np.float32(255.0)


@dataclass(frozen=True, eq=False)
class MNISTSubset(Record):
    """The small MNIST subset shipped inside the package (see ``data/LICENSE-MNIST.txt``).

    Attributes
    ----------
    images : ndarray, shape (3000, 784), uint8
        The first 300 training images of each digit (official order), pixel
        intensities 0-255, row-major flattened 28x28.
    category : ndarray, shape (3000,), int64
        Digit of each row; rows are interleaved so that ``category[n] == n % 10``.
    """

    images: np.ndarray
    category: np.ndarray

    def as_float(self) -> np.ndarray:
        """``images / 255`` as float32 in [0, 1], shape (3000, 784)."""
        return self.images.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes | str | os.PathLike) -> np.ndarray:
    """Decode an IDX file (``bytes`` or a path; gzip-compressed or not) into an array.

    The result has the file's shape and a native-order dtype (uint8 for the
    MNIST files).
    """
    if not isinstance(data, (bytes, bytearray)):
        data = Path(data).read_bytes()
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DatasetCorruptError(f"corrupt gzip stream ({exc})") from exc
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise DatasetCorruptError("not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorruptError("truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DatasetCorruptError(
            f"IDX payload has {len(data) - header} bytes, expected {count * dtype.itemsize} for shape {shape}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def mnist_from_idx(train_images, train_labels, test_images, test_labels) -> dict[str, np.ndarray]:
    """Arrays of ``mnist.npz`` from the four IDX files (bytes or paths, gzip or not).

    Returns ``x_train`` (n, 28, 28) uint8, ``y_train`` (n,) int64, ``x_test``
    and ``y_test`` likewise.
    """
    out = {}
    for key, src in (("x_train", train_images), ("y_train", train_labels), ("x_test", test_images), ("y_test", test_labels)):
        a = read_idx(src)
        out[key] = a.astype(np.uint8) if key.startswith("x") else a.astype(np.int64)
    for split in ("train", "test"):
        if out[f"x_{split}"].ndim != 3 or out[f"y_{split}"].ndim != 1 or len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise DatasetCorruptError(f"MNIST {split} images and labels do not match")
    return out


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return mnist_from_idx(*(files[name] for name in _IDX_FILES))


FILE = register(DataFile(FILENAME, "MNIST", LAYOUT, SHA256, SOURCES, _convert))
SUBSET_FILE = register(DataFile("mnist_subset.npz", "embedded MNIST subset", SUBSET_LAYOUT, SUBSET_SHA256))


def load_mnist(
    split: str = "train",
    flatten: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> MNISTData:
    """One split of MNIST in the official order (``mnist.npz``).

    Returns an :class:`MNISTData`: ``images`` uint8 0-255, (n, 784) when
    ``flatten`` else (n, 28, 28); ``labels`` (n,) int64; ``split``.  ``n`` is
    60,000 (train) or 10,000 (test).
    """
    split = check_split(split)
    a = load_arrays(FILE, root, download)
    x = a[f"x_{split}"]
    if flatten:
        x = x.reshape(len(x), -1)
    return MNISTData(images=x, labels=a[f"y_{split}"], split=split)


def load_mnist_subset() -> MNISTSubset:
    """The 3,000-image MNIST subset embedded in the package (no download needed).

    Returns an :class:`MNISTSubset`: ``images`` (3000, 784) uint8 0-255 (the
    first 300 training images of each digit) and ``category`` (3000,) int64
    with ``category[n] == n % 10``.  Built by ``scripts/build_mnist_subset.py``.
    """
    from importlib.resources import as_file, files

    res = files("serket_pyro").joinpath(SUBSET_RESOURCE[0]).joinpath(SUBSET_RESOURCE[1])
    with as_file(res) as path:
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"The embedded MNIST subset {path} is missing from the installed package; "
                f"rebuild it with scripts/build_mnist_subset.py or reinstall serket_pyro."
            )
        a = read_npz(path, SUBSET_FILE)
    if array_digest(a) != SUBSET_FILE.sha256:
        raise DatasetChecksumError(f"The embedded MNIST subset {path} does not match its recorded SHA-256.")
    return MNISTSubset(images=a["images"], category=a["category"])
