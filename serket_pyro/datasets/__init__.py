"""Loaders for the real data sets used by the tutorials, tests and benchmarks.

Every data set lives in one NumPy ``.npz`` file.  A file is looked for, in this
order, in

1. the directory given as ``root=`` to the loader,
2. the directory named by the ``SERKET_PYRO_DATA`` environment variable,
3. the user cache folder, ``$XDG_CACHE_HOME/serket_pyro`` (or
   ``~/.cache/serket_pyro`` when ``XDG_CACHE_HOME`` is unset).

A file that is found is checked cheaply (array names, dtypes and shapes) and a
corrupt or truncated file raises :class:`DatasetCorruptError` naming it.

When the file is found nowhere and ``download=True`` the public original is
fetched with :mod:`urllib` (with a ``tqdm`` progress bar), converted to the
same ``.npz`` layout, checked against the SHA-256 digest of the converted
arrays recorded in this module (:data:`ARRAY_SHA256`, see
:func:`array_digest`), and only then written, atomically, into the cache
folder.  A digest mismatch raises :class:`DatasetChecksumError` and caches
nothing.  Without network access a :class:`DatasetNotFoundError` says which
file is missing, where it was looked for and how to provide it.

The conversion steps (text / idx / zip / wav -> arrays) are separate public
functions so that they can be tested on small hand-made inputs:
:func:`tutorial_from_texts`, :func:`tutorial_from_zip`,
:func:`hmm_toy_from_texts`, :func:`objects_from_texts`,
:func:`parse_arabic_digit_blocks`, :func:`arabic_digit_from_texts`,
:func:`read_idx`, :func:`mnist_from_idx`, :func:`read_wav_int16`,
:func:`fsdd_from_wavs` and :func:`fsdd_from_zip`.

Please cite MNIST (LeCun, Cortes, Burges), UCI Spoken Arabic Digit (Hammami
and Bedda 2008), the Free Spoken Digit Dataset (Jakobovski et al.) and Serket
(Nakamura, Nagai, Taniguchi, Frontiers in Neurorobotics 12:25, 2018) wherever
results on these data are reported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "ENV_VAR",
    "ARRAY_SHA256",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetCorruptError",
    "DatasetChecksumError",
    "TutorialData",
    "HMMToyData",
    "ObjectsData",
    "SpokenArabicDigitData",
    "FSDDData",
    "MNISTData",
    "MNISTSubset",
    "load_tutorial",
    "load_hmm_toy",
    "load_objects",
    "load_spoken_arabic_digit",
    "load_fsdd",
    "load_mnist",
    "load_mnist_subset",
    "split_by_lengths",
    "cache_dir",
    "search_locations",
    "find_data_file",
    "array_digest",
    "tutorial_from_texts",
    "tutorial_from_zip",
    "hmm_toy_from_texts",
    "objects_from_texts",
    "parse_arabic_digit_blocks",
    "arabic_digit_from_texts",
    "read_idx",
    "mnist_from_idx",
    "read_wav_int16",
    "fsdd_from_wavs",
    "fsdd_from_zip",
]

#: Environment variable naming a directory that holds the ``.npz`` files.
ENV_VAR = "SERKET_PYRO_DATA"

_SUBSET_RESOURCE = ("data", "mnist_subset.npz")

# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


class DatasetError(Exception):
    """Base class of every error raised by this module."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data file is in none of the searched places and could not be fetched."""


class DatasetCorruptError(DatasetError, ValueError):
    """A data file (or a downloaded original) is truncated, corrupt or malformed."""


class DatasetChecksumError(DatasetCorruptError):
    """Arrays converted from a download do not match the recorded SHA-256 digest."""


# --------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a set of named arrays, independent of the ``.npz`` container.

    The digest covers, for every array in sorted name order, the name, the
    dtype (``dtype.str``, little-endian), the shape and the C-ordered bytes.
    It therefore does not depend on zip compression, timestamps or member
    order, only on the array contents.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        h.update(name.encode("utf-8") + b"\0")
        h.update(a.dtype.str.encode("ascii") + b"\0")
        h.update(repr(tuple(int(s) for s in a.shape)).encode("ascii") + b"\0")
        h.update(a.tobytes(order="C"))
        h.update(b"\0")
    return h.hexdigest()


#: SHA-256 of the converted arrays of each file (see :func:`array_digest`),
#: computed from the reference files of the project's shared data directory.
ARRAY_SHA256: dict[str, str] = {
    "serket_tutorial.npz": "5f469e796710b7f19a040e0bb3e7346ffe57d7d11ad78eeaedc2fc4e391007f7",
    "serket_hmm_toy.npz": "c3664840947dedfa68421e921d41ec50051b6a9b897e666b6733e0900d1250c7",
    "serket_objects.npz": "24cc8d2989a572990a88764b98837816d2490cc3035b75776b7a12e2e24a9e42",
    "spoken_arabic_digit.npz": "3d747367c48a3ef4b92cfc1854854b5b76b7416645b6531e193044f901b16cc7",
    "fsdd.npz": "2e08b62e9a155343aaf71d094aac518bbccfccaa64362dcb9df7582dee86a395",
    "mnist.npz": "64acd6374965f4b098335ebe1d046f78ecaf1db9352118d9935c315175865271",
    "mnist_subset.npz": "338c1ee642650f3f559ba371f92b2b2045f8531adc72ca485e3bb39b82dae25a",
}

# --------------------------------------------------------------------------
# upstream sources
# --------------------------------------------------------------------------

_SERKET_RAW = "https://github.com/naka-lab/Serket/raw/master/examples"


@dataclass(frozen=True)
class _Source:
    """One upstream file: local name it is saved under and candidate URLs, tried in order."""

    local_name: str
    urls: tuple[str, ...]


_SOURCES: dict[str, tuple[_Source, ...]] = {
    # Given in the data README.  The second URL (the same archive in the
    # VAE+GMM+MLDA+MM example folder) is INFERRED.
    "serket_tutorial.npz": (
        _Source(
            "data.zip",
            (
                f"{_SERKET_RAW}/VAE%2BGMM%2BMLDA/data.zip",
                f"{_SERKET_RAW}/VAE%2BGMM%2BMLDA%2BMM/data.zip",  # INFERRED
            ),
        ),
    ),
    # INFERRED: the README only names the folder naka-lab/Serket examples/HMM/;
    # file names are those read by the original examples/HMM/hmm.py.
    "serket_hmm_toy.npz": (
        _Source("data.txt", (f"{_SERKET_RAW}/HMM/data.txt",)),
        _Source("correct.txt", (f"{_SERKET_RAW}/HMM/correct.txt",)),
    ),
    # INFERRED: the README only names the folder naka-lab/Serket examples/mMLDA/;
    # file names are those read by the original examples/mMLDA/mMLDA.py (some
    # revisions of the repository capitalise the category files, tried second).
    "serket_objects.npz": (
        _Source("dsift.txt", (f"{_SERKET_RAW}/mMLDA/dsift.txt",)),
        _Source("mfcc.txt", (f"{_SERKET_RAW}/mMLDA/mfcc.txt",)),
        _Source("tactile.txt", (f"{_SERKET_RAW}/mMLDA/tactile.txt",)),
        _Source("angle.txt", (f"{_SERKET_RAW}/mMLDA/angle.txt",)),
        _Source(
            "object_category.txt",
            (
                f"{_SERKET_RAW}/mMLDA/object_category.txt",
                f"{_SERKET_RAW}/mMLDA/Object_Category.txt",
            ),
        ),
        _Source(
            "motion_category.txt",
            (
                f"{_SERKET_RAW}/mMLDA/motion_category.txt",
                f"{_SERKET_RAW}/mMLDA/Motion_Category.txt",
            ),
        ),
    ),
    # Given in the data README (UCI repository, folder 00195).
    "spoken_arabic_digit.npz": (
        _Source(
            "Train_Arabic_Digit.txt",
            (
                "https://archive.ics.uci.edu/ml/machine-learning-databases/"
                "00195/Train_Arabic_Digit.txt",
            ),
        ),
        _Source(
            "Test_Arabic_Digit.txt",
            (
                "https://archive.ics.uci.edu/ml/machine-learning-databases/"
                "00195/Test_Arabic_Digit.txt",
            ),
        ),
    ),
    # INFERRED: the README names the GitHub repository only.  v1.0.10 is the
    # release with 6 speakers x 10 digits x 50 takes; master is the fallback.
    "fsdd.npz": (
        _Source(
            "fsdd.zip",
            (
                "https://github.com/Jakobovski/free-spoken-digit-dataset/"
                "archive/refs/tags/v1.0.10.zip",
                "https://github.com/Jakobovski/free-spoken-digit-dataset/"
                "archive/refs/heads/master.zip",
            ),
        ),
    ),
    # File names given in the README; the hosts are INFERRED (the README
    # names no host): the PyTorch (torchvision) mirror, the TensorFlow mirror
    # and the original site, which often refuses scripted downloads today.
    "mnist.npz": tuple(
        _Source(
            name,
            (
                f"https://ossci-datasets.s3.amazonaws.com/mnist/{name}",
                f"https://storage.googleapis.com/cvdf-datasets/mnist/{name}",
                f"http://yann.lecun.com/exdb/mnist/{name}",
            ),
        )
        for name in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    ),
}

#: Expected arrays of each file: name -> (dtype string, shape).
_LAYOUTS: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {
    "serket_tutorial.npz": {
        "images": ("|u1", (3000, 784)),
        "hac": ("|u1", (3000, 2400)),
        "category": ("<i8", (3000,)),
    },
    "serket_hmm_toy.npz": {
        "data": ("<f8", (100, 2)),
        "category": ("<i8", (100,)),
    },
    "serket_objects.npz": {
        "dsift": ("<f8", (50, 500)),
        "mfcc": ("<f8", (50, 50)),
        "tactile": ("<f8", (50, 15)),
        "angle": ("<f8", (50, 70)),
        "object_category": ("<i8", (50,)),
        "motion_category": ("<i8", (50,)),
    },
    "spoken_arabic_digit.npz": {
        "train_frames": ("<f4", (263256, 13)),
        "train_lengths": ("<i8", (6600,)),
        "train_digit": ("<i8", (6600,)),
        "train_speaker": ("<i8", (6600,)),
        "test_frames": ("<f4", (87063, 13)),
        "test_lengths": ("<i8", (2200,)),
        "test_digit": ("<i8", (2200,)),
        "test_speaker": ("<i8", (2200,)),
    },
    "fsdd.npz": {
        "audio": ("<i2", (10498424,)),
        "lengths": ("<i8", (3000,)),
        "digit": ("<i8", (3000,)),
        "speaker": ("<i8", (3000,)),
        "take": ("<i8", (3000,)),
        "speaker_names": ("<U8", (6,)),
        "sample_rate": ("<i8", ()),
    },
    "mnist.npz": {
        "x_train": ("|u1", (60000, 28, 28)),
        "y_train": ("<i8", (60000,)),
        "x_test": ("|u1", (10000, 28, 28)),
        "y_test": ("<i8", (10000,)),
    },
    "mnist_subset.npz": {
        "images": ("|u1", (3000, 784)),
        "category": ("<i8", (3000,)),
    },
}

_DESCRIPTIONS = {
    "serket_tutorial.npz": "Serket tutorial MNIST images + spoken-digit HAC features",
    "serket_hmm_toy.npz": "Serket HMM toy example",
    "serket_objects.npz": "Serket mMLDA multimodal objects example",
    "spoken_arabic_digit.npz": "UCI Spoken Arabic Digit",
    "fsdd.npz": "Free Spoken Digit Dataset",
    "mnist.npz": "MNIST",
    "mnist_subset.npz": "embedded MNIST subset",
}

# --------------------------------------------------------------------------
# result records
# --------------------------------------------------------------------------


class _Record:
    """Read-only, dict-like access to the fields of a data record."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def as_dict(self) -> dict:
        """The fields as a plain ``dict``."""
        return {k: getattr(self, k) for k in self.keys()}


@dataclass(frozen=True, eq=False)
class TutorialData(_Record):
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


@dataclass(frozen=True, eq=False)
class HMMToyData(_Record):
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


@dataclass(frozen=True, eq=False)
class ObjectsData(_Record):
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


def split_by_lengths(flat: np.ndarray, lengths: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Split ``flat`` along axis 0 into consecutive pieces of the given lengths.

    Returns a list of ``len(lengths)`` views; piece ``i`` has ``lengths[i]``
    rows.  Raises ``ValueError`` when the lengths do not add up to ``len(flat)``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError("lengths must be a 1-D array of non-negative integers")
    if int(lengths.sum()) != len(flat):
        raise ValueError(f"lengths add up to {int(lengths.sum())} but the array has {len(flat)} rows")
    if len(lengths) == 0:
        return []
    return np.split(flat, np.cumsum(lengths)[:-1])


@dataclass(frozen=True, eq=False)
class SpokenArabicDigitData(_Record):
    """One split of UCI Spoken Arabic Digit.

    Attributes
    ----------
    frames : ndarray, shape (n_frames, 13), float32
        13 MFCC coefficients per frame (frames of 11,025 Hz audio, unitless
        cepstral coefficients), all utterances concatenated.  ``n_frames`` is
        263,256 (train) or 87,063 (test).
    lengths : ndarray, shape (n_utterances,), int64
        Number of frames of each utterance (6,600 train, 2,200 test);
        utterance ``i`` is the next ``lengths[i]`` rows of ``frames``.
    digit : ndarray, shape (n_utterances,), int64
        Spoken digit 0-9 (in blocks: 660 / 220 utterances per digit).
    speaker : ndarray, shape (n_utterances,), int64
        Speaker, numbered from 0 within the split (66 train, 22 test); the
        first half of the speakers are male, the second half female.
    split : str
        ``"train"`` or ``"test"``.
    """

    frames: np.ndarray
    lengths: np.ndarray
    digit: np.ndarray
    speaker: np.ndarray
    split: str

    @property
    def offsets(self) -> np.ndarray:
        """Start row of each utterance in ``frames``, shape (n_utterances,), int64."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def utterances(self) -> list[np.ndarray]:
        """The utterances as a list of ``(lengths[i], 13)`` float32 views of ``frames``."""
        return split_by_lengths(self.frames, self.lengths)


@dataclass(frozen=True, eq=False)
class FSDDData(_Record):
    """Free Spoken Digit Dataset: 3,000 English recordings, 8 kHz mono.

    Recordings are in the sorted order of their file names
    (``<digit>_<speaker>_<take>.wav``).

    Attributes
    ----------
    audio : ndarray, shape (10498424,), int16
        All recordings concatenated, 16-bit PCM samples at ``sample_rate`` Hz
        (full scale +-32768).
    lengths : ndarray, shape (3000,), int64
        Samples in each recording; recording ``i`` is the next ``lengths[i]``
        samples of ``audio``.
    digit : ndarray, shape (3000,), int64
        Spoken digit 0-9.
    speaker : ndarray, shape (3000,), int64
        Index 0-5 into ``speaker_names``.
    take : ndarray, shape (3000,), int64
        Take 0-49; the official test split is ``take < 5``.
    speaker_names : tuple of 6 str
        Speaker names, alphabetical.
    sample_rate : int
        Sampling rate in Hz (8000).
    """

    audio: np.ndarray
    lengths: np.ndarray
    digit: np.ndarray
    speaker: np.ndarray
    take: np.ndarray
    speaker_names: tuple
    sample_rate: int

    @property
    def offsets(self) -> np.ndarray:
        """Start sample of each recording in ``audio``, shape (3000,), int64."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def is_test(self) -> np.ndarray:
        """Official test split mask ``take < 5``, shape (3000,), bool."""
        return self.take < 5

    def recordings(self) -> list[np.ndarray]:
        """The recordings as a list of 1-D int16 views of ``audio``."""
        return split_by_lengths(self.audio, self.lengths)


@dataclass(frozen=True, eq=False)
class MNISTData(_Record):
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
class MNISTSubset(_Record):
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
# locating files
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/serket_pyro`` or ``~/.cache/serket_pyro``."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "serket_pyro"


def search_locations(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The directories searched for data files, in order, as ``(label, path)`` pairs."""
    locs: list[tuple[str, Path]] = []
    if root is not None:
        locs.append(("root= argument", Path(root).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        locs.append((f"{ENV_VAR} environment variable", Path(env).expanduser()))
    locs.append(("user cache folder", cache_dir()))
    return locs


def find_data_file(filename: str, root: str | os.PathLike | None = None) -> Path | None:
    """Path of ``filename`` in the first searched directory that has it, else ``None``."""
    for _, d in search_locations(root):
        p = d / filename
        if p.is_file():
            return p
    return None


def _how_to_provide(filename: str) -> str:
    return (
        f"To provide it, either set the {ENV_VAR} environment variable to a directory "
        f"containing {filename}, or pass root=<that directory> to the loader, or place "
        f"the file in the cache folder {cache_dir()} (the loaders download it there "
        f"themselves when called with download=True and the network is reachable)."
    )


def _not_found_message(filename: str, root, reason: str) -> str:
    lines = [f"Data file {filename!r} ({_DESCRIPTIONS[filename]}) was not found. Looked in:"]
    for label, d in search_locations(root):
        lines.append(f"  - {d / filename}  ({label})")
    if not os.environ.get(ENV_VAR):
        lines.append(f"  ({ENV_VAR} is not set)")
    lines.append(reason)
    lines.append(_how_to_provide(filename))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# reading and checking .npz files
# --------------------------------------------------------------------------


def _check_layout(filename: str, arrays: Mapping[str, np.ndarray], where: str) -> None:
    layout = _LAYOUTS[filename]
    missing = sorted(set(layout) - set(arrays))
    extra = sorted(set(arrays) - set(layout))
    if missing or extra:
        raise DatasetCorruptError(
            f"{where}: expected arrays {sorted(layout)}, missing {missing}, unexpected {extra}"
        )
    for name, (dtype, shape) in layout.items():
        a = arrays[name]
        if a.dtype.str != dtype or tuple(a.shape) != shape:
            raise DatasetCorruptError(
                f"{where}: array {name!r} has dtype {a.dtype.str} shape {tuple(a.shape)}, "
                f"expected dtype {dtype} shape {shape}"
            )


def _read_npz(path: Path, filename: str) -> dict[str, np.ndarray]:
    """Load every array of ``path`` and check names, dtypes and shapes."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            arrays = {k: z[k] for k in z.files}
    except DatasetError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError, OSError ...
        raise DatasetCorruptError(
            f"Data file {path} is corrupt or truncated ({type(exc).__name__}: {exc}). "
            f"Delete it and provide a good copy. " + _how_to_provide(filename)
        ) from exc
    try:
        _check_layout(filename, arrays, f"Data file {path} is corrupt or not the expected file")
    except DatasetCorruptError as exc:
        raise DatasetCorruptError(f"{exc}. Delete it and provide a good copy. " + _how_to_provide(filename)) from None
    return arrays


def _load_arrays(filename: str, root, download: bool) -> dict[str, np.ndarray]:
    path = find_data_file(filename, root)
    if path is None:
        if not download:
            raise DatasetNotFoundError(
                _not_found_message(filename, root, "Downloading is disabled (download=False).")
            )
        path = _download_and_convert(filename, root)
    return _read_npz(path, filename)


# --------------------------------------------------------------------------
# downloading
# --------------------------------------------------------------------------


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _download(url: str, dest: str | os.PathLike, desc: str | None = None) -> None:
    """Fetch ``url`` into ``dest`` with a progress bar; atomic (temp file + ``os.replace``).

    Raises ``urllib.error.URLError`` / ``OSError`` on network failure.
    """
    dest = Path(dest)
    req = urllib.request.Request(url, headers={"User-Agent": "serket_pyro-datasets"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name)
            except ImportError:  # pragma: no cover
                bar = None
            try:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and out.tell() != total:
                raise urllib.error.URLError(f"incomplete download: {out.tell()} of {total} bytes")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fetch_sources(filename: str, root, workdir: Path) -> dict[str, Path]:
    got: dict[str, Path] = {}
    for src in _SOURCES[filename]:
        dest = workdir / src.local_name
        errors = []
        for url in src.urls:
            try:
                _download(url, dest, desc=src.local_name)
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
                errors.append(f"    {url}: {type(exc).__name__}: {exc}")
        else:
            reason = (
                "Downloading the public original failed (no network access?):\n"
                + "\n".join(errors)
            )
            raise DatasetNotFoundError(_not_found_message(filename, root, reason))
        got[src.local_name] = dest
    return got


def _convert(filename: str, files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    if filename == "serket_tutorial.npz":
        return tutorial_from_zip(files["data.zip"])
    if filename == "serket_hmm_toy.npz":
        return hmm_toy_from_texts(files["data.txt"].read_text(), files["correct.txt"].read_text())
    if filename == "serket_objects.npz":
        return objects_from_texts(
            **{k: files[f"{k}.txt"].read_text() for k in _LAYOUTS[filename]}
        )
    if filename == "spoken_arabic_digit.npz":
        return arabic_digit_from_texts(
            files["Train_Arabic_Digit.txt"].read_text(), files["Test_Arabic_Digit.txt"].read_text()
        )
    if filename == "fsdd.npz":
        return fsdd_from_zip(files["fsdd.zip"])
    if filename == "mnist.npz":
        return mnist_from_idx(
            files["train-images-idx3-ubyte.gz"],
            files["train-labels-idx1-ubyte.gz"],
            files["t10k-images-idx3-ubyte.gz"],
            files["t10k-labels-idx1-ubyte.gz"],
        )
    raise KeyError(filename)  # pragma: no cover


def _download_and_convert(filename: str, root) -> Path:
    """Fetch, convert, verify the digest, then atomically write into the cache folder."""
    with tempfile.TemporaryDirectory(prefix="serket_pyro_dl_") as tmp:
        files = _fetch_sources(filename, root, Path(tmp))
        try:
            arrays = _convert(filename, files)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetCorruptError(
                f"Could not convert the downloaded original of {filename!r} "
                f"({type(exc).__name__}: {exc}); nothing was cached. " + _how_to_provide(filename)
            ) from exc
    _check_layout(filename, arrays, f"Converted download of {filename!r}")
    digest = array_digest(arrays)
    expected = ARRAY_SHA256[filename]
    if digest != expected:
        raise DatasetChecksumError(
            f"The arrays converted from the downloaded original of {filename!r} have SHA-256 "
            f"{digest}, expected {expected}: the upstream files changed or the download is "
            f"corrupt. Nothing was cached. " + _how_to_provide(filename)
        )
    dest_dir = cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    fd, tmpname = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmpname, _umask_mode())
        os.replace(tmpname, dest)
    except BaseException:
        try:
            os.unlink(tmpname)
        except OSError:
            pass
        raise
    return dest


# --------------------------------------------------------------------------
# conversion functions (upstream formats -> arrays)
# --------------------------------------------------------------------------


def _as_text(x: str | bytes) -> str:
    return x.decode("utf-8") if isinstance(x, (bytes, bytearray)) else x


def _loadtxt(text: str | bytes, what: str, ndmin: int = 2) -> np.ndarray:
    try:
        return np.loadtxt(io.StringIO(_as_text(text)), dtype=np.float64, ndmin=ndmin)
    except ValueError as exc:
        raise DatasetCorruptError(f"{what}: cannot parse numbers ({exc})") from exc


def _to_int64(x: np.ndarray, what: str) -> np.ndarray:
    r = np.rint(x)
    if not np.all(np.abs(x - r) < 1e-6):
        raise DatasetCorruptError(f"{what}: expected integer values")
    return r.astype(np.int64)


def tutorial_from_texts(data1: str | bytes, data2: str | bytes, category: str | bytes) -> dict[str, np.ndarray]:
    """Arrays of ``serket_tutorial.npz`` from the text files of the original ``data.zip``.

    ``data1`` holds one image per line, ``pixel / 255`` as whitespace-separated
    floats; ``data2`` the HAC counts; ``category`` one digit per line.  Returns
    ``images`` (n, d1) uint8 (``round(255 * data1)``), ``hac`` (n, d2) uint8 and
    ``category`` (n,) int64.
    """
    x1 = _loadtxt(data1, "data1.txt")
    x2 = _loadtxt(data2, "data2.txt")
    cat = _loadtxt(category, "category.txt", ndmin=1).ravel()
    if not (len(x1) == len(x2) == len(cat)):
        raise DatasetCorruptError(
            f"data1.txt, data2.txt and category.txt have {len(x1)}, {len(x2)} and {len(cat)} rows"
        )
    scaled = x1 * 255.0
    images = np.rint(scaled)
    if np.any(np.abs(scaled - images) > 1e-3) or images.min(initial=0) < 0 or images.max(initial=0) > 255:
        raise DatasetCorruptError("data1.txt: values are not pixel/255 with pixels in 0..255")
    hac = _to_int64(x2, "data2.txt")
    if hac.min(initial=0) < 0 or hac.max(initial=0) > 255:
        raise DatasetCorruptError("data2.txt: counts outside 0..255")
    return {
        "images": images.astype(np.uint8),
        "hac": hac.astype(np.uint8),
        "category": _to_int64(cat, "category.txt"),
    }


def _zip_member(zf: zipfile.ZipFile, basename: str) -> str:
    names = [
        n
        for n in zf.namelist()
        if n.rsplit("/", 1)[-1] == basename and not n.startswith("__MACOSX")
    ]
    if not names:
        raise DatasetCorruptError(f"the archive has no member named {basename!r}")
    return min(names, key=len)


def tutorial_from_zip(path_or_file) -> dict[str, np.ndarray]:
    """Arrays of ``serket_tutorial.npz`` from the original ``data.zip`` (path or file object).

    The archive must contain ``data1.txt``, ``data2.txt`` and ``category.txt``
    (at any depth); see :func:`tutorial_from_texts`.
    """
    with zipfile.ZipFile(path_or_file) as zf:
        texts = [zf.read(_zip_member(zf, n)) for n in ("data1.txt", "data2.txt", "category.txt")]
    return tutorial_from_texts(*texts)


def hmm_toy_from_texts(data: str | bytes, correct: str | bytes) -> dict[str, np.ndarray]:
    """Arrays of ``serket_hmm_toy.npz`` from the original ``data.txt`` and ``correct.txt``.

    Returns ``data`` (n, 2) float64 and ``category`` (n,) int64.
    """
    x = _loadtxt(data, "data.txt")
    c = _to_int64(_loadtxt(correct, "correct.txt", ndmin=1).ravel(), "correct.txt")
    if len(x) != len(c):
        raise DatasetCorruptError(f"data.txt has {len(x)} rows but correct.txt {len(c)}")
    return {"data": x, "category": c}


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
        "dsift": _loadtxt(dsift, "dsift.txt"),
        "mfcc": _loadtxt(mfcc, "mfcc.txt"),
        "tactile": _loadtxt(tactile, "tactile.txt"),
        "angle": _loadtxt(angle, "angle.txt"),
        "object_category": _to_int64(_loadtxt(object_category, "object_category.txt", 1).ravel(), "object_category.txt"),
        "motion_category": _to_int64(_loadtxt(motion_category, "motion_category.txt", 1).ravel(), "motion_category.txt"),
    }
    n = {len(v) for v in out.values()}
    if len(n) != 1:
        raise DatasetCorruptError(f"the mMLDA files disagree on the number of objects: {sorted(n)}")
    return out


def parse_arabic_digit_blocks(text: str | bytes, n_coeffs: int = 13) -> list[np.ndarray]:
    """Parse a UCI Spoken Arabic Digit file into a list of (frames, n_coeffs) float32 blocks.

    Blocks are runs of non-blank lines (each line one frame of ``n_coeffs``
    whitespace-separated numbers) separated by blank or whitespace-only lines.
    """
    lines = _as_text(text).splitlines()
    lengths: list[int] = []
    values: list[str] = []
    run = 0
    for i, line in enumerate(lines):
        tok = line.split()
        if not tok:
            if run:
                lengths.append(run)
                run = 0
            continue
        if len(tok) != n_coeffs:
            raise DatasetCorruptError(f"line {i + 1}: expected {n_coeffs} numbers, got {len(tok)}")
        values.extend(tok)
        run += 1
    if run:
        lengths.append(run)
    try:
        flat = np.array(values, dtype=np.float64).astype(np.float32).reshape(-1, n_coeffs)
    except ValueError as exc:
        raise DatasetCorruptError(f"cannot parse numbers ({exc})") from exc
    return split_by_lengths(flat, lengths)


def arabic_digit_from_texts(
    train: str | bytes, test: str | bytes, n_digits: int = 10, repetitions: int = 10
) -> dict[str, np.ndarray]:
    """Arrays of ``spoken_arabic_digit.npz`` from ``Train_Arabic_Digit.txt`` and ``Test_Arabic_Digit.txt``.

    Each file holds ``n_digits`` equal runs of blocks, digits in order 0, 1,
    ...; within a digit each speaker's ``repetitions`` blocks are consecutive,
    speakers in the same order for every digit.  Returns, for ``p`` in
    ``("train", "test")``: ``p_frames`` (frames, 13) float32, ``p_lengths``,
    ``p_digit`` and ``p_speaker`` (utterances,) int64.
    """
    out: dict[str, np.ndarray] = {}
    for prefix, text in (("train", train), ("test", test)):
        blocks = parse_arabic_digit_blocks(text)
        n = len(blocks)
        if n == 0 or n % (n_digits * repetitions):
            raise DatasetCorruptError(
                f"{prefix} file: {n} blocks is not a multiple of {n_digits} digits x {repetitions} repetitions"
            )
        per_digit = n // n_digits
        idx = np.arange(n, dtype=np.int64)
        out[f"{prefix}_frames"] = np.concatenate(blocks, axis=0).astype(np.float32)
        out[f"{prefix}_lengths"] = np.array([len(b) for b in blocks], dtype=np.int64)
        out[f"{prefix}_digit"] = idx // per_digit
        out[f"{prefix}_speaker"] = (idx % per_digit) // repetitions
    return out


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


def read_wav_int16(data: bytes) -> tuple[int, np.ndarray]:
    """Decode a mono 16-bit PCM RIFF/WAVE file into ``(sample_rate, samples int16)``."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DatasetCorruptError("not a RIFF/WAVE file")
    pos = 12
    fmt = None
    samples = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise DatasetCorruptError("truncated fmt chunk")
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            body = body[: len(body) - len(body) % 2]
            samples = np.frombuffer(body, dtype="<i2").astype(np.int16)
            break
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise DatasetCorruptError("WAVE file without fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag not in (1, 0xFFFE) or channels != 1 or bits != 16:
        raise DatasetCorruptError(f"unsupported WAVE format (tag {tag}, {channels} channels, {bits} bits)")
    return int(rate), samples


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def fsdd_from_wavs(wavs: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """Arrays of ``fsdd.npz`` from ``{file name: wav bytes}`` (names ``<digit>_<speaker>_<take>.wav``).

    Recordings are ordered by sorted file name; speakers are numbered in
    alphabetical order of their names.  All files must share one sample rate.
    """
    names = sorted(wavs)
    if not names:
        raise DatasetCorruptError("no recordings")
    parsed = []
    for n in names:
        m = _FSDD_NAME.match(n)
        if not m:
            raise DatasetCorruptError(f"unexpected recording name {n!r}")
        parsed.append((int(m.group(1)), m.group(2), int(m.group(3))))
    speakers = sorted({p[1] for p in parsed})
    rates = set()
    chunks = []
    for n in names:
        rate, x = read_wav_int16(wavs[n])
        rates.add(rate)
        chunks.append(x)
    if len(rates) != 1:
        raise DatasetCorruptError(f"recordings have different sample rates {sorted(rates)}")
    return {
        "audio": np.concatenate(chunks).astype(np.int16),
        "lengths": np.array([len(c) for c in chunks], dtype=np.int64),
        "digit": np.array([p[0] for p in parsed], dtype=np.int64),
        "speaker": np.array([speakers.index(p[1]) for p in parsed], dtype=np.int64),
        "take": np.array([p[2] for p in parsed], dtype=np.int64),
        "speaker_names": np.array(speakers, dtype=str),
        "sample_rate": np.array(rates.pop(), dtype=np.int64),
    }


def fsdd_from_zip(path_or_file) -> dict[str, np.ndarray]:
    """Arrays of ``fsdd.npz`` from a GitHub archive of the FSDD repository (path or file object).

    Uses every ``recordings/*.wav`` member; see :func:`fsdd_from_wavs`.
    """
    wavs: dict[str, bytes] = {}
    with zipfile.ZipFile(path_or_file) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")
            if len(parts) >= 2 and parts[-2] == "recordings" and parts[-1].endswith(".wav"):
                if parts[-1] in wavs:
                    raise DatasetCorruptError(f"duplicate recording {parts[-1]!r} in the archive")
                wavs[parts[-1]] = zf.read(info)
    return fsdd_from_wavs(wavs)


# --------------------------------------------------------------------------
# public loaders
# --------------------------------------------------------------------------


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_tutorial(root: str | os.PathLike | None = None, download: bool = True) -> TutorialData:
    """The 3,000 image / speech pairs of the Serket tutorials (``serket_tutorial.npz``).

    Returns a :class:`TutorialData` with ``images`` (3000, 784) float32 in
    [0, 1] (pixel / 255), ``hac`` (3000, 2400) float64 counts and ``category``
    (3000,) int64 with ``category[n] == n % 10``.
    """
    a = _load_arrays("serket_tutorial.npz", root, download)
    return TutorialData(
        images=a["images"].astype(np.float32) / np.float32(255.0),
        hac=a["hac"].astype(np.float64),
        category=a["category"],
    )


def load_hmm_toy(root: str | os.PathLike | None = None, download: bool = True) -> HMMToyData:
    """The Serket HMM toy example (``serket_hmm_toy.npz``).

    Returns a :class:`HMMToyData` with ``data`` (100, 2) float64 and
    ``category`` (100,) int64 (``n % 4``).
    """
    a = _load_arrays("serket_hmm_toy.npz", root, download)
    return HMMToyData(data=a["data"], category=a["category"])


def load_objects(root: str | os.PathLike | None = None, download: bool = True) -> ObjectsData:
    """The Serket mMLDA multimodal objects example (``serket_objects.npz``).

    Returns an :class:`ObjectsData` with histograms ``dsift`` (50, 500),
    ``mfcc`` (50, 50), ``tactile`` (50, 15), ``angle`` (50, 70) float64 and
    ``object_category``, ``motion_category`` (50,) int64.
    """
    a = _load_arrays("serket_objects.npz", root, download)
    return ObjectsData(**a)


def load_spoken_arabic_digit(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True
) -> SpokenArabicDigitData:
    """One split of UCI Spoken Arabic Digit (``spoken_arabic_digit.npz``).

    Returns a :class:`SpokenArabicDigitData`: ``frames`` (n_frames, 13)
    float32 MFCCs, ``lengths``, ``digit``, ``speaker`` (n_utterances,) int64
    and ``split``; ``.utterances()`` gives the per-utterance arrays.
    Train: 6,600 utterances / 263,256 frames / 66 speakers; test: 2,200 /
    87,063 / 22.
    """
    split = _check_split(split)
    a = _load_arrays("spoken_arabic_digit.npz", root, download)
    return SpokenArabicDigitData(
        frames=a[f"{split}_frames"],
        lengths=a[f"{split}_lengths"],
        digit=a[f"{split}_digit"],
        speaker=a[f"{split}_speaker"],
        split=split,
    )


def load_fsdd(root: str | os.PathLike | None = None, download: bool = True) -> FSDDData:
    """The Free Spoken Digit Dataset (``fsdd.npz``).

    Returns an :class:`FSDDData`: ``audio`` (10498424,) int16 at 8 kHz,
    ``lengths``, ``digit``, ``speaker``, ``take`` (3000,) int64,
    ``speaker_names`` (tuple of 6 str) and ``sample_rate`` (int, Hz);
    ``.recordings()`` gives the per-recording arrays, ``.is_test`` the
    official test split (``take < 5``).
    """
    a = _load_arrays("fsdd.npz", root, download)
    return FSDDData(
        audio=a["audio"],
        lengths=a["lengths"],
        digit=a["digit"],
        speaker=a["speaker"],
        take=a["take"],
        speaker_names=tuple(str(s) for s in a["speaker_names"]),
        sample_rate=int(a["sample_rate"]),
    )


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
    split = _check_split(split)
    a = _load_arrays("mnist.npz", root, download)
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

    res = files("serket_pyro").joinpath(_SUBSET_RESOURCE[0]).joinpath(_SUBSET_RESOURCE[1])
    with as_file(res) as path:
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"The embedded MNIST subset {path} is missing from the installed package; "
                f"rebuild it with scripts/build_mnist_subset.py or reinstall serket_pyro."
            )
        a = _read_npz(path, "mnist_subset.npz")
    if array_digest(a) != ARRAY_SHA256["mnist_subset.npz"]:
        raise DatasetChecksumError(f"The embedded MNIST subset {path} does not match its recorded SHA-256.")
    return MNISTSubset(images=a["images"], category=a["category"])
