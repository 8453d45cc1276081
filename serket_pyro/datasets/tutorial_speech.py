"""The Serket tutorial's 3,000 pairs re-created from raw speech: its images, our HAC.

The tutorial (``serket_tutorial.npz``) ships HAC histograms whose codebooks were never published,
so a graph trained on them cannot turn new speech into features.  Its utterances are known: row
``n`` (digit ``n % 10``) is UCI Spoken Arabic Digit training utterance ``(n % 10) * 660 + n // 10``
-- the first 300 utterances of each digit, speakers 0-29, ten repetitions each -- whose frame
counts ``T`` match the tutorial's per-block row sums ``T - 5`` and ``T - 2`` exactly.
:func:`load_tutorial_speech` gives the same rows with the raw MFCC frames instead of the
histograms, so that the speech observation of a tutorial system can be computed by this package
(:class:`~serket_pyro.modules.hac.HACFeatureExtractor`, whose codebooks are then saved with the
graph) and new speech recognised with them.

Please cite MNIST (LeCun, Cortes, Burges), UCI Spoken Arabic Digit (Hammami and Bedda 2008) and
Serket (Nakamura, Nagai, Taniguchi 2018).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .spoken_arabic_digit import load_spoken_arabic_digit
from .tutorial import load_tutorial

__all__ = ["TutorialSpeech", "load_tutorial_speech", "tutorial_utterance_rows"]

#: utterances of each digit in the UCI Spoken Arabic Digit train file (66 speakers x 10)
PER_DIGIT = 660


def tutorial_utterance_rows(n: int = 3000) -> np.ndarray:
    """UCI Spoken Arabic Digit train utterances of the tutorial's first ``n`` rows.

    Parameters
    ----------
    n : int, default 3000
        Rows (at most 6,600; beyond the tutorial's 3,000 the same rule continues, speakers 30+).

    Returns
    -------
    ndarray of int64, shape (n,)
        ``(r % 10) * 660 + r // 10`` for row ``r``.
    """
    if not 0 < int(n) <= 10 * PER_DIGIT:
        raise ValueError(f"tutorial_utterance_rows: n must be in 1..{10 * PER_DIGIT}, got {n}")
    r = np.arange(int(n), dtype=np.int64)
    return (r % 10) * PER_DIGIT + r // 10


class TutorialSpeech(NamedTuple):
    """The tutorial's pairs with raw speech (unpacks as ``images, utterances, category, speaker, rows``).

    Attributes
    ----------
    images : ndarray, shape (3000, 784), float32
        The tutorial's images (pixel / 255), row for row.
    utterances : list of ndarray, each (T_i, 13) float32
        The MFCC frames of the utterance of every row.
    category : ndarray of int64, shape (3000,)
        Digit ``n % 10`` (both modalities).
    speaker : ndarray of int64, shape (3000,)
        UCI speaker of each utterance (0-29).
    rows : ndarray of int64, shape (3000,)
        UCI train utterance of each row (:func:`tutorial_utterance_rows`).
    """

    images: np.ndarray
    utterances: list
    category: np.ndarray
    speaker: np.ndarray
    rows: np.ndarray


def load_tutorial_speech(root=None, download: bool = True, check: bool = True) -> TutorialSpeech:
    """The Serket tutorial's 3,000 pairs with each row's raw MFCC frames (see the module docstring).

    Parameters
    ----------
    root : str or os.PathLike, optional
        Folder of ``serket_tutorial.npz`` and ``spoken_arabic_digit.npz`` (default: the search
        order of :mod:`serket_pyro.datasets`).
    download : bool, default True
        Fetch missing files (see :mod:`serket_pyro.datasets`).
    check : bool, default True
        Verify the row -> utterance map: every tutorial row's HAC block sums must be the
        utterance's ``T - 5`` / ``T - 2``.

    Returns
    -------
    TutorialSpeech

    Raises
    ------
    ValueError
        When ``check`` finds a row whose histogram does not fit its utterance's length.
    """
    tut = load_tutorial(root, download)
    sad = load_spoken_arabic_digit("train", root, download)
    rows = tutorial_utterance_rows(len(tut.category))
    T = sad.lengths[rows]
    if check:
        sums = tut.hac.reshape(len(rows), 6, 400).sum(2)  # 3 streams x lags (5, 2)
        want = np.stack([T - 5, T - 2] * 3, axis=1)
        bad = np.flatnonzero((sums != want).any(1))
        if bad.size or not np.array_equal(sad.digit[rows], tut.category):
            raise ValueError(f"load_tutorial_speech: tutorial rows {bad[:5].tolist()} do not fit the utterances "
                             "(T - lag per HAC block); the data files differ from the published ones")
    utt = sad.utterances()
    return TutorialSpeech(images=tut.images, utterances=[utt[i] for i in rows], category=tut.category,
                          speaker=sad.speaker[rows].astype(np.int64), rows=rows)
