"""One seed for every random choice (python, numpy, torch, pyro)."""

from __future__ import annotations

import pyro

__all__ = ["set_seed"]


def set_seed(seed: int | None) -> None:
    """Seed ``random``, ``numpy``, ``torch`` and Pyro at once; ``None`` does nothing."""
    if seed is not None:
        pyro.set_rng_seed(int(seed))
