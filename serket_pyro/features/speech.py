"""Speech features: MFCCs from audio and histograms of acoustic co-occurrences (HAC).

**MFCC** (:func:`mfcc`), the usual pipeline (Davis and Mermelstein, IEEE TASSP 28(4), 1980; the
parameters of HTK / ``python_speech_features``), written with ``torch.fft`` only (torchaudio is not
installable next to the pinned torch):

1. pre-emphasis ``y[t] = x[t] - 0.97 x[t-1]``,
2. framing: 25 ms windows every 10 ms (``Tensor.unfold``, all frames at once; a signal shorter than
   one window is zero-padded to one frame), Hamming window,
3. power spectrum ``|rfft(frame, n_fft)|^2 / n_fft`` (``n_fft`` = the next power of two >= window),
4. ``n_mels`` (26) triangular filters equally spaced on the HTK mel scale
   ``mel(f) = 2595 log10(1 + f / 700)`` between ``f_min`` and ``f_max`` (default the Nyquist
   frequency), evaluated at the FFT bin frequencies (peak 1),
5. natural log of the filterbank energies (floored at ``1e-10``),
6. DCT-II with orthonormal scaling, keep the first ``n_mfcc`` (13) coefficients.

**Deltas** (:func:`deltas`): the regression formula (Furui 1986; HTK book eq. 5.16)
``d_t = sum_{n=1}^N n (c_{t+n} - c_{t-n}) / (2 sum_{n=1}^N n^2)`` with ``N = 2`` and the first /
last frame repeated at the edges.

**HAC** (:class:`HACExtractor`): histogram of acoustic co-occurrences (Van hamme, "HAC-models: a
novel approach to continuous speech recognition", Interspeech 2008).  Every stream of frame
features (e.g. static MFCCs, deltas, delta-deltas) is vector-quantised with its own codebook of
``n_codewords`` centroids (one size for all streams, or one per stream) learned by k-means (:func:`serket_pyro.ops.kmeans`: greedy k-means++
seeding, Arthur and Vassilvitskii, SODA 2007; Lloyd iterations; best of several starts) on the training frames; an utterance becomes the counts of the code
pairs ``(code[t], code[t + lag])`` for every stream and lag.  With 3 streams, lags (5, 2) and 20
codewords that is ``3 x 2 x 20 x 20 = 2400`` bins, laid out stream-major, then lag (in the given
order), then ``code[t] * K_s + code[t + lag]`` (``K_s`` the stream's codebook size) -- the layout of the Serket tutorial's
``hac`` (its row sums per 400-bin block are ``T - 5, T - 2, T - 5, ...``).  Each (stream, lag)
block of an utterance with ``T`` frames sums to ``max(T - lag, 0)``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence

import numpy as np
import torch

from ..ops.kmeans import kmeans as _kmeans
from ..validation import check_memory, check_positive_float, check_positive_int, check_real

__all__ = [
    "STREAM_NAMES",
    "HACExtractor",
    "dct_matrix",
    "deltas",
    "hz_to_mel",
    "kmeans",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_to_hz",
    "mfcc",
]

#: named streams derived from the static features by :class:`HACExtractor`
STREAM_NAMES = ("static", "delta", "delta2")


# ---------------------------------------------------------------------------------------- MFCC
def hz_to_mel(f):
    """HTK mel scale, ``2595 log10(1 + f / 700)`` (f in Hz)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel` (Hz)."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: float, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` float64 triangular filters, peak 1, centres equally spaced in mel.

    Filter ``j`` rises linearly from centre ``j - 1`` to centre ``j`` and falls to centre ``j + 1``
    (``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max``), evaluated at the
    FFT bin frequencies ``k * sample_rate / n_fft``.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    edges = torch.as_tensor(mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)))
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_in, n_out)`` float64 orthonormal DCT-II: ``y = x @ D`` equals ``scipy.fft.dct(x, 2, norm='ortho')[:n_out]``."""
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d


def deltas(x, N: int = 2) -> torch.Tensor:
    """Regression deltas along time of ``x`` ``(T, D)``: ``(T, D)`` float64 (edges repeated).

    ``d_t = sum_{n=1}^N n (x_{t+n} - x_{t-n}) / (2 sum_{n=1}^N n^2)``.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2:
        raise ValueError(f"deltas: x must be (T, D), got shape {tuple(x.shape)}")
    T = x.shape[0]
    if T == 0:
        return x.clone()
    idx = torch.arange(T)
    out = torch.zeros_like(x)
    for n in range(1, N + 1):  # loop over the N regression offsets, not over frames
        out += n * (x[(idx + n).clamp(max=T - 1)] - x[(idx - n).clamp(min=0)])
    return out / (2.0 * sum(n * n for n in range(1, N + 1)))


def _check_signal(signal, sample_rate, owner: str):
    """Validate one mono signal and its sample rate.

    Parameters
    ----------
    signal : array_like
        ``(L,)`` real, finite samples (``(L, 1)`` and ``(1, L)`` are taken as ``(L,)``).
    sample_rate : float
        Hz, a finite number > 0.
    owner : str
        Function named in the messages.

    Returns
    -------
    (torch.Tensor, float)
        ``(L,)`` float64 samples and the sample rate.
    """
    check_real(signal, "signal", owner)
    try:
        x = np.asarray(signal.detach().cpu() if isinstance(signal, torch.Tensor) else signal, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: signal must be a numeric 1-D array of samples, got {type(signal).__name__}") from None
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"{owner}: signal must be 1-D (L,) mono samples, got shape {x.shape}; "
                         "mix the channels or pick one first")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{owner}: signal contains {bad} NaN or infinite sample(s)")
    return torch.as_tensor(x), check_positive_float(sample_rate, "sample_rate", owner)


def _frame_params(sample_rate, win_ms, hop_ms, n_fft, n_samples=0):
    win_ms = check_positive_float(win_ms, "win_ms", "mfcc")
    hop_ms = check_positive_float(hop_ms, "hop_ms", "mfcc")
    win = round(sample_rate * win_ms / 1000.0)
    hop = round(sample_rate * hop_ms / 1000.0)
    if win < 1 or hop < 1:
        raise ValueError(f"mfcc: window ({win}) and hop ({hop}) must be at least one sample")
    win = check_positive_int(win, "the window in samples (sample_rate * win_ms / 1000)", "mfcc")
    hop = check_positive_int(hop, "the hop in samples (sample_rate * hop_ms / 1000)", "mfcc")
    n_fft = int(2 ** math.ceil(math.log2(win))) if n_fft is None else check_positive_int(n_fft, "n_fft", "mfcc")
    if n_fft < win:
        raise ValueError(f"mfcc: n_fft={n_fft} is shorter than the window ({win} samples)")
    n_frames = 1 + max(n_samples - win, 0) // hop
    check_memory(n_frames * (win + n_fft), f"{n_frames} frames x ({win} window + {n_fft} FFT) samples", "mfcc")
    return win, hop, n_fft


def log_mel_spectrogram(signal, sample_rate: float, *, n_mels: int = 26, win_ms: float = 25.0,
                        hop_ms: float = 10.0, preemphasis: float = 0.97, n_fft: int | None = None,
                        f_min: float = 0.0, f_max: float | None = None, log_floor: float = 1e-10) -> torch.Tensor:
    """Steps 1-5 of the module docstring: ``(T, n_mels)`` float64 natural-log mel filterbank energies.

    ``T = 1 + (L - win) // hop`` frames (at least 1; a shorter signal is zero-padded to one window).
    Arguments as :func:`mfcc`.
    """
    x, sample_rate = _check_signal(signal, sample_rate, "log_mel_spectrogram")
    n_mels = check_positive_int(n_mels, "n_mels", "log_mel_spectrogram")
    win, hop, n_fft = _frame_params(sample_rate, win_ms, hop_ms, n_fft, x.shape[0])
    if preemphasis and x.shape[0] > 1:
        x = torch.cat([x[:1], x[1:] - preemphasis * x[:-1]])
    if x.shape[0] < win:
        x = torch.nn.functional.pad(x, (0, win - x.shape[0]))
    frames = x.unfold(0, win, hop)  # (T, win), all frames at once
    frames = frames * torch.hamming_window(win, periodic=False, dtype=torch.float64)
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2) / n_fft  # (T, n_fft // 2 + 1)
    fb = mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max)
    return torch.log(torch.clamp(power @ fb.T, min=log_floor))


def mfcc(signal, sample_rate: float, *, n_mfcc: int = 13, n_mels: int = 26, win_ms: float = 25.0,
         hop_ms: float = 10.0, preemphasis: float = 0.97, n_fft: int | None = None, f_min: float = 0.0,
         f_max: float | None = None, n_deltas: int = 2, delta_N: int = 2, log_floor: float = 1e-10) -> torch.Tensor:
    """MFCCs of one 1-D signal (see the module docstring for the steps).

    Args:
        signal: ``(L,)`` samples (any scale; int16 PCM is used as is).
        sample_rate: Hz.
        n_mfcc: cepstral coefficients kept (13; at most ``n_mels``).
        n_mels: mel filters (26).
        win_ms, hop_ms: window length and hop in milliseconds (25, 10).
        preemphasis: pre-emphasis coefficient (0.97; 0 disables it).
        n_fft: FFT size (default the next power of two >= the window length in samples).
        f_min, f_max: filterbank range in Hz (default 0 .. Nyquist).
        n_deltas: 0 (static only), 1 (+ deltas) or 2 (+ deltas and delta-deltas).
        delta_N: regression half-width of the deltas (2).
        log_floor: floor of the filterbank energies before the log.

    Returns:
        ``(T, n_mfcc * (1 + n_deltas))`` float64, ``T = 1 + (L - win) // hop`` frames (at least 1):
        static coefficients, then deltas, then delta-deltas.
    """
    signal, sample_rate = _check_signal(signal, sample_rate, "mfcc")
    n_deltas = check_positive_int(n_deltas, "n_deltas", "mfcc", minimum=0, maximum=2)
    n_mels = check_positive_int(n_mels, "n_mels", "mfcc")
    n_mfcc = check_positive_int(n_mfcc, "n_mfcc", "mfcc")
    delta_N = check_positive_int(delta_N, "delta_N", "mfcc")
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"mfcc: need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    logmel = log_mel_spectrogram(signal, sample_rate, n_mels=n_mels, win_ms=win_ms, hop_ms=hop_ms,
                                 preemphasis=preemphasis, n_fft=n_fft, f_min=f_min, f_max=f_max, log_floor=log_floor)
    c = logmel @ dct_matrix(n_mels, n_mfcc)  # (T, n_mfcc)
    out = [c]
    for _ in range(n_deltas):
        out.append(deltas(out[-1], delta_N))
    return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------------- k-means
def kmeans(x: torch.Tensor, k: int, *, n_iter: int = 100, tol: float = 1e-8, seed: int = 0,
           n_init: int = 10) -> torch.Tensor:
    """Euclidean k-means codebook of ``x`` ``(n, D)``: ``(k, D)`` centroids (same dtype as ``x``).

    :func:`serket_pyro.ops.kmeans`: greedy k-means++ seeding from a ``torch.Generator`` seeded
    with ``seed`` (the result does not depend on the global RNG), at most ``n_iter`` Lloyd steps
    per start, stopping when no frame changes codeword or the centroids move by at most ``tol``
    times the mean feature variance (squared); the best of ``n_init`` starts (least inertia).
    """
    return _kmeans(x, k, n_init=n_init, max_iter=n_iter, tol=tol, seed=seed).centers


# --------------------------------------------------------------------------------------- HAC
def _concat_deltas(flat: torch.Tensor, lengths: torch.Tensor, N: int) -> torch.Tensor:
    """:func:`deltas` of every sequence of ``flat`` (sequences of ``lengths`` concatenated), at once."""
    F = flat.shape[0]
    start = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    stop = start + torch.repeat_interleave(lengths, lengths) - 1
    idx = torch.arange(F)
    out = torch.zeros_like(flat)
    for n in range(1, N + 1):  # loop over the N regression offsets
        out += n * (flat[torch.minimum(idx + n, stop)] - flat[torch.maximum(idx - n, start)])
    return out / (2.0 * sum(n * n for n in range(1, N + 1)))


def _as_sequences(seqs, what="sequences"):
    if isinstance(seqs, (np.ndarray, torch.Tensor)) and np.ndim(seqs) == 2:
        seqs = [seqs]
    out = [np.asarray(s, dtype=np.float64) for s in seqs]
    if not out:
        raise ValueError(f"HACExtractor: no {what} given")
    D = out[0].shape[1] if out[0].ndim == 2 else None
    for i, s in enumerate(out):
        if s.ndim != 2 or s.shape[1] != D:
            raise ValueError(f"HACExtractor: {what}[{i}] has shape {s.shape}; every sequence must be (T_i, {D})")
        if not np.isfinite(s).all():
            raise ValueError(f"HACExtractor: {what}[{i}] contains NaN or infinite values")
    return out


class HACExtractor:
    """Histogram-of-acoustic-co-occurrence features (Van hamme 2008), scikit-learn style.

    Args:
        n_codewords: codebook size of every stream (20), or one size per stream (the original
            Serket's ``ks``, e.g. ``[20, 20, 20]``).
        lags: frame lags of the co-occurrences (``(5, 2)``).
        streams: how the streams come from the input frames ``(T, D)``: a list whose items are a
            name in ``("static", "delta", "delta2")`` -- the input columns themselves, their
            regression deltas, the deltas of those (computed per utterance with :func:`deltas`) --
            or a ``(start, stop)`` column range of the input (e.g. ``[(0, 13), (13, 26), (26, 39)]``
            for MFCC+deltas already computed).  Default ``("static", "delta", "delta2")``.
        standardize: z-score each stream's dimensions with the training mean / sd before the
            k-means (default; ``False``: plain Euclidean VQ of the raw values).  On the tutorial's
            3,000 Spoken Arabic Digit utterances MLDA(10) on the speech alone reaches 0.78 with
            standardised streams vs 0.62 (raw counts) / 0.76 (``weights=[200]``) without
            (``benchmarks/hac_speech.py``; the tutorial's own HAC: 0.76 / 0.81).
        delta_N: regression half-width of the derived deltas (2).
        n_iter: maximum Lloyd iterations (100).
        seed: seed of the k-means++ initialisation (stream ``s`` uses ``seed + s``).
        max_train_frames: fit each codebook on at most this many training frames (a random subset
            drawn with ``seed``); ``None`` uses all.

    Learned state: ``codebooks_`` (list of ``(n_codewords, D_s)`` float64, in standardised units
    when ``standardize``), ``means_``, ``scales_`` (list of ``(D_s,)``).

    ``transform`` returns ``(N, n_lags * sum_s K_s ** 2)`` int64 counts (``K_s`` the codebook size
    of stream ``s``; module docstring for the layout).
    """

    def __init__(self, n_codewords: int | Sequence[int] = 20, lags: Sequence[int] = (5, 2), streams=None, *,
                 standardize: bool = True, delta_N: int = 2, n_iter: int = 100, seed: int = 0,
                 max_train_frames: int | None = None):
        owner = "HACExtractor"
        per_stream = isinstance(n_codewords, (Sequence, np.ndarray)) and not isinstance(n_codewords, (str, bytes))
        if per_stream:
            if len(n_codewords) == 0:
                raise ValueError(f"{owner}: n_codewords must be an integer or one integer per stream, got []")
            self.n_codewords = tuple(check_positive_int(k, "n_codewords", owner) for k in n_codewords)
        else:
            self.n_codewords = check_positive_int(n_codewords, "n_codewords", owner)
        if isinstance(lags, (str, bytes)) or not isinstance(lags, (Sequence, np.ndarray)) or len(lags) == 0:
            raise ValueError(f"{owner}: lags must be a non-empty list of positive integers, got {lags!r}")
        self.lags = tuple(check_positive_int(l, "lags", owner) for l in lags)
        streams = STREAM_NAMES if streams is None else streams
        norm = []
        for s in streams:
            if isinstance(s, str):
                if s not in STREAM_NAMES:
                    raise ValueError(f"HACExtractor: unknown stream {s!r} (names: {STREAM_NAMES})")
                norm.append(s)
            else:
                if not isinstance(s, (Sequence, np.ndarray)) or len(s) != 2:
                    raise ValueError(f"HACExtractor: a stream must be a name in {STREAM_NAMES} or a (start, stop) "
                                     f"column range, got {s!r}")
                a, b = (check_positive_int(v, "stream column range", owner, minimum=0) for v in s)
                if not 0 <= a < b:
                    raise ValueError(f"HACExtractor: stream column range {s} must have 0 <= start < stop")
                norm.append((a, b))
        if not norm:
            raise ValueError("HACExtractor: at least one stream is needed")
        self.streams = tuple(norm)
        if per_stream and len(self.n_codewords) != len(self.streams):
            raise ValueError(f"{owner}: n_codewords gives {len(self.n_codewords)} codebook sizes for "
                             f"{len(self.streams)} streams {list(self.streams)}")
        if not isinstance(standardize, (bool, np.bool_)):
            raise ValueError(f"{owner}: standardize must be True or False, got {standardize!r}")
        self.standardize = bool(standardize)
        self.delta_N = check_positive_int(delta_N, "delta_N", owner)
        self.n_iter = check_positive_int(n_iter, "n_iter", owner, minimum=0)
        self.seed = check_positive_int(seed, "seed", owner, minimum=0, maximum=2**63 - 1)
        self.max_train_frames = (None if max_train_frames is None
                                 else check_positive_int(max_train_frames, "max_train_frames", owner))
        pairs = (f"{self.n_codewords}^2" if isinstance(self.n_codewords, int)
                 else "(" + " + ".join(f"{k}^2" for k in self.n_codewords) + ") / streams")
        check_memory(self.n_bins, f"one feature vector of {self.n_bins} bins "
                     f"({len(self.streams)} streams x {len(self.lags)} lags x {pairs} codeword pairs)",
                     owner)
        self.codebooks_: list[torch.Tensor] | None = None
        self.means_: list[torch.Tensor] | None = None
        self.scales_: list[torch.Tensor] | None = None
        self.n_features_in_: int | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def ks(self) -> tuple[int, ...]:
        """Codebook size of every stream."""
        if isinstance(self.n_codewords, int):
            return (self.n_codewords,) * len(self.streams)
        return self.n_codewords

    @property
    def n_bins(self) -> int:
        """Length of a feature vector: ``n_lags * sum_s K_s ** 2``."""
        return len(self.lags) * sum(k * k for k in self.ks)

    def _stream_frames(self, seqs):
        """Per stream, the frames of all sequences concatenated: list of ``(sum T_i, D_s)`` float64."""
        flat = torch.as_tensor(np.concatenate(seqs, axis=0))
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        D = flat.shape[1]
        levels = [flat]
        out = []
        for s in self.streams:
            if isinstance(s, str):
                level = STREAM_NAMES.index(s)
                while len(levels) <= level:
                    levels.append(_concat_deltas(levels[-1], lengths, self.delta_N))
                out.append(levels[level])
            else:
                if s[1] > D:
                    raise ValueError(f"HACExtractor: stream columns {s} exceed the {D} input columns")
                out.append(flat[:, s[0]:s[1]])
        return out

    def _codes(self, seqs) -> list[torch.Tensor]:
        """Codeword index of every frame, per stream: list of ``(sum T_i,)`` int64."""
        out = []
        for x, cb, mu, sd in zip(self._stream_frames(seqs), self.codebooks_, self.means_, self.scales_):
            out.append(torch.cdist((x - mu) / sd, cb).argmin(1))
        return out

    # --------------------------------------------------------------------- API
    def fit(self, sequences, y=None) -> HACExtractor:
        """Learn one codebook per stream from the frames of ``sequences`` (list of ``(T_i, D)``)."""
        seqs = _as_sequences(sequences)
        self.n_features_in_ = seqs[0].shape[1]
        self.codebooks_, self.means_, self.scales_ = [], [], []
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        for s, (x, k) in enumerate(zip(self._stream_frames(seqs), self.ks)):
            if self.max_train_frames is not None and x.shape[0] > self.max_train_frames:
                x = x[torch.randperm(x.shape[0], generator=g)[: self.max_train_frames]]
            if self.standardize:
                mu, sd = x.mean(0), x.std(0).clamp(min=1e-12)
            else:
                mu, sd = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
            self.means_.append(mu)
            self.scales_.append(sd)
            self.codebooks_.append(kmeans((x - mu) / sd, k, n_iter=self.n_iter, seed=self.seed + s))
        return self

    def transform(self, sequences) -> np.ndarray:
        """``(N, n_bins)`` int64 co-occurrence counts of ``sequences`` (list of ``(T_i, D)``)."""
        if self.codebooks_ is None:
            raise ValueError("HACExtractor: call fit() (or load()) before transform()")
        seqs = _as_sequences(sequences)
        if seqs[0].shape[1] != self.n_features_in_:
            raise ValueError(f"HACExtractor: fitted on {self.n_features_in_} columns, got {seqs[0].shape[1]}")
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        N, B = len(seqs), self.n_bins
        check_memory(N * B, f"N x n_bins = {N} x {B} counts", "HACExtractor")
        utt = torch.repeat_interleave(torch.arange(N), lengths)  # (F,) utterance of each frame
        pos = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        counts = torch.zeros(N * B, dtype=torch.int64)
        offset = 0
        for codes, K in zip(self._codes(seqs), self.ks):  # loops over streams and lags only
            for lag in self.lags:
                ok = pos + lag < lengths[utt]  # frame t has a partner t + lag in the same utterance
                src = torch.nonzero(ok).squeeze(1)
                bins = offset + codes[src] * K + codes[src + lag]
                counts.index_add_(0, utt[src] * B + bins, torch.ones_like(bins))
                offset += K * K
        return counts.reshape(N, B).numpy()

    def fit_transform(self, sequences, y=None) -> np.ndarray:
        return self.fit(sequences).transform(sequences)

    # ------------------------------------------------------------- persistence
    def get_config(self) -> dict:
        return {"n_codewords": self.n_codewords if isinstance(self.n_codewords, int) else list(self.n_codewords),
                "lags": list(self.lags),
                "streams": [s if isinstance(s, str) else list(s) for s in self.streams],
                "standardize": self.standardize, "delta_N": self.delta_N, "n_iter": self.n_iter,
                "seed": self.seed, "max_train_frames": self.max_train_frames}

    def save(self, path) -> None:
        """Write ``path`` (.npz, no pickle): the codebooks, means, scales and a JSON config."""
        if self.codebooks_ is None:
            raise ValueError("HACExtractor: nothing to save, call fit() first")
        arrays = {"config": np.array(json.dumps({**self.get_config(), "n_features_in": self.n_features_in_}))}
        for s, (cb, mu, sd) in enumerate(zip(self.codebooks_, self.means_, self.scales_)):
            arrays[f"codebook_{s}"] = cb.numpy()
            arrays[f"mean_{s}"] = mu.numpy()
            arrays[f"scale_{s}"] = sd.numpy()
        with open(os.fspath(path), "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> HACExtractor:
        """An extractor saved by :meth:`save` (reproduces its features exactly).

        Parameters
        ----------
        path : str or os.PathLike
            The ``.npz`` file.

        Returns
        -------
        HACExtractor

        Raises
        ------
        ValueError
            When the file cannot be read, its config has unknown, missing or invalid entries, or
            its arrays do not fit the config (names the file and the problem).
        """
        where = f"HACExtractor.load: {os.fspath(path)}"
        try:
            with np.load(os.fspath(path), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing, not an npz, pickled arrays
            raise ValueError(f"{where}: cannot read the file ({e})") from None
        if "config" not in arrays:
            raise ValueError(f"{where}: no 'config' entry (not written by HACExtractor.save)")
        try:
            cfg = json.loads(str(arrays.pop("config")))
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: the config is not valid JSON ({e})") from None
        expected = set(cls().get_config()) | {"n_features_in"}
        if not isinstance(cfg, dict) or set(cfg) != expected:
            got = set(cfg) if isinstance(cfg, dict) else set()
            raise ValueError(f"{where}: config has unknown entries {sorted(got - expected)} and lacks "
                             f"{sorted(expected - got)}")
        n_in = cfg.pop("n_features_in")
        if isinstance(cfg["streams"], list):
            cfg["streams"] = [s if isinstance(s, str) or not isinstance(s, list) else tuple(s) for s in cfg["streams"]]
        try:
            self = cls(**cfg)
            n_in = check_positive_int(n_in, "n_features_in", "HACExtractor")
        except ValueError as e:
            raise ValueError(f"{where}: invalid config: {e}") from None
        S = len(self.streams)
        names = {f"{kind}_{s}" for kind in ("codebook", "mean", "scale") for s in range(S)}
        if set(arrays) != names:
            raise ValueError(f"{where}: the config has {S} streams but the file holds arrays {sorted(arrays)}")
        return self.set_state([arrays[f"codebook_{s}"] for s in range(S)], [arrays[f"mean_{s}"] for s in range(S)],
                              [arrays[f"scale_{s}"] for s in range(S)], n_in, where)

    def set_state(self, codebooks, means, scales, n_features_in: int, where: str = "HACExtractor") -> HACExtractor:
        """Set the learned state (as :meth:`load` and a saved graph do), checked against the config.

        Parameters
        ----------
        codebooks, means, scales : sequence of array_like
            One per stream: ``(K_s, D_s)``, ``(D_s,)``, ``(D_s,)`` finite floats, scales > 0.
        n_features_in : int
            Columns of the input frames ``D``.
        where : str
            Prefix of the error messages (the file or module the state comes from).

        Returns
        -------
        HACExtractor
            ``self``, fitted.

        Raises
        ------
        ValueError
            A count, shape or value that does not fit the config (names ``where`` and the stream).
        """
        n_in = check_positive_int(n_features_in, "n_features_in", where)
        S = len(self.streams)
        if not len(codebooks) == len(means) == len(scales) == S:
            raise ValueError(f"{where}: {len(codebooks)} codebooks, {len(means)} means and {len(scales)} scales "
                             f"for {S} streams")
        out = ([], [], [])
        for s, (stream, K) in enumerate(zip(self.streams, self.ks)):
            if not isinstance(stream, str) and stream[1] > n_in:
                raise ValueError(f"{where}: stream {s} uses columns {stream}, beyond n_features_in={n_in}")
            D = n_in if isinstance(stream, str) else stream[1] - stream[0]
            cb, mu, sd = (np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
                          for a in (codebooks[s], means[s], scales[s]))
            if cb.shape != (K, D) or mu.shape != (D,) or sd.shape != (D,):
                raise ValueError(f"{where}: stream {s} has codebook {cb.shape}, mean {mu.shape}, scale {sd.shape}; "
                                 f"the config needs ({K}, {D}), ({D},), ({D},)")
            if not all(a.dtype.kind == "f" and np.isfinite(a).all() for a in (cb, mu, sd)) or (sd <= 0).any():
                raise ValueError(f"{where}: stream {s} has non-float, non-finite or non-positive-scale arrays")
            for lst, a in zip(out, (cb, mu, sd)):
                lst.append(torch.as_tensor(a.astype(np.float64)))
        self.codebooks_, self.means_, self.scales_ = out
        self.n_features_in_ = n_in
        return self
