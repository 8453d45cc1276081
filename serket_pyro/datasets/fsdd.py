"""Free Spoken Digit Dataset (``fsdd.npz``).

3,000 English recordings of the digits 0-9, 6 speakers x 10 digits x 50 takes, 8 kHz mono 16-bit
PCM, from Jakobovski/free-spoken-digit-dataset (CC BY-SA 4.0).
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ._base import (
    DataFile,
    DatasetCorruptError,
    Record,
    Source,
    load_arrays,
    register,
    split_by_lengths,
)

__all__ = ["FSDDData", "fsdd_from_wavs", "fsdd_from_zip", "load_fsdd", "read_wav_int16"]

FILENAME = "fsdd.npz"

_REPO = "https://github.com/Jakobovski/free-spoken-digit-dataset"

#: INFERRED: the data README names the GitHub repository only.  v1.0.10 is the release with
#: 6 speakers x 10 digits x 50 takes; master is the fallback.
SOURCES = (
    Source(
        "fsdd.zip",
        (
            f"{_REPO}/archive/refs/tags/v1.0.10.zip",
            f"{_REPO}/archive/refs/heads/master.zip",
        ),
    ),
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "audio": ("<i2", (10498424,)),
    "lengths": ("<i8", (3000,)),
    "digit": ("<i8", (3000,)),
    "speaker": ("<i8", (3000,)),
    "take": ("<i8", (3000,)),
    "speaker_names": ("<U8", (6,)),
    "sample_rate": ("<i8", ()),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "2e08b62e9a155343aaf71d094aac518bbccfccaa64362dcb9df7582dee86a395"


@dataclass(frozen=True, eq=False)
class FSDDData(Record):
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


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


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


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return fsdd_from_zip(files["fsdd.zip"])


FILE = register(DataFile(FILENAME, "Free Spoken Digit Dataset", LAYOUT, SHA256, SOURCES, _convert))


def load_fsdd(root: str | os.PathLike | None = None, download: bool = True) -> FSDDData:
    """The Free Spoken Digit Dataset (``fsdd.npz``).

    Returns an :class:`FSDDData`: ``audio`` (10498424,) int16 at 8 kHz,
    ``lengths``, ``digit``, ``speaker``, ``take`` (3000,) int64,
    ``speaker_names`` (tuple of 6 str) and ``sample_rate`` (int, Hz);
    ``.recordings()`` gives the per-recording arrays, ``.is_test`` the
    official test split (``take < 5``).
    """
    a = load_arrays(FILE, root, download)
    return FSDDData(
        audio=a["audio"],
        lengths=a["lengths"],
        digit=a["digit"],
        speaker=a["speaker"],
        take=a["take"],
        speaker_names=tuple(str(s) for s in a["speaker_names"]),
        sample_rate=int(a["sample_rate"]),
    )
