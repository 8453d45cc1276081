"""Capture and restore the state of every random number generator as plain tensors, so that a
checkpoint saved with ``torch.save`` loads with ``weights_only=True`` and a resumed run continues
with the same random stream: Python's, NumPy's, torch's CPU generator and, once CUDA is in use,
every CUDA device's generator (without them a run resumed on a GPU draws other minibatches and
noise than the uninterrupted run)."""

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
        **_cuda_state(),
        **_local_state(),
    }


def _local_state() -> dict[str, torch.Tensor]:
    """``{"torch_local": ..., "cuda_local": ...}``: a sharded fit's rank-specific streams
    (:mod:`serket_pyro.distributed`; the CUDA one once it has drawn on a GPU)."""
    from . import distributed

    out = {}
    st, cst = distributed.local_state(), distributed.local_cuda_state()
    if st is not None:
        out["torch_local"] = st
    if cst is not None:
        out["cuda_local"] = cst
    return out


def _cuda_state() -> dict[str, torch.Tensor]:
    """``{"cuda": (devices, S) uint8}`` when CUDA has been initialised, else ``{}`` (asking an
    uninitialised CUDA for its state would initialise it, and a CPU run never draws from it)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"cuda": torch.stack([s.cpu() for s in torch.cuda.get_rng_state_all()])}


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss = (int(v) for v in state["numpy_rest"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         float(state["numpy_cached"][0])))
    g = float(state["python_gauss"][0])
    random.setstate((int(state["python_version"][0]), tuple(int(v) for v in state["python"]),
                     None if np.isnan(g) else g))
    if state.get("torch_local") is not None:
        from . import distributed

        distributed.set_local_state(state["torch_local"])
    if state.get("cuda_local") is not None:
        from . import distributed

        distributed.set_local_cuda_state(state["cuda_local"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        n = torch.cuda.device_count()
        if cuda.dim() != 2 or cuda.dtype != torch.uint8 or len(cuda) != n:
            raise ValueError(f"the saved CUDA generator state is for {len(cuda) if cuda.dim() else 0} device(s) "
                             f"({cuda.dtype}), this machine has {n}")
        torch.cuda.set_rng_state_all(list(cuda))
    # a CUDA state resumed without CUDA is not needed: a CPU run never draws from it
