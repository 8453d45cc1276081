"""Input checks shared by the modules: each raises ``ValueError`` naming the module and the problem
before any work starts."""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["check_category", "check_positive_int", "check_positive_float", "check_device"]


def check_positive_int(value, what: str, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{owner}: {what} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {what} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, what: str, owner: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: {what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{owner}: {what} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


def check_category(category, n: int | None, owner: str) -> np.ndarray | None:
    """Validate true labels: 1-D, integer-valued, finite, length ``n``. Returns int64 or None."""
    if category is None:
        return None
    if isinstance(category, torch.Tensor):
        category = category.detach().cpu().numpy()
    c = np.asarray(category)
    if c.ndim != 1:
        c = c.reshape(-1) if c.ndim == 2 and 1 in c.shape else c
    if c.ndim != 1:
        raise ValueError(f"{owner}: category must be 1-D (N,), got shape {c.shape}")
    if c.size == 0:
        raise ValueError(f"{owner}: category is empty")
    if not np.issubdtype(c.dtype, np.number):
        raise ValueError(f"{owner}: category must be integer labels, got dtype {c.dtype}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{owner}: category contains NaN or infinite values")
    if not np.all(c == np.round(c)):
        raise ValueError(f"{owner}: category must be integer labels, got non-integer values")
    if n is not None and c.shape[0] != n:
        raise ValueError(f"{owner}: category has {c.shape[0]} labels but the data have N={n} points")
    return c.astype(np.int64)


def check_device(device) -> torch.device:
    try:
        return torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
