"""Reading WAVE files: integer PCM with the standard library's :mod:`wave`.

The speech modules take wav files as the original Serket did (``scipy.io.wavfile``); only the
common case is accepted -- uncompressed integer PCM, 8, 16 or 32 bits, mono -- and anything else
is refused with a message that names the file and says what it is.
"""

from __future__ import annotations

import os
import wave

import numpy as np

__all__ = ["read_wav"]

#: sample width in bytes -> numpy dtype of the little-endian PCM samples
_DTYPES = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}


def read_wav(path, owner: str = "read_wav") -> tuple[int, np.ndarray]:
    """Sample rate and samples of a mono integer-PCM WAVE file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.wav`` file.
    owner : str, default "read_wav"
        Named first in the error messages (the module reading the file).

    Returns
    -------
    (int, ndarray)
        Sample rate in Hz and the ``(L,)`` float64 samples in the file's integer scale (16-bit:
        -32768..32767; 8-bit files are centred on 0), as :func:`~serket_pyro.features.mfcc`
        takes them.

    Raises
    ------
    ValueError
        A missing or unreadable file, a file that is not integer PCM (e.g. float or compressed
        WAVE, MP3), a sample width other than 8, 16 or 32 bits, several channels, or no samples.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ValueError(f"{owner}: {p} is not a file")
    try:
        with wave.open(p, "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise ValueError(f"{owner}: {p} is not a readable integer-PCM WAVE file ({e}); convert it to 16-bit PCM "
                         "mono, e.g. `sox in.ext -b 16 -c 1 out.wav`") from None
    if width not in _DTYPES:
        raise ValueError(f"{owner}: {p} has {8 * width}-bit samples; 8-, 16- or 32-bit PCM is read")
    if channels != 1:
        raise ValueError(f"{owner}: {p} has {channels} channels; give mono files (mix or pick one channel first)")
    x = np.frombuffer(raw[: len(raw) - len(raw) % width], dtype=_DTYPES[width]).astype(np.float64)
    if width == 1:
        x -= 128.0
    if x.size == 0:
        raise ValueError(f"{owner}: {p} holds no samples")
    return int(rate), x
