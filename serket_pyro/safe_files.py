"""Reading files that someone else may have written: saved graphs and checkpoints.

A saved graph or a checkpoint folder may come from another machine or another person, so nothing
in it is trusted before it is checked.  This module holds the one mechanism for each kind of
problem, used by every reader and writer of :mod:`serket_pyro.persistence` and
:mod:`serket_pyro.driver`:

* :func:`safe_name` / :func:`resolve_inside`: a module name or a file name recorded in a JSON
  file must match a strict pattern (letters, digits, ``_``, ``-``, ``.``; no separator, not
  starting with a dot, at most 100 characters) and, joined to its folder, must stay inside that
  folder once symbolic links are resolved.  Module names become output folder names, so a name
  like ``../../escaped`` would otherwise write outside the output folder.
* :func:`read_json`: a JSON file of at most :data:`MAX_JSON_BYTES`, not a symbolic link; a
  deeply nested or malformed file gives ``ValueError``, not ``RecursionError``.
* :func:`read_tensor_file`: a tensor file whose size and SHA-256 were recorded when it was
  written (:func:`tensor_file_bytes`).  It must be a regular file, not a symbolic link, of exactly
  the recorded size (checked before reading, so ``/dev/zero`` or a huge file cannot exhaust
  memory) and at most :data:`MAX_STATE_BYTES`; its SHA-256, computed piece by piece, must match
  before the file is read into memory; it is then read with
  ``torch.load(weights_only=True)`` and must be a flat ``dict[str, Tensor]``.  A pickled Python
  object in it gives a ``ValueError`` saying so.

* :func:`check_loaded_probabilities` / :func:`check_loaded_finite`: what the modules'
  ``load_state_dict`` check in the parameters they load (a checksum proves only that a file is
  unchanged, not that its author wrote valid numbers).

Every error is a ``ValueError`` naming the file or module and the problem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import stat

import torch

__all__ = ["MAX_JSON_BYTES", "MAX_STATE_BYTES", "check_loaded_finite", "check_loaded_probabilities",
           "read_json", "read_tensor_file", "resolve_inside", "safe_name",
           "tensor_file_bytes"]

#: largest JSON file read (a graph description or a checkpoint's metrics history is far smaller)
MAX_JSON_BYTES = 64 * 2**20
#: largest tensor file read (the tutorial graphs' states are a few MB)
MAX_STATE_BYTES = 4 * 2**30

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


def safe_name(name, what: str, where) -> str:
    """Return ``name`` if it is a safe single path component, else raise ``ValueError``.

    Parameters
    ----------
    name : object
        The value read from a file (a module name, a file name).
    what : str
        What the name is, for the message (``"module name"``).
    where : str or os.PathLike
        The file the name was read from, for the message.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    ValueError
        ``name`` is not a string of letters, digits, ``_``, ``-`` and ``.`` (not starting with a
        dot, at most 100 characters): e.g. ``"../x"``, ``"/abs"`` or ``""``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{os.fspath(where)} names the {what} {name!r}, which is not a plain name (letters, "
                         "digits, '_', '-', '.'; no path separator, not starting with '.'): refused")
    return name


def resolve_inside(folder, name, what: str, where) -> str:
    """``folder/name`` after checking that ``name`` is safe and the path stays inside ``folder``.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder the file must be in.
    name : object
        The file or folder name read from ``where`` (checked with :func:`safe_name`).
    what : str
        What the name is, for the message.
    where : str or os.PathLike
        The file the name was read from, for the message.

    Returns
    -------
    str
        ``os.path.join(folder, name)``.

    Raises
    ------
    ValueError
        The name is not safe, or the path leads outside ``folder`` through a symbolic link.
    """
    safe_name(name, what, where)
    folder = os.fspath(folder)
    path = os.path.join(folder, name)
    real_folder = os.path.realpath(folder)
    if os.path.dirname(os.path.realpath(path)) != real_folder:
        raise ValueError(f"{path} ({what} named in {os.fspath(where)}) leads outside {folder}: refused")
    return path


def _open_regular(path, what: str):
    """An open binary file object for ``path``, refusing symbolic links and non-regular files."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ValueError(f"{path} not found") from None
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{path} is a symbolic link; a {what} must be a regular file: refused")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file; a {what} must be one: refused")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e}") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):  # replaced between lstat and open
        f.close()
        raise ValueError(f"{path} is not a regular file; a {what} must be one: refused")
    return f, st.st_size


def read_json(path, what: str = "JSON file", max_bytes: int | None = None):
    """Parse a JSON file that may come from someone else.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    what : str
        What the file is, for the messages.
    max_bytes : int, optional
        Largest accepted size (default :data:`MAX_JSON_BYTES`).

    Returns
    -------
    object
        The parsed JSON value.

    Raises
    ------
    ValueError
        Missing, a symbolic link, not a regular file, larger than ``max_bytes``, not UTF-8, not
        JSON, or nested too deeply to parse.
    """
    max_bytes = MAX_JSON_BYTES if max_bytes is None else max_bytes
    f, size = _open_regular(path, what)
    with f:
        if size > max_bytes:
            raise ValueError(f"{os.fspath(path)} is {size} bytes, more than the {max_bytes} accepted for a {what}: "
                             "refused")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{os.fspath(path)} is larger than the {max_bytes} bytes accepted for a {what}: refused")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{os.fspath(path)} is corrupt or truncated: {e}") from None
    except RecursionError:
        raise ValueError(f"{os.fspath(path)} is corrupt: nested too deeply to be a {what}") from None


def tensor_file_bytes(state: dict) -> tuple[bytes, dict]:
    """Serialise a flat dict of tensors and describe it for :func:`read_tensor_file`.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        What to save.

    Returns
    -------
    data : bytes
        The :func:`torch.save` bytes (readable with ``weights_only=True``).
    record : dict
        ``{"state_sha256": hex digest, "state_bytes": size}``, to be stored in the JSON file
        written after ``data``.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    return data, {"state_sha256": hashlib.sha256(data).hexdigest(), "state_bytes": len(data)}


def read_tensor_file(path, record: dict, where, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read a tensor file written with :func:`tensor_file_bytes`, checking it first.

    Parameters
    ----------
    path : str or os.PathLike
        The file (already resolved with :func:`resolve_inside`).
    record : dict
        The JSON content holding ``state_bytes`` and ``state_sha256``.
    where : str or os.PathLike
        The JSON file ``record`` was read from, for the messages.
    max_bytes : int, optional
        Largest accepted size (default :data:`MAX_STATE_BYTES`).

    Returns
    -------
    dict of str to torch.Tensor
        The tensors, on the CPU.

    Raises
    ------
    ValueError
        No size or checksum recorded; the file is missing, a symbolic link or not a regular file;
        its size differs from the recorded one or exceeds ``max_bytes`` (checked before reading);
        its SHA-256 differs; it holds pickled Python objects; it is not a flat dict of tensors.
    """
    path, where = os.fspath(path), os.fspath(where)
    max_bytes = MAX_STATE_BYTES if max_bytes is None else max_bytes
    expected, digest = record.get("state_bytes"), record.get("state_sha256")
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0 or not isinstance(digest, str):
        raise ValueError(f"{where} records no valid size and SHA-256 of {os.path.basename(path)} "
                         "(written by an older serket_pyro, or corrupt): refused")
    if expected > max_bytes:
        raise ValueError(f"{where} records {expected} bytes for {os.path.basename(path)}, more than the "
                         f"{max_bytes} accepted: refused")
    f, size = _open_regular(path, "tensor file")
    with f:
        if size != expected:
            raise ValueError(f"{path} is corrupt or truncated: it has {size} bytes, {where} records {expected}")
        h = hashlib.sha256()  # checked in 1 MiB pieces first: a wrong file never fills the memory
        for piece in iter(lambda: f.read(2**20), b""):
            h.update(piece)
        if h.hexdigest() != digest:
            raise ValueError(f"{path} is corrupt or truncated: its SHA-256 differs from the one recorded in {where}")
        f.seek(0)
        data = f.read(expected + 1)
    if len(data) != expected or hashlib.sha256(data).hexdigest() != digest:  # changed while being read
        raise ValueError(f"{path} is corrupt or truncated: its size or SHA-256 differs from the one recorded "
                         f"in {where} ({len(data)} bytes, expected {expected})")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():  # torch's refusal of a global: a pickled Python object
            raise ValueError(f"{path} holds pickled Python objects, not only tensors: refused "
                             "(nothing was unpickled)") from None
        raise ValueError(f"{path} is corrupt: {e}") from None
    except Exception as e:  # noqa: BLE001 - any other failure of the reader means a bad file
        raise ValueError(f"{path} is corrupt: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"{path} is corrupt: not a flat dict of tensors")
    return state


def check_loaded_probabilities(p: torch.Tensor, what: str, owner: str, atol: float = 1e-6) -> torch.Tensor:
    """Check loaded probabilities: finite, non-negative, each row (last axis) summing to 1.

    Parameters
    ----------
    p : torch.Tensor
        The probabilities (rows on the last axis).
    what : str
        Their state-dict key, for the message.
    owner : str
        The module's name, for the message.
    atol : float
        Tolerance on the row sums.

    Returns
    -------
    torch.Tensor
        ``p`` unchanged.

    Raises
    ------
    ValueError
        NaN or infinite entries, negative entries, or a row not summing to 1.
    """
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"{owner}: loaded {what} contains NaN or infinite values")
    if bool((p < 0).any()):
        raise ValueError(f"{owner}: loaded {what} contains negative probabilities")
    if p.numel() and not torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype), rtol=0, atol=atol):
        raise ValueError(f"{owner}: loaded {what} is not normalised (its rows must sum to 1)")
    return p


def check_loaded_finite(state: dict, owner: str, skip=()) -> None:
    """Check that every floating-point tensor of a loaded state dict is finite.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        The state dict.
    owner : str
        The module's name, for the message.
    skip : iterable of str
        Keys that may hold NaN (e.g. a log-likelihood not computed yet).

    Raises
    ------
    ValueError
        Naming the first entry with NaN or infinite values.
    """
    for k, v in state.items():
        if k in skip or not isinstance(v, torch.Tensor) or not v.is_floating_point():
            continue
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{owner}: loaded {k} contains NaN or infinite values")
