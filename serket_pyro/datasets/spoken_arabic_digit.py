"""UCI Spoken Arabic Digit, both splits (``spoken_arabic_digit.npz``).

13 MFCCs per frame of 8,800 utterances of the digits 0-9 by 88 speakers (66 train, 22 test),
UCI ML Repository data set 195 (Hammami and Bedda 2008), CC BY 4.0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ._base import (
    DataFile,
    DatasetCorruptError,
    Record,
    Source,
    as_text,
    check_split,
    load_arrays,
    register,
    split_by_lengths,
)

__all__ = ["SpokenArabicDigitData", "arabic_digit_from_texts", "load_spoken_arabic_digit", "parse_arabic_digit_blocks"]

FILENAME = "spoken_arabic_digit.npz"

_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/00195"

#: Given in the data README (UCI repository, folder 00195).
SOURCES = (
    Source("Train_Arabic_Digit.txt", (f"{_UCI}/Train_Arabic_Digit.txt",)),
    Source("Test_Arabic_Digit.txt", (f"{_UCI}/Test_Arabic_Digit.txt",)),
)

#: arrays of the file: name -> (dtype string, shape)
LAYOUT = {
    "train_frames": ("<f4", (263256, 13)),
    "train_lengths": ("<i8", (6600,)),
    "train_digit": ("<i8", (6600,)),
    "train_speaker": ("<i8", (6600,)),
    "test_frames": ("<f4", (87063, 13)),
    "test_lengths": ("<i8", (2200,)),
    "test_digit": ("<i8", (2200,)),
    "test_speaker": ("<i8", (2200,)),
}

#: SHA-256 of the arrays (:func:`~serket_pyro.datasets.array_digest`)
SHA256 = "3d747367c48a3ef4b92cfc1854854b5b76b7416645b6531e193044f901b16cc7"


@dataclass(frozen=True, eq=False)
class SpokenArabicDigitData(Record):
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


# --------------------------------------------------------------------------
# conversion from the upstream format
# --------------------------------------------------------------------------


def parse_arabic_digit_blocks(text: str | bytes, n_coeffs: int = 13) -> list[np.ndarray]:
    """Parse a UCI Spoken Arabic Digit file into a list of (frames, n_coeffs) float32 blocks.

    Blocks are runs of non-blank lines (each line one frame of ``n_coeffs``
    whitespace-separated numbers) separated by blank or whitespace-only lines.
    """
    lines = as_text(text).splitlines()
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


def _convert(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    return arabic_digit_from_texts(
        files["Train_Arabic_Digit.txt"].read_text(), files["Test_Arabic_Digit.txt"].read_text()
    )


FILE = register(DataFile(FILENAME, "UCI Spoken Arabic Digit", LAYOUT, SHA256, SOURCES, _convert))


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
    split = check_split(split)
    a = load_arrays(FILE, root, download)
    return SpokenArabicDigitData(
        frames=a[f"{split}_frames"],
        lengths=a[f"{split}_lengths"],
        digit=a[f"{split}_digit"],
        speaker=a[f"{split}_speaker"],
        split=split,
    )
