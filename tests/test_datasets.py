"""Tests of serket_pyro.datasets: shared-file loading, conversions, download path, errors."""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from serket_pyro import datasets as D
from serket_pyro.datasets import _base

PROJECT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SERKET_PYRO_DATA", PROJECT.parent / "shared" / "data"))

_REAL_DOWNLOAD = _base._download  # before the autouse fixture replaces it

needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir(),
    reason=f"shared data directory {DATA_DIR} is absent (set SERKET_PYRO_DATA to the folder with the .npz files)",
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache folder and no network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def no_network(url, dest, desc=None):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(_base, "_download", no_network)
    return tmp_path / "xdg" / "serket_pyro"


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA_DIR / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _fake_download(files: dict[str, bytes], calls: list | None = None):
    """A stand-in for _base._download serving ``files`` by URL basename."""

    def fetch(url, dest, desc=None):
        if calls is not None:
            calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        Path(dest).write_bytes(files[name])

    return fetch


def _savetxt(arr, fmt="%.18e") -> bytes:
    s = io.StringIO()
    np.savetxt(s, arr, fmt=fmt)
    return s.getvalue().encode()


def _wav(samples, rate=8000) -> bytes:
    data = np.asarray(samples, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _idx(arr: np.ndarray, compress: bool = True) -> bytes:
    raw = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    return gzip.compress(raw, compresslevel=1) if compress else raw


# ---------------------------------------------------------------------------
# the shared files through the loaders
# ---------------------------------------------------------------------------


@needs_data
def test_tutorial():
    t = D.load_tutorial(root=DATA_DIR)
    assert t.images.shape == (3000, 784) and t.images.dtype == np.float32
    assert t.images.min() >= 0.0 and t.images.max() <= 1.0 and t.images.max() == 1.0
    assert t.hac.shape == (3000, 2400) and t.hac.dtype == np.float64
    assert (t.hac >= 0).all() and np.array_equal(t.hac, np.round(t.hac)) and t.hac.sum(1).min() > 0
    assert t.category.dtype == np.int64 and np.array_equal(t.category, np.arange(3000) % 10)
    assert set(t.keys()) == {"images", "hac", "category"} and t["hac"] is t.hac


@needs_data
def test_hmm_toy_and_objects():
    h = D.load_hmm_toy(root=DATA_DIR)
    assert h.data.shape == (100, 2) and h.data.dtype == np.float64
    assert np.array_equal(h.category, np.arange(100) % 4) and h.category.dtype == np.int64
    o = D.load_objects(root=DATA_DIR)
    shapes = {"dsift": (50, 500), "mfcc": (50, 50), "tactile": (50, 15), "angle": (50, 70)}
    for k, s in shapes.items():
        a = getattr(o, k)
        assert a.shape == s and a.dtype == np.float64 and (a >= 0).all()
    for k in ("object_category", "motion_category"):
        c = getattr(o, k)
        assert c.shape == (50,) and c.dtype == np.int64 and set(c.tolist()) == set(range(10))


@needs_data
@pytest.mark.parametrize("split,n_utt,n_frames,n_spk", [("train", 6600, 263256, 66), ("test", 2200, 87063, 22)])
def test_spoken_arabic_digit(split, n_utt, n_frames, n_spk):
    s = D.load_spoken_arabic_digit(split, root=DATA_DIR)
    assert s.split == split
    assert s.frames.shape == (n_frames, 13) and s.frames.dtype == np.float32
    assert np.isfinite(s.frames).all()
    for a in (s.lengths, s.digit, s.speaker):
        assert a.shape == (n_utt,) and a.dtype == np.int64
    assert s.lengths.sum() == n_frames and s.lengths.min() > 0
    assert np.array_equal(s.digit, np.repeat(np.arange(10), n_utt // 10))
    assert np.array_equal(s.speaker, np.tile(np.repeat(np.arange(n_spk), 10), 10))
    utt = s.utterances()
    assert len(utt) == n_utt and utt[1].shape == (s.lengths[1], 13)
    assert np.array_equal(utt[-1], s.frames[s.offsets[-1]:])


@needs_data
def test_fsdd():
    f = D.load_fsdd(root=DATA_DIR)
    assert f.audio.shape == (10498424,) and f.audio.dtype == np.int16
    assert f.sample_rate == 8000
    assert f.speaker_names == ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
    for a in (f.lengths, f.digit, f.speaker, f.take):
        assert a.shape == (3000,) and a.dtype == np.int64
    assert f.lengths.sum() == len(f.audio)
    assert np.array_equal(np.bincount(f.digit), [300] * 10)
    assert np.array_equal(np.bincount(f.speaker), [500] * 6)
    assert f.take.min() == 0 and f.take.max() == 49 and f.is_test.sum() == 300
    recs = f.recordings()
    assert len(recs) == 3000 and len(recs[7]) == f.lengths[7] and recs[7].dtype == np.int16


@needs_data
def test_mnist():
    tr = D.load_mnist("train", root=DATA_DIR)
    assert tr.images.shape == (60000, 784) and tr.images.dtype == np.uint8
    assert tr.labels.shape == (60000,) and tr.labels.dtype == np.int64
    assert tr.labels[:5].tolist() == [5, 0, 4, 1, 9]  # official order
    te = D.load_mnist("test", flatten=False, root=DATA_DIR)
    assert te.images.shape == (10000, 28, 28) and te.labels[:3].tolist() == [7, 2, 1]
    x = te.as_float()
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    with pytest.raises(ValueError, match="split"):
        D.load_mnist("validation", root=DATA_DIR)


def test_embedded_subset():
    import serket_pyro.data

    shipped = Path(serket_pyro.data.__file__).parent  # the installed package's, not the source tree's
    path = shipped / "mnist_subset.npz"
    assert path.stat().st_size < 2_000_000
    assert (shipped / "LICENSE-MNIST.txt").is_file()
    s = D.load_mnist_subset()
    assert s.images.shape == (3000, 784) and s.images.dtype == np.uint8
    assert s.category.shape == (3000,) and s.category.dtype == np.int64
    assert np.array_equal(s.category, np.arange(3000) % 10)
    assert s.as_float().max() == 1.0


@needs_data
def test_embedded_subset_matches_mnist():
    s = D.load_mnist_subset()
    m = _npz("mnist.npz")
    # row n = the (n // 10)-th training image of digit n % 10, in the official order
    idx = np.stack([np.flatnonzero(m["y_train"] == d)[:300] for d in range(10)], axis=1).reshape(-1)
    assert np.array_equal(m["y_train"][idx], s.category)
    assert m["x_train"][idx].reshape(3000, 784).tobytes() == s.images.tobytes()


@needs_data
def test_mmlda_chain():
    c = D.load_mmlda_chain(root=DATA_DIR)
    mods = c.modalities()
    assert len(mods) == 5 and mods[0] is c.data000 and mods[4] is c.data004
    for a in mods:
        assert a.shape == (50, 10) and a.dtype == np.int64 and (a.sum(1) == 1000).all()
    assert c.category.dtype == np.int64 and np.array_equal(np.bincount(c.category), [5] * 10)


@needs_data
def test_download_mmlda_chain_end_to_end(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    c = _npz("serket_mmlda_chain.npz")
    files = {f"data00{i}.txt": _savetxt(c[f"data00{i}"], "%d") for i in range(5)}
    files["data_category.txt"] = _savetxt(c["category"], "%d")
    monkeypatch.setattr(_base, "_download", _fake_download(files))
    got = D.load_mmlda_chain()
    assert all(np.array_equal(got[k], c[k]) for k in c)
    assert (_isolated_cache / "serket_mmlda_chain.npz").is_file()


def test_mmlda_chain_from_texts_small():
    data = {f"data00{i}": _savetxt(np.full((3, 2), i), "%d") for i in range(5)}
    a = D.mmlda_chain_from_texts(data, b"0\n1\n1\n")
    assert a["data003"].tolist() == [[3, 3]] * 3 and a["category"].tolist() == [0, 1, 1]
    assert a["data000"].dtype == np.int64 and set(a) == set(D.mmlda_chain.LAYOUT)
    with pytest.raises(D.DatasetCorruptError, match="number of documents"):
        D.mmlda_chain_from_texts(data, b"0\n1\n")
    with pytest.raises(D.DatasetCorruptError, match="missing modalities \\['data004'\\]"):
        D.mmlda_chain_from_texts({k: v for k, v in data.items() if k != "data004"}, b"0\n")


def test_one_module_per_data_set():
    """Each data file is declared once, by the module named after it, and every README file has one."""
    from serket_pyro.datasets import _base as base

    owners = {"serket_tutorial.npz": "tutorial", "serket_hmm_toy.npz": "hmm_toy",
              "serket_objects.npz": "objects", "serket_mmlda_chain.npz": "mmlda_chain",
              "spoken_arabic_digit.npz": "spoken_arabic_digit", "fsdd.npz": "fsdd",
              "mnist.npz": "mnist", "mnist_subset.npz": "mnist"}
    assert set(base.FILES) == set(owners) and base.ARRAY_SHA256 is D.ARRAY_SHA256
    for filename, module in owners.items():
        spec = base.FILES[filename]
        mod = getattr(D, module)
        assert spec in (getattr(mod, "FILE"), getattr(mod, "SUBSET_FILE", None))
        assert D.ARRAY_SHA256[filename] == spec.sha256
        assert (spec.convert is None) == (not spec.sources) == (filename == "mnist_subset.npz")
    if (DATA_DIR / "README.md").is_file():
        listed = set(re.findall(r"^\| `([a-z_]+\.npz)`", (DATA_DIR / "README.md").read_text(), re.M))
        assert listed and listed <= set(owners)


@needs_data
def test_shared_files_match_recorded_digests():
    for name in ("serket_hmm_toy.npz", "serket_objects.npz", "serket_tutorial.npz", "serket_mmlda_chain.npz"):
        assert D.array_digest(_npz(name)) == D.ARRAY_SHA256[name]


# ---------------------------------------------------------------------------
# look-up order and error messages
# ---------------------------------------------------------------------------


@needs_data
def test_lookup_order(tmp_path, monkeypatch, _isolated_cache):
    base = _npz("serket_hmm_toy.npz")
    dirs = {}
    for i, name in enumerate(("root", "env", "cache")):
        d = _isolated_cache if name == "cache" else tmp_path / name
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "serket_hmm_toy.npz", data=base["data"] + i, category=base["category"])
        dirs[name] = d
    monkeypatch.setenv(D.ENV_VAR, str(dirs["env"]))
    assert D.load_hmm_toy(root=dirs["root"]).data[0, 0] == base["data"][0, 0]
    assert D.load_hmm_toy().data[0, 0] == base["data"][0, 0] + 1
    assert D.load_hmm_toy(root=tmp_path / "nothing").data[0, 0] == base["data"][0, 0] + 1
    monkeypatch.delenv(D.ENV_VAR)
    assert D.load_hmm_toy().data[0, 0] == base["data"][0, 0] + 2


@pytest.mark.parametrize(
    "loader,filename",
    [
        (D.load_tutorial, "serket_tutorial.npz"),
        (D.load_hmm_toy, "serket_hmm_toy.npz"),
        (D.load_objects, "serket_objects.npz"),
        (D.load_spoken_arabic_digit, "spoken_arabic_digit.npz"),
        (D.load_fsdd, "fsdd.npz"),
        (D.load_mnist, "mnist.npz"),
        (D.load_mmlda_chain, "serket_mmlda_chain.npz"),
    ],
)
def test_missing_file_no_download(tmp_path, monkeypatch, _isolated_cache, loader, filename):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(D.DatasetNotFoundError) as ei:
        loader(root=empty, download=False)
    msg = str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)
    assert repr(filename) in msg
    assert str(empty / filename) in msg and str(_isolated_cache / filename) in msg
    assert "SERKET_PYRO_DATA is not set" in msg
    assert "download=False" in msg and "root=" in msg and D.ENV_VAR in msg
    assert not _isolated_cache.exists() or not any(_isolated_cache.iterdir())


def test_missing_file_without_network(tmp_path, monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    with pytest.raises(D.DatasetNotFoundError) as ei:
        D.load_tutorial(root=tmp_path, download=True)
    msg = str(ei.value)
    assert "'serket_tutorial.npz'" in msg and str(tmp_path / "serket_tutorial.npz") in msg
    assert "https://github.com/naka-lab/Serket/raw/master/examples/VAE%2BGMM%2BMLDA/data.zip" in msg
    assert "network disabled in tests" in msg and "no network" in msg
    assert D.ENV_VAR in msg and str(_isolated_cache) in msg
    assert not _isolated_cache.exists() or not any(_isolated_cache.iterdir())


@needs_data
def test_truncated_npz_in_cache(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    _isolated_cache.mkdir(parents=True)
    raw = (DATA_DIR / "serket_objects.npz").read_bytes()
    bad = _isolated_cache / "serket_objects.npz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(D.DatasetCorruptError, match="corrupt or truncated") as ei:
        D.load_objects()
    assert str(bad) in str(ei.value)


def test_wrong_layout_npz(tmp_path):
    np.savez(tmp_path / "serket_hmm_toy.npz", data=np.zeros((99, 2)), category=np.zeros(99, np.int64))
    with pytest.raises(D.DatasetCorruptError, match="'data' has dtype <f8 shape \\(99, 2\\)") as ei:
        D.load_hmm_toy(root=tmp_path)
    assert str(tmp_path / "serket_hmm_toy.npz") in str(ei.value)
    np.savez(tmp_path / "serket_hmm_toy.npz", data=np.zeros((100, 2)))
    with pytest.raises(D.DatasetCorruptError, match="missing \\['category'\\]"):
        D.load_hmm_toy(root=tmp_path)


# ---------------------------------------------------------------------------
# the download path, with the network fetch replaced by local bytes
# ---------------------------------------------------------------------------


@needs_data
def test_download_hmm_and_objects_end_to_end(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    h = _npz("serket_hmm_toy.npz")
    o = _npz("serket_objects.npz")
    files = {"data.txt": _savetxt(h["data"]), "correct.txt": _savetxt(h["category"].astype(float))}
    files.update({f"{k}.txt": _savetxt(o[k]) for k in ("dsift", "mfcc", "tactile", "angle")})
    # only the capitalised category files exist: the loader must fall back to them
    files["Object_Category.txt"] = _savetxt(o["object_category"], "%d")
    files["Motion_Category.txt"] = _savetxt(o["motion_category"], "%d")
    calls: list[str] = []
    monkeypatch.setattr(_base, "_download", _fake_download(files, calls))

    got = D.load_hmm_toy()
    assert np.array_equal(got.data, h["data"]) and np.array_equal(got.category, h["category"])
    assert (_isolated_cache / "serket_hmm_toy.npz").is_file()
    got = D.load_objects()
    assert all(np.array_equal(getattr(got, k), o[k]) for k in o)
    assert any(u.endswith("/Object_Category.txt") for u in calls)
    assert sorted(p.name for p in _isolated_cache.iterdir()) == ["serket_hmm_toy.npz", "serket_objects.npz"]

    # a second call reads the cache and does not fetch again
    n = len(calls)
    D.load_hmm_toy()
    assert len(calls) == n


@needs_data
def test_download_tutorial_end_to_end(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    t = _npz("serket_tutorial.npz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data/data1.txt", _savetxt(t["images"] / 255.0))
        zf.writestr("data/data2.txt", _savetxt(t["hac"], "%d"))
        zf.writestr("data/category.txt", _savetxt(t["category"], "%d"))
    monkeypatch.setattr(_base, "_download", _fake_download({"data.zip": buf.getvalue()}))
    got = D.load_tutorial()
    assert np.array_equal(np.rint(got.images * 255).astype(np.uint8), t["images"])
    assert np.array_equal(got.hac, t["hac"]) and np.array_equal(got.category, t["category"])
    assert (_isolated_cache / "serket_tutorial.npz").is_file()


@needs_data
def test_fsdd_and_mnist_conversions_reproduce_digests():
    f = _npz("fsdd.npz")
    buf = io.BytesIO()
    names = f["speaker_names"]
    recs = np.split(f["audio"], np.cumsum(f["lengths"])[:-1])
    order = np.random.default_rng(0).permutation(3000)  # archive order must not matter
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("free-spoken-digit-dataset-1.0.10/README.md", "x")
        for i in order:
            name = f"{f['digit'][i]}_{names[f['speaker'][i]]}_{f['take'][i]}.wav"
            zf.writestr(f"free-spoken-digit-dataset-1.0.10/recordings/{name}", _wav(recs[i]))
    assert D.array_digest(D.fsdd_from_zip(buf)) == D.ARRAY_SHA256["fsdd.npz"]

    m = _npz("mnist.npz")
    idx = [_idx(m[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    assert D.array_digest(D.mnist_from_idx(*idx)) == D.ARRAY_SHA256["mnist.npz"]


@needs_data
def test_digest_mismatch_caches_nothing(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    h = _npz("serket_hmm_toy.npz")
    data = h["data"].copy()
    data[17, 1] += 1e-9  # a tiny change upstream
    files = {"data.txt": _savetxt(data), "correct.txt": _savetxt(h["category"], "%d")}
    monkeypatch.setattr(_base, "_download", _fake_download(files))
    with pytest.raises(D.DatasetChecksumError, match="Nothing was cached") as ei:
        D.load_hmm_toy()
    assert D.ARRAY_SHA256["serket_hmm_toy.npz"] in str(ei.value)
    assert not _isolated_cache.exists() or not any(_isolated_cache.iterdir())


def test_unparseable_download_caches_nothing(monkeypatch, _isolated_cache):
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.setattr(_base, "_download", _fake_download({"data.zip": b"<html>not a zip</html>"}))
    with pytest.raises(D.DatasetCorruptError, match="nothing was cached"):
        D.load_tutorial()
    assert not _isolated_cache.exists() or not any(_isolated_cache.iterdir())


def test_real_download_function(tmp_path):
    """The real fetch copies a (file://) URL atomically and leaves nothing behind on failure."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    _REAL_DOWNLOAD(src.as_uri(), out / "copy.bin")
    assert (out / "copy.bin").read_bytes() == src.read_bytes()
    with pytest.raises(urllib.error.URLError):
        _REAL_DOWNLOAD((tmp_path / "missing.bin").as_uri(), out / "x.bin")
    assert [p.name for p in out.iterdir()] == ["copy.bin"]


# ---------------------------------------------------------------------------
# conversion functions on small hand-made inputs
# ---------------------------------------------------------------------------


def test_tutorial_from_zip_small():
    images = np.array([[0, 255, 128], [1, 2, 3]], dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data1.txt", _savetxt(images / 255.0))
        zf.writestr("data2.txt", b"0 1 2 3\n4 5 6 7\n")
        zf.writestr("category.txt", b"0.000000000000000000e+00\n1.000000000000000000e+00\n")
        zf.writestr("__MACOSX/data1.txt", b"junk")
    a = D.tutorial_from_zip(buf)
    assert a["images"].dtype == np.uint8 and np.array_equal(a["images"], images)
    assert a["hac"].dtype == np.uint8 and a["hac"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert a["category"].dtype == np.int64 and a["category"].tolist() == [0, 1]
    with pytest.raises(D.DatasetCorruptError, match="rows"):
        D.tutorial_from_texts("0 1\n", "1 2\n3 4\n", "0\n")
    with pytest.raises(D.DatasetCorruptError, match="pixel"):
        D.tutorial_from_texts("0.5 0.1\n", "1\n", "0\n")
    with pytest.raises(D.DatasetCorruptError, match="category.txt"):
        D.tutorial_from_zip(_zip_with({"data1.txt": b"0\n", "data2.txt": b"0\n"}))


def _zip_with(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf


def test_hmm_and_objects_from_texts_small():
    a = D.hmm_toy_from_texts("1.5 2.5\n-1 0\n", "0.0\n1.0\n")
    assert a["data"].dtype == np.float64 and a["data"].shape == (2, 2)
    assert a["category"].tolist() == [0, 1] and a["category"].dtype == np.int64
    with pytest.raises(D.DatasetCorruptError, match="integer"):
        D.hmm_toy_from_texts("1 2\n", "0.5\n")
    o = D.objects_from_texts("1\t2\n3\t4\n", "1\n2\n", "0 0 1\n1 0 0\n", "5\n6\n", "0\n1\n", "1\n0\n")
    assert o["dsift"].shape == (2, 2) and o["mfcc"].shape == (2, 1) and o["tactile"].shape == (2, 3)
    assert o["motion_category"].tolist() == [1, 0]
    with pytest.raises(D.DatasetCorruptError, match="number of objects"):
        D.objects_from_texts("1\n2\n", "1\n", "1\n2\n", "1\n2\n", "0\n1\n", "0\n1\n")


def test_parse_arabic_digit_blocks_small():
    text = (
        "            \n"
        "1 2 3\n4 5 6\n"
        "            \n"
        "-0.81101 -7.2382 1.5429e-2\n"
        "\n"
        "7 8 9\n0 0 0\n1 1 1\n"
    )
    blocks = D.parse_arabic_digit_blocks(text, n_coeffs=3)
    assert [b.shape for b in blocks] == [(2, 3), (1, 3), (3, 3)]
    assert all(b.dtype == np.float32 for b in blocks)
    assert blocks[1][0].tolist() == np.array([-0.81101, -7.2382, 0.015429], np.float32).tolist()
    with pytest.raises(D.DatasetCorruptError, match="line 2"):
        D.parse_arabic_digit_blocks("\n1 2\n", n_coeffs=3)


@needs_data
def test_parse_arabic_digit_blocks_real_excerpt():
    s = _npz("spoken_arabic_digit.npz")
    n = 30
    frames = s["test_frames"][: s["test_lengths"][:n].sum()]
    lines = []
    for block in np.split(frames, np.cumsum(s["test_lengths"][:n])[:-1]):
        lines.append("            ")
        lines.extend(" ".join(np.format_float_positional(v, unique=True) for v in row) for row in block)
    blocks = D.parse_arabic_digit_blocks("\n".join(lines) + "\n")
    assert [len(b) for b in blocks] == s["test_lengths"][:n].tolist()
    assert np.concatenate(blocks).tobytes() == frames.tobytes()


def test_arabic_digit_from_texts_small():
    rng = np.random.default_rng(1)

    def text(n_speakers):
        out = []
        for _ in range(10 * n_speakers * 10):
            out.append("")
            for _ in range(rng.integers(1, 4)):
                out.append(" ".join(f"{v:.4f}" for v in rng.normal(size=13)))
        return "\n".join(out) + "\n"

    a = D.arabic_digit_from_texts(text(2), text(1))
    assert a["train_frames"].dtype == np.float32 and a["train_frames"].shape[1] == 13
    assert a["train_lengths"].sum() == len(a["train_frames"]) and len(a["train_lengths"]) == 200
    assert np.array_equal(a["train_digit"], np.repeat(np.arange(10), 20))
    assert np.array_equal(a["train_speaker"], np.tile(np.repeat([0, 1], 10), 10))
    assert np.array_equal(a["test_speaker"], np.zeros(100, np.int64))
    assert set(a) == set(D.spoken_arabic_digit.LAYOUT)
    with pytest.raises(D.DatasetCorruptError, match="multiple"):
        D.arabic_digit_from_texts("1 " * 13 + "\n", text(1))


def test_read_idx_small():
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        got = D.read_idx(_idx(x, compress))
        assert got.dtype == np.uint8 and np.array_equal(got, x)
    i32 = np.array([1, -2, 70000], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + i32.tobytes()
    assert D.read_idx(raw).tolist() == [1, -2, 70000]
    with pytest.raises(D.DatasetCorruptError, match="payload"):
        D.read_idx(_idx(x, False)[:-1])
    with pytest.raises(D.DatasetCorruptError, match="magic"):
        D.read_idx(b"\x01\x02\x08\x01")
    m = D.mnist_from_idx(_idx(x), _idx(np.array([3, 4])), _idx(x[:1]), _idx(np.array([9])))
    assert m["x_train"].dtype == np.uint8 and m["y_train"].dtype == np.int64 and m["y_test"].tolist() == [9]
    with pytest.raises(D.DatasetCorruptError, match="do not match"):
        D.mnist_from_idx(_idx(x), _idx(np.array([3])), _idx(x[:1]), _idx(np.array([9])))


def test_wav_and_fsdd_from_wavs_small():
    rate, s = D.read_wav_int16(_wav([0, -32768, 32767, 5]))
    assert rate == 8000 and s.dtype == np.int16 and s.tolist() == [0, -32768, 32767, 5]
    with pytest.raises(D.DatasetCorruptError, match="RIFF"):
        D.read_wav_int16(b"not a wav file")
    wavs = {
        "1_bob_0.wav": _wav([1, 1]),
        "0_bob_10.wav": _wav([2]),
        "0_bob_2.wav": _wav([3, 3, 3]),
        "0_alice_1.wav": _wav([4]),
    }
    a = D.fsdd_from_wavs(wavs)
    # sorted file names: 0_alice_1, 0_bob_10, 0_bob_2, 1_bob_0
    assert a["audio"].tolist() == [4, 2, 3, 3, 3, 1, 1]
    assert a["lengths"].tolist() == [1, 1, 3, 2]
    assert a["digit"].tolist() == [0, 0, 0, 1] and a["take"].tolist() == [1, 10, 2, 0]
    assert a["speaker"].tolist() == [0, 1, 1, 1] and a["speaker_names"].tolist() == ["alice", "bob"]
    assert int(a["sample_rate"]) == 8000 and a["sample_rate"].shape == ()
    with pytest.raises(D.DatasetCorruptError, match="sample rates"):
        D.fsdd_from_wavs({"0_a_0.wav": _wav([1]), "0_a_1.wav": _wav([1], rate=16000)})
    with pytest.raises(D.DatasetCorruptError, match="name"):
        D.fsdd_from_wavs({"hello.wav": _wav([1])})


def test_split_by_lengths_and_digest():
    parts = D.split_by_lengths(np.arange(6), [1, 0, 5])
    assert [p.tolist() for p in parts] == [[0], [], [1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="add up"):
        D.split_by_lengths(np.arange(6), [1, 2])
    a = {"x": np.arange(3, dtype="<i8"), "y": np.zeros((2, 2))}
    b = {"y": np.zeros((2, 2)), "x": np.arange(3, dtype=">i8")}
    assert D.array_digest(a) == D.array_digest(b)  # order and byte order do not matter
    assert D.array_digest(a) != D.array_digest({"x": np.arange(3, dtype="<i4"), "y": a["y"]})
    assert D.array_digest(a) != D.array_digest({"x": a["x"], "y": np.zeros((4,))})


def test_tutorial_speech_rows_are_the_tutorials_utterances(data_dir):
    from serket_pyro.datasets import load_tutorial, load_tutorial_speech, tutorial_utterance_rows

    assert tutorial_utterance_rows(12).tolist() == [0, 660, 1320, 1980, 2640, 3300, 3960, 4620, 5280, 5940, 1, 661]
    with pytest.raises(ValueError, match="n must be in 1..6600"):
        tutorial_utterance_rows(0)
    d = load_tutorial_speech(root=data_dir)
    tut = load_tutorial(root=data_dir)
    T = np.array([len(u) for u in d.utterances])
    blocks = tut.hac.reshape(3000, 6, 400).sum(2)
    np.testing.assert_array_equal(blocks[:, 0], T - 5)  # stream 0, lag 5
    np.testing.assert_array_equal(blocks[:, 3], T - 2)  # stream 1, lag 2
    np.testing.assert_array_equal(d.category, np.arange(3000) % 10)
    assert np.bincount(d.speaker).tolist() == [100] * 30 and d.images.shape == (3000, 784)
