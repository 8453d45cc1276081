"""Capture and restore the state of every random number generator as plain tensors, so that a
checkpoint saved with ``torch.save`` loads with ``weights_only=True`` and a resumed run continues
with the same random stream."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state"]


def get_rng_state() -> dict[str, torch.Tensor]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.as_tensor(keys.astype(np.int64)),
        "numpy_rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
        "numpy_cached": torch.tensor([cached], dtype=torch.float64),
        "python": torch.tensor(list(internal), dtype=torch.int64),
        "python_version": torch.tensor([version], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if gauss is None else gauss], dtype=torch.float64),
    }


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_rest"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_cached"][0])))
    g = float(state["python_gauss"][0])
    random.setstate((int(state["python_version"][0]), tuple(int(v) for v in state["python"]),
                     None if np.isnan(g) else g))
