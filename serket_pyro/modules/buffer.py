"""Buffer: a growing observation for online learning (the original ``serket.utils.Buffer``)."""

from __future__ import annotations

import torch

from ..messages import PointMessage
from ..module import Module
from ..validation import check_positive_int

__all__ = ["Buffer"]


class Buffer(Module):
    """Keep every data point the child has sent so far (or the last ``size``) and send them all up.

    At each update the child's current forward message (``(n_t, D_t)`` points: what arrived since
    the last update) is appended to the buffer; the parents see all ``N_t = n_1 + ... + n_t``
    points (at most ``size``, the oldest dropped first), so a parent re-learns from the whole
    history as it grows.  Rows of different widths (e.g. a vocabulary that grows) are padded with
    zeros to the widest.

    Parameters
    ----------
    size : int, default -1
        Most points kept; ``-1`` keeps all (the original's default).
    name : str, default "Buffer"
        Short name (the original's).

    Attributes
    ----------
    buffer_ : torch.Tensor, shape (N_t, D)
        The buffered points.  Data, not learned state: checkpoints keep them (a resumed online
        run continues from the whole history), and so does :func:`~serket_pyro.save_graph`, but a
        graph loaded for recognition starts an empty buffer (new data are recognised on their own).
    """

    _fitted = ()
    input_kinds = (PointMessage,)
    test_args: dict = {}

    def __init__(self, size: int = -1, name: str = "Buffer"):
        super().__init__(name)
        self.size = -1 if size == -1 and not isinstance(size, bool) else check_positive_int(
            size, "size (or -1 for no limit)", self.name)
        self.buffer_: torch.Tensor | None = None

    @property
    def n_points(self) -> int | None:
        return None if self.buffer_ is None else int(self.buffer_.shape[0])

    def connect(self, *children):
        """Connect the source of new points (one module; connecting another later keeps the buffer,
        so a new :class:`~serket_pyro.Observation` per time step may be connected each time)."""
        if len(children) != 1:
            raise ValueError(f"{self.name}: Buffer takes one child, got {len(children)}")
        return super().connect(*children)

    def _read_inputs(self):
        return self.get_observations()[0].value

    def _infer(self, new, backward) -> None:
        new = new.to(torch.float64)
        old = self.buffer_
        if old is not None and old.shape[1] != new.shape[1]:  # pad the narrower to the wider
            D = max(old.shape[1], new.shape[1])
            old = torch.nn.functional.pad(old, (0, D - old.shape[1]))
            new = torch.nn.functional.pad(new, (0, D - new.shape[1]))
        data = new if old is None else torch.cat([old, new])
        if self.size > 0:
            data = data[-self.size:]
        self.buffer_ = data

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The base's (messages) plus ``history/buffer``: outside ``state/``, which is what a
        graph loaded without its messages (recognition) reads."""
        out = super().full_state_dict()
        if self.buffer_ is not None:
            out["history/buffer"] = self.buffer_.detach().cpu().clone()
        return out

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`full_state_dict`; the history is checked to be finite ``(N, D)``."""
        super().load_full_state_dict({k: v for k, v in state.items() if not k.startswith("history/")})
        buf = state.get("history/buffer")
        if buf is not None:
            buf = torch.as_tensor(buf, dtype=torch.float64)
            if buf.dim() != 2 or not bool(torch.isfinite(buf).all()):
                raise ValueError(f"{self.name}: the saved buffer must be finite (N, D), got shape {tuple(buf.shape)}")
            self.buffer_ = buf

    def _recognise(self, new, backward) -> None:
        self._infer(new, backward)  # the buffer grows in both modes

    def _forward_message(self, new, backward):
        return PointMessage(self.buffer_)

    def _write_outputs(self, writer, new, backward) -> None:
        writer.savetxt(f"size_{self.mode}.txt", [len(self.buffer_)], fmt="%d")
