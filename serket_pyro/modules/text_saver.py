"""TextSaver: pass a message through and write it to a text file (the original ``serket.utils.TextSaver``)."""

from __future__ import annotations

import os

import numpy as np

from ..module import Module
from ..output import atomic_savetxt

__all__ = ["TextSaver"]


class TextSaver(Module):
    """Write the child's forward message to ``filename`` at every update, and pass messages through.

    The forward message is the child's, unchanged; the parents' message goes down to the child
    unchanged.  The file holds the message's array view (class probabilities, Gaussian means or
    the points, ``(N, D)`` rows) in ``np.savetxt`` format, written atomically.

    Parameters
    ----------
    filename : str or os.PathLike
        The text file (its folder must exist; relative paths are relative to the working folder,
        as in the original).
    name : str, default "TextSaver"
        Short name (the original's).
    fmt : str, default "%.18e"
        ``np.savetxt`` format.
    """

    _fitted = ()
    test_args = {"filename": os.devnull}

    def __init__(self, filename, name: str = "TextSaver", fmt: str = "%.18e"):
        super().__init__(name)
        if not isinstance(filename, (str, os.PathLike)) or not os.fspath(filename):
            raise ValueError(f"{self.name}: filename must be a path, got {filename!r}")
        folder = os.path.dirname(os.path.abspath(os.fspath(filename)))
        if not os.path.isdir(folder):
            raise ValueError(f"{self.name}: the folder of {os.fspath(filename)} does not exist")
        self.filename = os.fspath(filename)
        if not isinstance(fmt, str):
            raise ValueError(f"{self.name}: fmt must be a np.savetxt format string, got {fmt!r}")
        self.fmt = fmt

    def _read_inputs(self):
        if len(self.children) != 1:
            raise ValueError(f"{self.name}: TextSaver takes one child, got {len(self.children)}")
        return self.get_observations()[0]

    def _infer(self, msg, backward) -> None:
        """Nothing to learn."""

    def _recognise(self, msg, backward) -> None:
        """Nothing learned."""

    def _forward_message(self, msg, backward):
        return msg

    def _backward_messages(self, msg, backward) -> list:
        return [backward]

    def _write_outputs(self, writer, msg, backward) -> None:
        writer.savetxt(f"data_{self.mode}.txt", np.asarray(msg), fmt=self.fmt)  # this iteration's copy
        if self.filename != os.devnull:
            atomic_savetxt(self.filename, np.asarray(msg), fmt=self.fmt)
