"""Paired image / speech data sets: MNIST images of digit ``d`` with spoken utterances of ``d``.

Builds the kind of data the Serket multimodal tutorials use (``serket_tutorial.npz``: MNIST images
paired with HAC histograms of UCI Spoken Arabic Digit utterances, rows in the cyclic order
``0, 1, ..., 9, 0, ...``) from the raw sources, with train / test splits whose speakers are
disjoint:

* :func:`build_sad_pairs`: MNIST (``mnist.npz``) + Spoken Arabic Digit MFCC sequences
  (``spoken_arabic_digit.npz``); the UCI train and test files already have disjoint speakers
  (66 / 22).  ``selection="first"`` with 3,000 cyclic training pairs takes exactly the
  utterances of the original tutorial (the first 300 of each digit, speakers 0-29).
* :func:`build_fsdd_pairs`: MNIST + Free Spoken Digit Dataset audio (``fsdd.npz``, English,
  6 speakers), MFCCs computed by :func:`serket_pyro.features.mfcc`; ``holdout="speaker"`` (default)
  keeps ``test_speakers`` out of training, ``holdout="take"`` is the official ``take < 5`` split
  (the same speakers on both sides -- not a speaker-independent test).  The MFCCs of every
  recording are mean-normalised (CMN, ``cmn=True``): the six speakers used different microphones.

The speech of both is turned into HAC features (:class:`~serket_pyro.features.HACExtractor`, the
tutorial's 3 streams = static MFCC, deltas, delta-deltas; lags 5 and 2; 20 codewords) whose
codebooks are learned on the *training* utterances only.  Images come from the MNIST training set
for training pairs and from the MNIST test set for test pairs.

Please cite MNIST (LeCun, Cortes, Burges), UCI Spoken Arabic Digit (Hammami and Bedda 2008), the
Free Spoken Digit Dataset (Jakobovski et al.) and Serket (Nakamura, Nagai, Taniguchi 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import load_fsdd, load_mnist, load_spoken_arabic_digit
from ..features import HACExtractor, mfcc

__all__ = [
    "SAD_TRAIN_SPEAKERS",
    "PairedData",
    "PairedSplits",
    "build_fsdd_pairs",
    "build_pairs",
    "build_sad_pairs",
    "fsdd_mfcc",
    "markov_order",
    "markov_order_transitions",
    "n_reused",
    "pair_indices",
]

#: speakers in the UCI Spoken Arabic Digit train file; test speakers are numbered after them
SAD_TRAIN_SPEAKERS = 66


class PairedData(NamedTuple):
    """One split of paired data (unpacks as ``images, hac, category, speaker``).

    Attributes:
        images: ``(N, 784)`` float32 pixels in [0, 1] (MNIST, row-major 28 x 28).
        hac: ``(N, n_bins)`` int64 HAC counts (2,400 bins with the tutorial settings).
        category: ``(N,)`` int64 digit shared by the image and the utterance of a row.
        speaker: ``(N,)`` int64 speaker of the utterance (global ids: SAD test speakers are
            ``66 + i``; FSDD ``0..5`` indexes ``speaker_names``).
    """

    images: np.ndarray
    hac: np.ndarray
    category: np.ndarray
    speaker: np.ndarray


class PairedSplits(NamedTuple):
    """``train`` and ``test`` :class:`PairedData` (disjoint speakers unless said otherwise), the
    fitted :class:`~serket_pyro.features.HACExtractor` and, per split, the source rows used:
    ``index = {"train": (image_rows, utterance_rows), "test": (...)}``, and how many pairs
    repeat an utterance used earlier in the same split, ``n_reused = {"train": int, "test": int}``
    (0 unless ``reuse=True`` was needed)."""

    train: PairedData
    test: PairedData
    extractor: HACExtractor
    index: dict
    n_reused: dict | None = None


def _check_order(order: str) -> str:
    if order not in ("cyclic", "random"):
        raise ValueError(f"order must be 'cyclic' or 'random', got {order!r}")
    return order


def pair_indices(labels: np.ndarray, n_pairs: int, order: str = "cyclic", selection: str = "random",
                 rng: np.random.Generator | None = None, n_classes: int = 10, reuse: bool = False) -> np.ndarray:
    """Rows of ``labels`` to take, ``n_pairs`` of them, ``n_pairs / n_classes`` per class.

    ``order="cyclic"``: row ``n`` of the result has label ``n % n_classes``; ``"random"``: the same
    balanced set shuffled (use the *same* class sequence for both modalities, see
    :func:`build_pairs`).  ``selection="random"``: each class's items in a random order (``rng``);
    ``"first"``: in their order in ``labels``.  Returns ``(n_pairs,)`` int64, in cyclic order.

    ``reuse``: a class with fewer items than needed cycles through its items again (an item then
    appears more than once: the pairs are no longer independent draws).  Default ``False``: such a
    request is refused with a ``ValueError`` that states how many items each class has.
    """
    labels = np.asarray(labels)
    if n_pairs % n_classes:
        raise ValueError(f"n_pairs={n_pairs} must be a multiple of the {n_classes} classes")
    if selection not in ("random", "first"):
        raise ValueError(f"selection must be 'random' or 'first', got {selection!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    per = n_pairs // n_classes
    available = np.bincount(labels[(labels >= 0) & (labels < n_classes)].astype(np.int64), minlength=n_classes)
    if (available == 0).any():
        raise ValueError(f"no item of class {int(np.flatnonzero(available == 0)[0])}")
    if not reuse and (available < per).any():
        short = {int(k): int(available[k]) for k in np.flatnonzero(available < per)}
        raise ValueError(f"{n_pairs} pairs need {per} items of each class, but classes {short} have fewer "
                         f"(class: items); ask for at most {n_classes * int(available.min())} pairs, "
                         "or pass reuse=True to use items more than once")
    cols = []
    for k in range(n_classes):  # loop over classes
        items = np.flatnonzero(labels == k)
        if selection == "random":
            items = rng.permutation(items)
        cols.append(np.resize(items, per))  # cycles when per > len(items) (reuse=True)
    return np.stack(cols, axis=1).reshape(-1).astype(np.int64)  # row n: class n % n_classes


def n_reused(rows: np.ndarray) -> int:
    """How many rows repeat an earlier row (0 when every item is used once)."""
    rows = np.asarray(rows)
    return int(rows.size - np.unique(rows).size)


def markov_order(category: np.ndarray, p_next: float = 0.7, n: int | None = None,
                 rng: np.random.Generator | None = None, n_classes: int = 10) -> np.ndarray:
    """Rows of ``category`` arranged as a partly ordered sequence, each row used at most once.

    The class sequence is a Markov chain: the next class is the cyclic successor ``(c + 1) % K``
    with probability ``p_next``, else a uniformly random class (the successor included), so the
    true transition matrix is :func:`markov_order_transitions`.  Items of each class are taken in
    a random order without replacement; the sequence stops at ``n`` rows or when the chain asks for
    a class whose items are used up.

    Args:
        category: ``(N,)`` labels in ``0..n_classes-1``.
        p_next: probability of the cyclic successor, in ``[0, 1]`` (1: cyclic; 0: random order).
        n: maximum length (default: as long as the items last).
    Returns:
        ``(T,)`` int64 row indices.
    """
    if not 0.0 <= float(p_next) <= 1.0:
        raise ValueError(f"p_next must be in [0, 1], got {p_next!r}")
    category = np.asarray(category).astype(np.int64)
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(category) if n is None else int(n)
    pools = [list(rng.permutation(np.flatnonzero(category == k))) for k in range(n_classes)]
    jump = rng.random(n) >= p_next
    random_class = rng.integers(n_classes, size=n)
    out, c = [], int(rng.integers(n_classes))
    for t in range(n):  # the chain is sequential by nature
        if t:
            c = int(random_class[t]) if jump[t] else (c + 1) % n_classes
        if not pools[c]:
            break
        out.append(pools[c].pop())
    return np.asarray(out, dtype=np.int64)


def markov_order_transitions(p_next: float = 0.7, n_classes: int = 10) -> np.ndarray:
    """The transition matrix of :func:`markov_order`: ``p_next`` on the cyclic successor plus
    ``(1 - p_next) / K`` everywhere; ``(K, K)`` rows = from, rows sum to 1."""
    return p_next * np.roll(np.eye(n_classes), 1, axis=1) + (1.0 - p_next) / n_classes


def build_pairs(image_labels, speech_labels, n_pairs: int, order: str = "cyclic", selection: str = "random",
                seed: int = 0, reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(image_rows, speech_rows)`` of ``n_pairs`` pairs whose labels agree.

    Cyclic: pair ``n`` has label ``n % 10``.  Random: the rows of the cyclic pairing permuted
    (both modalities by the same permutation, so the labels stay aligned).  ``reuse``: see
    :func:`pair_indices` (refused by default when a class has too few items).
    """
    _check_order(order)
    rng = np.random.default_rng(seed)
    img = pair_indices(image_labels, n_pairs, "cyclic", "random", rng, reuse=reuse)
    sp = pair_indices(speech_labels, n_pairs, "cyclic", selection, rng, reuse=reuse)
    if order == "random":
        perm = rng.permutation(n_pairs)
        img, sp = img[perm], sp[perm]
    return img, sp


def _split(images, image_labels, seqs, digit, speaker, n_pairs, order, selection, seed, extractor, reuse):
    img, sp = build_pairs(image_labels, digit, n_pairs, order, selection, seed, reuse)
    hac = extractor.transform([seqs[i] for i in sp])
    data = PairedData(images=images[img].astype(np.float32) / np.float32(255.0), hac=hac,
                      category=np.asarray(digit)[sp].astype(np.int64), speaker=np.asarray(speaker)[sp].astype(np.int64))
    return data, (img, sp)


def build_sad_pairs(n_train: int = 3000, n_test: int = 1000, *, order: str = "cyclic", selection: str = "first",
                    seed: int = 0, extractor: HACExtractor | None = None, fit_on: str = "pairs", root=None,
                    reuse: bool = False, **hac_options) -> PairedSplits:
    """MNIST + Spoken Arabic Digit pairs with HAC speech features.

    Args:
        n_train, n_test: pairs per split (multiples of 10; the test file has 220 utterances per
            digit, so more than 2,200 test pairs need ``reuse=True``).
        reuse: let a split use an utterance (or image) more than once when a digit has too few;
            default ``False`` refuses such sizes (:func:`pair_indices`).  ``n_reused`` reports it.
        order: ``"cyclic"`` (row n is digit n % 10) or ``"random"``.
        selection: training utterances ``"first"`` (in file order; 3,000 training pairs are then
            exactly the utterances of the Serket tutorial) or ``"random"``; test utterances are
            always a random choice (all 22 test speakers).
        seed: choice of images (and utterances with ``selection="random"``); test uses ``seed + 1``.
        extractor: an unfitted or fitted :class:`HACExtractor` (default: tutorial settings,
            ``HACExtractor(**hac_options)``); an unfitted one is fitted on the training utterances.
        fit_on: ``"pairs"`` (the training utterances that are paired) or ``"all"`` (every
            utterance of the UCI train file).
    Returns:
        :class:`PairedSplits`; speakers: train ``0..65``, test ``66..87`` (disjoint by construction).
    """
    mnist_tr, mnist_te = load_mnist("train", root=root), load_mnist("test", root=root)
    sad_tr = load_spoken_arabic_digit("train", root=root)
    sad_te = load_spoken_arabic_digit("test", root=root)
    utt_tr, utt_te = sad_tr.utterances(), sad_te.utterances()
    extractor = HACExtractor(**hac_options) if extractor is None else extractor
    _, sp_tr = build_pairs(mnist_tr.labels, sad_tr.digit, n_train, order, selection, seed, reuse)
    if extractor.codebooks_ is None:
        if fit_on not in ("pairs", "all"):
            raise ValueError(f"fit_on must be 'pairs' or 'all', got {fit_on!r}")
        extractor.fit([utt_tr[i] for i in (np.unique(sp_tr) if fit_on == "pairs" else range(len(utt_tr)))])
    train, idx_tr = _split(mnist_tr.images, mnist_tr.labels, utt_tr, sad_tr.digit, sad_tr.speaker,
                           n_train, order, selection, seed, extractor, reuse)
    test, idx_te = _split(mnist_te.images, mnist_te.labels, utt_te, sad_te.digit,
                          sad_te.speaker + SAD_TRAIN_SPEAKERS, n_test, order, "random", seed + 1, extractor, reuse)
    return PairedSplits(train, test, extractor, {"train": idx_tr, "test": idx_te},
                        {"train": n_reused(idx_tr[1]), "test": n_reused(idx_te[1])})


def fsdd_mfcc(root=None, rows=None, cmn: bool = False, **mfcc_options) -> tuple[list[np.ndarray | None], object]:
    """Static MFCCs ``(T_i, 13)`` of the FSDD recordings (``n_deltas=0``; the HAC extractor derives
    the delta streams) and the :class:`~serket_pyro.datasets.FSDDData` record.  ``rows``: compute
    only those recordings (the others are ``None``).  ``cmn``: subtract each recording's mean
    (cepstral mean normalisation, removes a fixed channel / microphone response)."""
    f = load_fsdd(root=root)
    opts = {"n_deltas": 0, **mfcc_options}
    keep = np.ones(len(f.lengths), bool) if rows is None else np.isin(np.arange(len(f.lengths)), rows)
    out = [mfcc(r, f.sample_rate, **opts).numpy() if k else None for r, k in zip(f.recordings(), keep)]
    if cmn:
        out = [None if x is None else x - x.mean(0) for x in out]
    return out, f


def build_fsdd_pairs(n_train: int = 2500, n_test: int = 500, *, order: str = "cyclic", holdout: str = "speaker",
                     test_speakers: Sequence[str] = ("theo",), takes: Sequence[int] | None = None,
                     selection: str = "random", seed: int = 0,
                     extractor: HACExtractor | None = None, root=None, mfcc_options: dict | None = None,
                     cmn: bool = True, reuse: bool = False, **hac_options) -> PairedSplits:
    """MNIST + Free Spoken Digit Dataset (English audio) pairs with HAC speech features.

    Args:
        n_train, n_test: pairs per split (multiples of 10).  With one of 6 speakers held out the
            training side has 250 recordings per digit: 2,500 pairs (default) use each once;
            more need ``reuse=True``.
        holdout: ``"speaker"`` (``test_speakers`` only in test; default, speaker-independent) or
            ``"take"`` (the official ``take < 5`` test split; the same speakers on both sides).
        test_speakers: names from ``FSDDData.speaker_names`` held out with ``holdout="speaker"``.
        takes: use only the recordings with these take numbers (0-49; ``None``: all) -- for quick
            runs; MFCCs are computed only for them.
        mfcc_options: keyword arguments of :func:`~serket_pyro.features.mfcc` (default 13 static
            coefficients, 25 ms / 10 ms, 26 mel filters).
        cmn: cepstral mean normalisation of every recording (default; see :func:`fsdd_mfcc`).  With
            speaker "theo" held out it lifts MLDA(10) on the speech alone from 0.43 to 0.59 (train)
            and 0.42 to 0.58 (held-out speaker).
        other arguments: as :func:`build_sad_pairs`.
    Returns:
        :class:`PairedSplits` (``speaker`` indexes ``FSDDData.speaker_names``).
    """
    f = load_fsdd(root=root)
    use = np.ones(len(f.lengths), bool) if takes is None else np.isin(f.take, list(takes))
    seqs, f = fsdd_mfcc(root, np.flatnonzero(use), cmn=cmn, **(mfcc_options or {}))
    if holdout == "speaker":
        unknown = [s for s in test_speakers if s not in f.speaker_names]
        if unknown or not test_speakers:
            raise ValueError(f"test_speakers {list(test_speakers)} must be non-empty names from {f.speaker_names}")
        is_test = np.isin(f.speaker, [f.speaker_names.index(s) for s in test_speakers])
    elif holdout == "take":
        is_test = f.is_test
    else:
        raise ValueError(f"holdout must be 'speaker' or 'take', got {holdout!r}")
    mnist_tr, mnist_te = load_mnist("train", root=root), load_mnist("test", root=root)
    tr, te = np.flatnonzero(~is_test & use), np.flatnonzero(is_test & use)
    if len(tr) == 0 or len(te) == 0:
        raise ValueError(f"the {holdout} split with takes={takes} leaves {len(tr)} training and {len(te)} test recordings")
    extractor = HACExtractor(**hac_options) if extractor is None else extractor
    if extractor.codebooks_ is None:
        extractor.fit([seqs[i] for i in tr])
    train, (img_tr, sp_tr) = _split(mnist_tr.images, mnist_tr.labels, [seqs[i] for i in tr], f.digit[tr],
                                    f.speaker[tr], n_train, order, selection, seed, extractor, reuse)
    test, (img_te, sp_te) = _split(mnist_te.images, mnist_te.labels, [seqs[i] for i in te], f.digit[te],
                                   f.speaker[te], n_test, order, selection, seed + 1, extractor, reuse)
    return PairedSplits(train, test, extractor, {"train": (img_tr, tr[sp_tr]), "test": (img_te, te[sp_te])},
                        {"train": n_reused(sp_tr), "test": n_reused(sp_te)})
