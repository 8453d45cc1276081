"""Atomic writing of module outputs.

Every file is written to a temporary file in the destination folder and then moved into place
with :func:`os.replace`, which is atomic on POSIX and Windows: an interrupted run leaves either the
old file or the new one, never half of one.

A module's folder holds one subfolder per outer iteration (``000``, ``001``, ...) plus a copy of
the latest files at the top, where the Serket tutorials look for them (``class_learn.txt`` ...).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile

import numpy as np
import torch

__all__ = ["atomic_write_bytes", "atomic_savetxt", "atomic_save_json", "atomic_torch_save",
           "atomic_savez", "OutputWriter", "get_output_root", "set_output_root"]

_OUTPUT_ROOT: str | None = None


def set_output_root(path) -> None:
    """Set the folder under which modules write their ``module%03d_<name>`` folders.

    ``None`` restores the default: the current working directory at write time (as the original).
    """
    global _OUTPUT_ROOT
    _OUTPUT_ROOT = None if path is None else os.fspath(path)


def get_output_root() -> str:
    return _OUTPUT_ROOT if _OUTPUT_ROOT is not None else os.getcwd()


@contextlib.contextmanager
def _atomic_open(path, mode="wb"):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with _atomic_open(path, "wb") as f:
        f.write(data)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def format_txt(array, fmt=None) -> bytes:
    """``np.savetxt`` output as bytes; integers are written as integers, floats with ``%.8g``."""
    a = _to_numpy(array)
    if a.ndim == 0:
        a = a.reshape(1)
    if fmt is None:
        fmt = "%d" if np.issubdtype(a.dtype, np.integer) or a.dtype == bool else "%.8g"
    buf = io.BytesIO()
    np.savetxt(buf, a, fmt=fmt)
    return buf.getvalue()


def atomic_savetxt(path, array, fmt=None) -> None:
    """``np.savetxt`` made atomic."""
    atomic_write_bytes(path, format_txt(array, fmt))


def atomic_save_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_savez(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: _to_numpy(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path, state: dict) -> None:
    """Save a dict of tensors (a state dict) so that ``torch.load(weights_only=True)`` reads it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


class OutputWriter:
    """Writes one module's files: ``<root>/<name>/<iteration:03d>/file`` and ``<root>/<name>/file``.

    Args:
        folder: the module's folder.
        iteration: outer-iteration number, or ``None`` to write only the top-level copy.
    """

    def __init__(self, folder, iteration: int | None):
        self.folder = os.fspath(folder)
        self.iteration = iteration

    def _paths(self, filename):
        paths = []
        if self.iteration is not None:
            paths.append(os.path.join(self.folder, f"{self.iteration:03d}", filename))
        paths.append(os.path.join(self.folder, filename))
        return paths

    def write_bytes(self, filename, data: bytes) -> None:
        """Write already formatted content."""
        for p in self._paths(filename):
            atomic_write_bytes(p, data)

    def savetxt(self, filename, array, fmt=None) -> None:
        self.write_bytes(filename, format_txt(array, fmt))

    def save_json(self, filename, obj) -> None:
        for p in self._paths(filename):
            atomic_save_json(p, obj)

    def savez(self, filename, **arrays) -> None:
        for p in self._paths(filename):
            atomic_savez(p, **arrays)

    def torch_save(self, filename, state: dict) -> None:
        for p in self._paths(filename):
            atomic_torch_save(p, state)
