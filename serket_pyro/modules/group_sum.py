"""GroupSum: sum the rows of each group into one data point (the original ``serket.utils.GroupSum``)."""

from __future__ import annotations

import numpy as np
import torch

from ..messages import PointMessage, message_from_tensors, message_to_tensors
from ..module import Module

__all__ = ["GroupSum"]


class GroupSum(Module):
    """``N`` data points in, one per group out: the sum of its points' features.

    With ``g(n)`` the group of point ``n``, the forward message is
    ``y_e = sum_{n: g(n) = e} x_n`` (``(G, D)``, e.g. the word counts of an episode's
    utterances summed into one document), and a parent's message about group ``e`` (class
    probabilities, points or Gaussians, ``(G, ...)``) is passed down to every point of the group:
    ``b_n = m_{g(n)}`` -- the points of a group share its latent variable.

    Parameters
    ----------
    group_idx : array_like of int, shape (N,)
        Group of every point, ``0 .. G - 1``, each group used at least once.
    name : str, default "SumGroup"
        Short name (the original's).

    Attributes
    ----------
    n_groups : int
        ``G = max(group_idx) + 1``, the number of data points this module sends up.
    """

    _fitted = ()
    input_kinds = (PointMessage,)
    test_args = {"group_idx": list(range(12))}  # one point per group: the contract test's N points

    def __init__(self, group_idx, name: str = "SumGroup"):
        super().__init__(name)
        g = np.asarray(group_idx)
        if g.ndim != 1 or g.size == 0 or g.dtype.kind not in "iu" and not (
                g.dtype.kind == "f" and np.isfinite(g).all() and (g == np.round(g)).all()):
            raise ValueError(f"{self.name}: group_idx must be a non-empty 1-D array of integer group numbers, "
                             f"got {g.dtype} of shape {g.shape}")
        g = g.astype(np.int64)
        if g.min() < 0:
            raise ValueError(f"{self.name}: group_idx must be >= 0, got {int(g.min())}")
        empty = np.flatnonzero(np.bincount(g) == 0)
        if empty.size:
            raise ValueError(f"{self.name}: groups {empty.tolist()} have no data point (group numbers must be "
                             f"0 .. G - 1 without gaps)")
        self.group_idx = g
        self.n_groups = int(g.max()) + 1

    @property
    def n_points(self) -> int:
        return self.n_groups

    def _read_inputs(self):
        if len(self.children) != 1:
            raise ValueError(f"{self.name}: GroupSum takes one child, got {len(self.children)}")
        x = self.get_observations()[0]
        if not isinstance(x, PointMessage):
            raise ValueError(f"{self.name}: GroupSum sums data points; {self.children[0].name} sends a {x.kind} "
                             "message")
        if x.N != len(self.group_idx):
            raise ValueError(f"{self.name}: group_idx has {len(self.group_idx)} entries, the data have {x.N} points")
        return x.value

    def _infer(self, x, backward) -> None:
        """Nothing to learn."""

    def _recognise(self, x, backward) -> None:
        """Nothing learned."""

    def _forward_message(self, x, backward):
        out = torch.zeros((self.n_groups,) + tuple(x.shape[1:]), dtype=x.dtype)
        return PointMessage(out.index_add_(0, torch.as_tensor(self.group_idx), x))

    def _backward_messages(self, x, backward) -> list:
        if backward is None:
            return [None]
        idx = torch.as_tensor(self.group_idx)
        return [message_from_tensors({k: v[idx] if v.dim() and v.shape[0] == self.n_groups else v
                                      for k, v in message_to_tensors(backward).items()})]

    def _write_outputs(self, writer, x, backward) -> None:
        writer.savetxt(f"sums_{self.mode}.txt", self.forward_msg, fmt="%.10g")
