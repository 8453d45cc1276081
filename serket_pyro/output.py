"""Atomic writing of module outputs.

Every file is written to a temporary file in the destination folder and then moved into place
with :func:`os.replace`, which is atomic on POSIX and Windows: an interrupted run leaves either the
old file or the new one, never half of one.

A module's folder holds one subfolder per outer iteration (``000``, ``001``, ...) plus a copy of
the latest files at the top, where the Serket tutorials look for them (``class_learn.txt`` ...).
A module's first update in learn mode removes the iteration folders an earlier run left there
(:func:`remove_stale_iterations`), and every metrics file names its run (:func:`get_run_id`), so
the folder never mixes two runs.  An array of more than :func:`get_text_limit` values (the
MLDA's 3000 x 2400 word predictions: 80 MB as text) is written as ``.npy`` instead of ``.txt``
(same name otherwise), once, at the top of the module's folder; :func:`load_output_array` reads
either.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time

import numpy as np
import torch

from . import distributed as _dist

__all__ = ["atomic_write_bytes", "atomic_savetxt", "atomic_save_json", "atomic_torch_save",
           "atomic_savez", "OutputWriter", "get_output_root", "set_output_root", "get_run_id",
           "set_run_id", "new_run_id", "remove_stale_iterations", "get_text_limit", "set_text_limit",
           "load_output_array"]

_log = logging.getLogger(__name__)
_OUTPUT_ROOT: str | None = None
_RUN_ID: str | None = None
_RUN_ID_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ITERATION_DIR = re.compile(r"\d{3,}")
#: arrays with more values than this are written as .npy instead of text (None: always text)
_TEXT_LIMIT: int | None = 1 << 22


def get_text_limit() -> int | None:
    """The largest array (number of values) written as text; larger ones go to ``.npy``."""
    return _TEXT_LIMIT


def set_text_limit(n: int | None) -> None:
    """Write arrays of more than ``n`` values as ``.npy`` (default ``2**22``: 4.2 million values,
    about 40 MB of text); ``None`` writes every array as text, as the original did."""
    global _TEXT_LIMIT
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"text limit must be a non-negative int or None, got {n!r}")
    _TEXT_LIMIT = n


def load_output_array(folder, filename) -> np.ndarray | None:
    """A module's output array ``folder/filename`` (``x.txt``), or its ``.npy`` form when it was
    written as one (see :func:`set_text_limit`); ``None`` if neither exists."""
    path = os.path.join(os.fspath(folder), filename)
    stem, ext = os.path.splitext(path)
    if ext == ".txt" and os.path.isfile(stem + ".npy") and not os.path.islink(stem + ".npy"):
        return np.load(stem + ".npy", allow_pickle=False)
    if os.path.isfile(path):
        return np.loadtxt(path, ndmin=2)
    return None


def new_run_id() -> str:
    """A fresh run id: UTC start time and 6 random hex digits, e.g. ``20261201T011502Z-3fa9c1``
    (``secrets``, not the seeded generators, so it never changes a run's numbers)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def get_run_id() -> str:
    """The id of the current run (made on first use; :func:`set_run_id` starts another)."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = new_run_id()
    return _RUN_ID


def set_run_id(run_id: str | None) -> None:
    """Set the current run's id (a resumed run takes its checkpoint's); ``None``: a new one on
    next use.  Ids are 1-64 letters, digits, ``_ . -``."""
    global _RUN_ID
    if run_id is not None and not (isinstance(run_id, str) and _RUN_ID_FORM.fullmatch(run_id)):
        raise ValueError(f"run id must be 1-64 letters, digits, '_', '.' or '-', got {run_id!r}")
    _RUN_ID = run_id


def remove_stale_iterations(folder) -> list[str]:
    """Remove the iteration folders (``000``, ``001``, ...) under a module's ``folder``: called
    at the module's first update in learn mode, so a shorter run into the same folder does not
    leave the earlier run's later iterations behind.  Only folders named by digits that hold
    plain files are removed (never links or anything else); returns their names."""
    folder = os.fspath(folder)
    removed = []
    if not os.path.isdir(folder) or os.path.islink(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not _ITERATION_DIR.fullmatch(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if all(os.path.isfile(os.path.join(path, f)) and not os.path.islink(os.path.join(path, f))
               for f in os.listdir(path)):
            shutil.rmtree(path)
            removed.append(name)
    if removed:
        _log.info("%s: removed %d iteration folder(s) of an earlier run", folder, len(removed))
    return removed


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


_RECOG_SUFFIX = "_recog"


class OutputWriter:
    """Writes one module's files: ``<root>/<name>/<iteration:03d>/file`` and ``<root>/<name>/file``.

    Args:
        folder: the module's folder.
        iteration: outer-iteration number, or ``None`` to write only the top-level copy.
        original_recog: also write each ``<stem>_recog.<ext>`` file as ``<folder>/recog/<stem>.<ext>``,
            the folder and names the original Serket's recognition wrote (``module001_gmm/recog/class.txt``).
    """

    def __init__(self, folder, iteration: int | None, original_recog: bool = False):
        self.folder = os.fspath(folder)
        self.iteration = iteration
        self.original_recog = original_recog

    def _paths(self, filename):
        """Where ``filename`` goes; the top-level copy last (large arrays are written only there)."""
        paths = []
        if self.iteration is not None:
            paths.append(os.path.join(self.folder, f"{self.iteration:03d}", filename))
        stem, ext = os.path.splitext(filename)
        if self.original_recog and stem.endswith(_RECOG_SUFFIX):
            paths.append(os.path.join(self.folder, "recog", stem[:-len(_RECOG_SUFFIX)] + ext))
        paths.append(os.path.join(self.folder, filename))
        return paths

    def write_bytes(self, filename, data: bytes) -> None:
        """Write already formatted content (in a sharded fit: rank 0 only)."""
        if not _dist.is_writer():
            return
        for p in self._paths(filename):
            atomic_write_bytes(p, data)

    def savetxt(self, filename, array, fmt=None) -> None:
        """``np.savetxt`` of ``array``, or, when it has more than :func:`get_text_limit` values,
        ``np.save`` to ``<stem>.npy`` at the top of the module's folder only (the latest update's;
        a derived array such as the MLDA's predictions, 58 MB, is not kept per iteration).  A
        ``.txt`` of the same name is then removed, and the other way round, so a folder never
        holds both.  In a sharded fit (:mod:`serket_pyro.distributed`) every rank calls it and rank 0
        writes the whole array: the blocks of a per-point array in rank order."""
        a = _dist.gather_output(_to_numpy(array))
        if a is None:  # not rank 0
            return
        stem, ext = os.path.splitext(filename)
        big = _TEXT_LIMIT is not None and ext == ".txt" and a.size > _TEXT_LIMIT
        buf = io.BytesIO()
        if big:
            np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
        data, name, other = ((buf.getvalue(), stem + ".npy", filename) if big
                             else (format_txt(a, fmt), filename, stem + ".npy"))
        for p in self._paths(name)[-1:] if big else self._paths(name):
            atomic_write_bytes(p, data)
        if ext == ".txt":
            for p in self._paths(other):
                if os.path.isfile(p) and not os.path.islink(p):
                    os.unlink(p)

    def save_json(self, filename, obj) -> None:
        if not _dist.is_writer():
            return
        for p in self._paths(filename):
            atomic_save_json(p, obj)

    def savez(self, filename, **arrays) -> None:
        if not _dist.is_writer():
            return
        for p in self._paths(filename):
            atomic_savez(p, **arrays)

    def torch_save(self, filename, state: dict) -> None:
        if not _dist.is_writer():
            return
        for p in self._paths(filename):
            atomic_torch_save(p, state)
