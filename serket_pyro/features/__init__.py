"""Feature extractors: speech (MFCC, HAC histograms) and images (deskewing)."""

from .deskew import deskew, slant
from .speech import (
    STREAM_NAMES,
    HACExtractor,
    dct_matrix,
    deltas,
    hz_to_mel,
    kmeans,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    mfcc,
)

__all__ = [
    "STREAM_NAMES",
    "HACExtractor",
    "dct_matrix",
    "deltas",
    "deskew",
    "hz_to_mel",
    "kmeans",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_to_hz",
    "mfcc",
    "slant",
]
