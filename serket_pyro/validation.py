"""Input checks shared by the modules: each raises ``ValueError`` naming the module and the problem
before any work starts (and so before any file is written)."""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch

__all__ = ["MAX_INT", "check_category", "check_device", "check_memory", "check_positive_float",
           "check_positive_int", "check_real", "format_bytes", "memory_limit"]

#: default upper bound of :func:`check_positive_int`: larger "sizes" are a mistake (``K=1e30``),
#: not a request; the largest value torch's int32 indexing and ``torch.multinomial`` take
MAX_INT = 2**31 - 1


def check_positive_int(value, what: str, owner: str, minimum: int = 1, maximum: int | None = MAX_INT) -> int:
    """Validate a count or a size.

    Parameters
    ----------
    value : int
        Python or numpy integer; a float is taken only when it is integral (``2.0``), so that
        ``2.5``, ``True``, ``"5"``, ``None`` and NaN are refused.
    what : str
        Name of the argument in the message.
    owner : str
        Module or function named in the message.
    minimum : int, default 1
        Smallest allowed value.
    maximum : int or None, default :data:`MAX_INT`
        Largest allowed value (``None``: no bound).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        ``"<owner>: <what> must be an integer ..."``.
    """
    bounds = f">= {minimum}" if maximum is None else f"in {minimum} .. {maximum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, float, np.floating)):
        raise ValueError(f"{owner}: {what} must be an integer {bounds}, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{owner}: {what} must be an integer {bounds}, got {value!r}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        raise ValueError(f"{owner}: {what} must be an integer {bounds}, got {value!r}")
    return v


def check_positive_float(value, what: str, owner: str, allow_zero: bool = False) -> float:
    """Validate a finite number ``> 0`` (``>= 0`` with ``allow_zero``); bools and strings are refused.

    Parameters
    ----------
    value : float
    what, owner : str
        Argument and module named in the message.
    allow_zero : bool, default False

    Returns
    -------
    float
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{owner}: {what} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{owner}: {what} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_real(value, what: str, owner: str) -> None:
    """Refuse complex arrays and tensors (converting them to float would drop the imaginary part).

    Parameters
    ----------
    value : array_like or torch.Tensor
    what, owner : str
        Argument and module named in the message.
    """
    if isinstance(value, torch.Tensor):
        complex_ = value.is_complex()
    else:
        try:
            complex_ = np.iscomplexobj(value)
        except (TypeError, ValueError):  # not an array at all: the caller's conversion reports it
            return
    if complex_:
        raise ValueError(f"{owner}: {what} must be real numbers, got complex values")


def memory_limit() -> int:
    """Bytes one array may take: the machine's physical memory (64 GiB when unknown).

    Returns
    -------
    int
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # not POSIX
        return 64 * 2**30


def format_bytes(n: float) -> str:
    """``n`` bytes as text, e.g. ``"3.2 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"


def check_memory(n_elements, what: str, owner: str, itemsize: int = 8) -> None:
    """Refuse a computation whose working arrays would not fit in memory, before it starts.

    Parameters
    ----------
    n_elements : int or float
        Number of array elements the computation holds at once (an estimate, e.g. ``N * D**2``).
    what : str
        What the elements are, for the message (e.g. ``"N x D^2 = 1000 x 784^2 outer products"``).
    owner : str
        Module or function named in the message.
    itemsize : int, default 8
        Bytes per element (float64).

    Raises
    ------
    ValueError
        ``"<owner>: <what> need <size> of memory, more than the <limit> available ..."``.
    """
    need = float(n_elements) * itemsize
    limit = memory_limit()
    if need > limit:
        raise ValueError(f"{owner}: {what} need {format_bytes(need)} of memory, more than the "
                         f"{format_bytes(limit)} of this machine; reduce the sizes")


def check_category(category, n: int | None, owner: str) -> np.ndarray | None:
    """Validate true labels: 1-D, integer-valued, finite, non-negative, length ``n``.

    Parameters
    ----------
    category : array_like or None
        ``(N,)`` labels (``(N, 1)`` and ``(1, N)`` are taken as ``(N,)``).
    n : int or None
        Number of data points the labels must match (``None``: not checked yet).
    owner : str
        Module named in the messages.

    Returns
    -------
    numpy.ndarray or None
        int64 labels, or ``None`` for ``None``.
    """
    if category is None:
        return None
    if isinstance(category, torch.Tensor):
        category = category.detach().cpu().numpy()
    if isinstance(category, (str, bytes)):
        raise ValueError(f"{owner}: category must be integer labels, got {category!r}")
    c = np.asarray(category)
    if c.ndim != 1:
        c = c.reshape(-1) if c.ndim == 2 and 1 in c.shape else c
    if c.ndim != 1:
        raise ValueError(f"{owner}: category must be 1-D (N,), got shape {c.shape}")
    if c.size == 0:
        raise ValueError(f"{owner}: category is empty")
    if not np.issubdtype(c.dtype, np.number) or np.iscomplexobj(c):
        raise ValueError(f"{owner}: category must be integer labels, got dtype {c.dtype}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{owner}: category contains NaN or infinite values")
    if not np.all(c == np.round(c)):
        raise ValueError(f"{owner}: category must be integer labels, got non-integer values")
    if c.min() < 0:  # the scores (serket_pyro.metrics) take labels 0, 1, ...
        raise ValueError(f"{owner}: category contains negative labels (min {c.min():g}); labels must be >= 0")
    if c.max() > MAX_INT:
        raise ValueError(f"{owner}: category holds labels beyond {MAX_INT}")
    if n is not None and c.shape[0] != n:
        raise ValueError(f"{owner}: category has {c.shape[0]} labels but the data have N={n} points")
    return c.astype(np.int64)


def check_device(device) -> torch.device:
    """``torch.device(device)`` (CPU for ``None``), or a ``ValueError`` naming the bad value."""
    try:
        return torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
