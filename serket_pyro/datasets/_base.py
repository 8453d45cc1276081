"""Plumbing shared by the data sets: where files are looked for, download, digest, errors, records.

Each data set lives in its own module of this package (:mod:`.tutorial`, :mod:`.hmm_toy`, ...)
and declares one :class:`DataFile`: the ``.npz`` file name, the arrays it must hold, the SHA-256
of those arrays, the upstream sources and the converter from the upstream format.  This module
does everything else, the same way for every file:

1. look for the file in the directory given as ``root=``, then in ``$SERKET_PYRO_DATA``, then in
   the user cache folder (:func:`search_locations`);
2. read it without pickle and check array names, dtypes and shapes (:func:`read_npz`; a corrupt
   or truncated file raises :class:`DatasetCorruptError` naming it);
3. when it is found nowhere and ``download=True``: fetch the public originals
   (:func:`_download`, looked up here at call time so that tests can replace it), convert them,
   check the digest of the converted arrays (:func:`array_digest`) and only then write the file,
   atomically, into the cache folder (:func:`download_and_convert`).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

#: Environment variable naming a directory that holds the ``.npz`` files.
ENV_VAR = "SERKET_PYRO_DATA"

#: folder of the original Serket examples on GitHub (raw files)
SERKET_RAW = "https://github.com/naka-lab/Serket/raw/master/examples"

# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


class DatasetError(Exception):
    """Base class of every error raised by this module."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data file is in none of the searched places and could not be fetched."""


class DatasetCorruptError(DatasetError, ValueError):
    """A data file (or a downloaded original) is truncated, corrupt or malformed."""


class DatasetChecksumError(DatasetCorruptError):
    """Arrays converted from a download do not match the recorded SHA-256 digest."""


# --------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a set of named arrays, independent of the ``.npz`` container.

    The digest covers, for every array in sorted name order, the name, the
    dtype (``dtype.str``, little-endian), the shape and the C-ordered bytes.
    It therefore does not depend on zip compression, timestamps or member
    order, only on the array contents.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        h.update(name.encode("utf-8") + b"\0")
        h.update(a.dtype.str.encode("ascii") + b"\0")
        h.update(repr(tuple(int(s) for s in a.shape)).encode("ascii") + b"\0")
        h.update(a.tobytes(order="C"))
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------
# the description of one data file
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One upstream file: the local name it is saved under and candidate URLs, tried in order."""

    local_name: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class DataFile:
    """Everything the plumbing needs to know about one ``.npz`` data file.

    Attributes
    ----------
    filename : str
        Name of the ``.npz`` file in the searched directories (e.g. ``"mnist.npz"``).
    description : str
        Human-readable name, used in error messages.
    layout : dict
        Array name -> ``(dtype string, shape)`` the file must hold exactly.
    sha256 : str
        :func:`array_digest` of the arrays, recorded from the reference file.
    sources : tuple of Source
        Upstream files fetched, in order, when the file is missing (empty: cannot be fetched).
    convert : callable or None
        ``convert({local_name: path}) -> {array name: array}`` from the fetched sources.
    """

    filename: str
    description: str
    layout: Mapping[str, tuple[str, tuple[int, ...]]]
    sha256: str
    sources: tuple[Source, ...] = ()
    convert: Callable[[Mapping[str, Path]], dict] | None = None


#: SHA-256 of the converted arrays of each registered file (see :func:`array_digest`),
#: computed from the reference files of the project's shared data directory.
ARRAY_SHA256: dict[str, str] = {}

#: every registered data file by file name
FILES: dict[str, DataFile] = {}


def register(spec: DataFile) -> DataFile:
    """Record ``spec`` in :data:`FILES` and its digest in :data:`ARRAY_SHA256`; returns it."""
    FILES[spec.filename] = spec
    ARRAY_SHA256[spec.filename] = spec.sha256
    return spec


# --------------------------------------------------------------------------
# result records
# --------------------------------------------------------------------------


class Record:
    """Read-only, dict-like access to the fields of a data record."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def as_dict(self) -> dict:
        """The fields as a plain ``dict``."""
        return {k: getattr(self, k) for k in self.keys()}


def split_by_lengths(flat: np.ndarray, lengths: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Split ``flat`` along axis 0 into consecutive pieces of the given lengths.

    Returns a list of ``len(lengths)`` views; piece ``i`` has ``lengths[i]``
    rows.  Raises ``ValueError`` when the lengths do not add up to ``len(flat)``.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError("lengths must be a 1-D array of non-negative integers")
    if int(lengths.sum()) != len(flat):
        raise ValueError(f"lengths add up to {int(lengths.sum())} but the array has {len(flat)} rows")
    if len(lengths) == 0:
        return []
    return np.split(flat, np.cumsum(lengths)[:-1])


def check_split(split: str) -> str:
    """``split`` if it is ``"train"`` or ``"test"``, else a ``ValueError``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


# --------------------------------------------------------------------------
# locating files
# --------------------------------------------------------------------------


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/serket_pyro`` or ``~/.cache/serket_pyro``."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "serket_pyro"


def search_locations(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The directories searched for data files, in order, as ``(label, path)`` pairs."""
    locs: list[tuple[str, Path]] = []
    if root is not None:
        locs.append(("root= argument", Path(root).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        locs.append((f"{ENV_VAR} environment variable", Path(env).expanduser()))
    locs.append(("user cache folder", cache_dir()))
    return locs


def find_data_file(filename: str, root: str | os.PathLike | None = None) -> Path | None:
    """Path of ``filename`` in the first searched directory that has it, else ``None``."""
    for _, d in search_locations(root):
        p = d / filename
        if p.is_file():
            return p
    return None


def _how_to_provide(filename: str) -> str:
    return (
        f"To provide it, either set the {ENV_VAR} environment variable to a directory "
        f"containing {filename}, or pass root=<that directory> to the loader, or place "
        f"the file in the cache folder {cache_dir()} (the loaders download it there "
        f"themselves when called with download=True and the network is reachable)."
    )


def _not_found_message(spec: DataFile, root, reason: str) -> str:
    filename = spec.filename
    lines = [f"Data file {filename!r} ({spec.description}) was not found. Looked in:"]
    for label, d in search_locations(root):
        lines.append(f"  - {d / filename}  ({label})")
    if not os.environ.get(ENV_VAR):
        lines.append(f"  ({ENV_VAR} is not set)")
    lines.append(reason)
    lines.append(_how_to_provide(filename))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# reading and checking .npz files
# --------------------------------------------------------------------------


def check_layout(spec: DataFile, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Raise :class:`DatasetCorruptError` unless ``arrays`` hold exactly ``spec.layout``."""
    layout = spec.layout
    missing = sorted(set(layout) - set(arrays))
    extra = sorted(set(arrays) - set(layout))
    if missing or extra:
        raise DatasetCorruptError(
            f"{where}: expected arrays {sorted(layout)}, missing {missing}, unexpected {extra}"
        )
    for name, (dtype, shape) in layout.items():
        a = arrays[name]
        if a.dtype.str != dtype or tuple(a.shape) != shape:
            raise DatasetCorruptError(
                f"{where}: array {name!r} has dtype {a.dtype.str} shape {tuple(a.shape)}, "
                f"expected dtype {dtype} shape {shape}"
            )


def read_npz(path: Path, spec: DataFile) -> dict[str, np.ndarray]:
    """Load every array of ``path`` (no pickle) and check names, dtypes and shapes against ``spec``."""
    filename = spec.filename
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            arrays = {k: z[k] for k in z.files}
    except DatasetError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError, OSError ...
        raise DatasetCorruptError(
            f"Data file {path} is corrupt or truncated ({type(exc).__name__}: {exc}). "
            f"Delete it and provide a good copy. " + _how_to_provide(filename)
        ) from exc
    try:
        check_layout(spec, arrays, f"Data file {path} is corrupt or not the expected file")
    except DatasetCorruptError as exc:
        raise DatasetCorruptError(f"{exc}. Delete it and provide a good copy. " + _how_to_provide(filename)) from None
    return arrays


def load_arrays(spec: DataFile, root, download: bool) -> dict[str, np.ndarray]:
    """The checked arrays of ``spec``'s file: found in the search order, else fetched (``download``)."""
    path = find_data_file(spec.filename, root)
    if path is None:
        if not download:
            raise DatasetNotFoundError(
                _not_found_message(spec, root, "Downloading is disabled (download=False).")
            )
        path = download_and_convert(spec, root)
    return read_npz(path, spec)


# --------------------------------------------------------------------------
# downloading
# --------------------------------------------------------------------------


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _download(url: str, dest: str | os.PathLike, desc: str | None = None) -> None:
    """Fetch ``url`` into ``dest`` with a progress bar; atomic (temp file + ``os.replace``).

    Raises ``urllib.error.URLError`` / ``OSError`` on network failure.
    """
    dest = Path(dest)
    req = urllib.request.Request(url, headers={"User-Agent": "serket_pyro-datasets"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name)
            except ImportError:  # pragma: no cover
                bar = None
            try:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and out.tell() != total:
                raise urllib.error.URLError(f"incomplete download: {out.tell()} of {total} bytes")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fetch_sources(spec: DataFile, root, workdir: Path) -> dict[str, Path]:
    """Download every source of ``spec`` into ``workdir`` (each from its first URL that answers)."""
    if not spec.sources:
        raise DatasetNotFoundError(_not_found_message(spec, root, "This file has no public source to download."))
    got: dict[str, Path] = {}
    for src in spec.sources:
        dest = workdir / src.local_name
        errors = []
        for url in src.urls:
            try:
                _download(url, dest, desc=src.local_name)
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
                errors.append(f"    {url}: {type(exc).__name__}: {exc}")
        else:
            reason = (
                "Downloading the public original failed (no network access?):\n"
                + "\n".join(errors)
            )
            raise DatasetNotFoundError(_not_found_message(spec, root, reason))
        got[src.local_name] = dest
    return got


def download_and_convert(spec: DataFile, root) -> Path:
    """Fetch, convert, verify the digest, then atomically write into the cache folder."""
    filename = spec.filename
    with tempfile.TemporaryDirectory(prefix="serket_pyro_dl_") as tmp:
        files = fetch_sources(spec, root, Path(tmp))
        try:
            arrays = spec.convert(files)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetCorruptError(
                f"Could not convert the downloaded original of {filename!r} "
                f"({type(exc).__name__}: {exc}); nothing was cached. " + _how_to_provide(filename)
            ) from exc
    check_layout(spec, arrays, f"Converted download of {filename!r}")
    digest = array_digest(arrays)
    expected = spec.sha256
    if digest != expected:
        raise DatasetChecksumError(
            f"The arrays converted from the downloaded original of {filename!r} have SHA-256 "
            f"{digest}, expected {expected}: the upstream files changed or the download is "
            f"corrupt. Nothing was cached. " + _how_to_provide(filename)
        )
    dest_dir = cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    fd, tmpname = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmpname, _umask_mode())
        os.replace(tmpname, dest)
    except BaseException:
        try:
            os.unlink(tmpname)
        except OSError:
            pass
        raise
    return dest


# --------------------------------------------------------------------------
# helpers of the converters (upstream formats -> arrays)
# --------------------------------------------------------------------------


def as_text(x: str | bytes) -> str:
    """``x`` as ``str`` (UTF-8 decoded when bytes)."""
    return x.decode("utf-8") if isinstance(x, (bytes, bytearray)) else x


def loadtxt(text: str | bytes, what: str, ndmin: int = 2) -> np.ndarray:
    """Whitespace-separated numbers of ``text`` as float64; a parse error names the file ``what``."""
    try:
        return np.loadtxt(io.StringIO(as_text(text)), dtype=np.float64, ndmin=ndmin)
    except ValueError as exc:
        raise DatasetCorruptError(f"{what}: cannot parse numbers ({exc})") from exc


def to_int64(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as int64, refusing values that are not integers (within 1e-6)."""
    r = np.rint(x)
    if not np.all(np.abs(x - r) < 1e-6):
        raise DatasetCorruptError(f"{what}: expected integer values")
    return r.astype(np.int64)


def zip_member(zf: zipfile.ZipFile, basename: str) -> str:
    """The shortest member path of ``zf`` whose base name is ``basename`` (``__MACOSX`` skipped)."""
    names = [
        n
        for n in zf.namelist()
        if n.rsplit("/", 1)[-1] == basename and not n.startswith("__MACOSX")
    ]
    if not names:
        raise DatasetCorruptError(f"the archive has no member named {basename!r}")
    return min(names, key=len)
