"""Tests of serket_pyro.features (MFCC, deltas, k-means, HAC) and serket_pyro.datasets.paired_data."""

import itertools
import math

import numpy as np
import pytest
import torch

from serket_pyro.features import (
    HACExtractor,
    dct_matrix,
    deltas,
    hz_to_mel,
    kmeans,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    mfcc,
)
from serket_pyro.ops import kmeans as ops_kmeans
from serket_pyro.ops import kmeans_plusplus


# ------------------------------------------------------------------------------ reference MFCC
def _reference_mfcc(x, sr, n_mfcc=13, n_mels=26, win_ms=25, hop_ms=10, pre=0.97):
    """A straightforward numpy MFCC: explicit loops over frames, filters and coefficients."""
    x = np.asarray(x, dtype=np.float64)
    x = np.append(x[0], x[1:] - pre * x[:-1])
    win, hop = int(round(sr * win_ms / 1000)), int(round(sr * hop_ms / 1000))
    n_fft = 1
    while n_fft < win:
        n_fft *= 2
    hamming = np.array([0.54 - 0.46 * math.cos(2 * math.pi * i / (win - 1)) for i in range(win)])
    mel = lambda f: 2595 * math.log10(1 + f / 700)
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)
    pts = [imel(mel(0) + j * (mel(sr / 2) - mel(0)) / (n_mels + 1)) for j in range(n_mels + 2)]
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for j in range(n_mels):
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if pts[j] <= f <= pts[j + 1]:
                fb[j, k] = (f - pts[j]) / (pts[j + 1] - pts[j])
            elif pts[j + 1] < f <= pts[j + 2]:
                fb[j, k] = (pts[j + 2] - f) / (pts[j + 2] - pts[j + 1])
    out = []
    for t in range(1 + (len(x) - win) // hop):
        frame = x[t * hop: t * hop + win] * hamming
        power = np.abs(np.fft.rfft(frame, n_fft)) ** 2 / n_fft
        logmel = np.log(np.maximum(fb @ power, 1e-10))
        c = [sum(logmel[n] * math.cos(math.pi * k * (n + 0.5) / n_mels) for n in range(n_mels))
             * math.sqrt((1 if k == 0 else 2) / n_mels) for k in range(n_mfcc)]
        out.append(c)
    return np.array(out)


def _sine(freq, sr=8000, seconds=0.5, amp=3000.0):
    t = np.arange(int(sr * seconds)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def test_mfcc_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = _sine(440) + _sine(1700, amp=800) + rng.normal(0, 50, 4000)
    ours = mfcc(x, 8000, n_deltas=0).numpy()
    ref = _reference_mfcc(x, 8000)
    assert ours.shape == ref.shape == (1 + (4000 - 200) // 80, 13)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_mfcc_shapes_and_deltas_layout():
    x = _sine(1000)
    full = mfcc(x, 8000)
    assert full.shape == (48, 39)
    np.testing.assert_allclose(full[:, 13:26], deltas(full[:, :13]), atol=0)
    np.testing.assert_allclose(full[:, 26:], deltas(full[:, 13:26]), atol=0)
    assert mfcc(x[:50], 8000).shape == (1, 39)  # shorter than a window: one zero-padded frame


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_sine_energy_in_its_mel_band(freq):
    lm = log_mel_spectrogram(_sine(freq), 8000, preemphasis=0.0)
    peak = int(lm.mean(0).argmax())
    centres = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(4000), 28))[1:-1]
    assert abs(centres[peak] - freq) <= np.diff(centres).max(), (peak, centres[peak])
    # the peak filter is the one whose centre is nearest to the tone
    assert peak == int(np.abs(centres - freq).argmin())


def test_filterbank_and_dct():
    fb = mel_filterbank(26, 256, 8000)
    assert fb.shape == (26, 129) and float(fb.max()) <= 1.0 and bool((fb >= 0).all())
    D = dct_matrix(26, 26)
    np.testing.assert_allclose((D.T @ D).numpy(), np.eye(26), atol=1e-12)  # orthonormal
    scipy_fft = pytest.importorskip("scipy.fft")
    v = np.random.default_rng(1).normal(size=26)
    np.testing.assert_allclose(v @ D.numpy(), scipy_fft.dct(v, 2, norm="ortho"), atol=1e-12)


def test_deltas_on_a_ramp():
    a, b = 0.7, -2.0
    x = torch.tensor([[a * t + b, 3.0] for t in range(8)], dtype=torch.float64)
    d = deltas(x, 2)
    # interior: sum n * (2 n a) / (2 sum n^2) = a; edges repeat the end frames:
    # t=0: (1*(x1-x0) + 2*(x2-x0)) / 10 = (a + 4a) / 10; t=1: (1*(x2-x0) + 2*(x3-x0)) / 10 = (2a + 6a) / 10
    expect = [0.5 * a, 0.8 * a, a, a, a, a, 0.8 * a, 0.5 * a]
    np.testing.assert_allclose(d[:, 0].numpy(), expect, atol=1e-12)
    np.testing.assert_allclose(d[:, 1].numpy(), 0.0, atol=0)


# --------------------------------------------------------------------------------------- k-means
def test_kmeans_finds_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    x = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=g, dtype=torch.float64))
    torch.manual_seed(1)
    c1 = kmeans(x, 3, seed=5)
    torch.manual_seed(2)
    c2 = kmeans(x, 3, seed=5)
    assert torch.equal(c1, c2)  # does not depend on the global RNG
    d = torch.cdist(centres, c1)
    assert float(d.min(1).values.max()) < 0.1


def _same_partition(a, b) -> bool:
    """True when the label vectors ``a`` and ``b`` split the points the same way (up to renaming)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _blobs(sizes, centres, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    y = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return centres[y] + spread * torch.randn(len(y), centres.shape[1], generator=g, dtype=torch.float64), y


@pytest.mark.parametrize("seed", range(5))
def test_ops_kmeans_recovers_separated_blobs(seed):
    """Well separated blobs of unequal sizes: every start, even a single one, finds the true partition."""
    x, y = _blobs([5, 40, 12, 80, 3], [[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20], [20, 20, 20]], 0.5, seed)
    r = ops_kmeans(x, 5, n_init=1, seed=seed)
    assert _same_partition(r.labels, y)
    assert r.labels.dtype == torch.int64 and r.centers.shape == (5, 3) and r.centers.dtype == x.dtype
    # the centres are the blob means and the inertia is the within-blob sum of squares
    means = torch.stack([x[y == j].mean(0) for j in range(5)])
    np.testing.assert_allclose(torch.sort(r.centers, 0).values, torch.sort(means, 0).values, atol=1e-12)
    assert r.inertia == pytest.approx(float(((x - means[y]) ** 2).sum()), rel=1e-12)


def test_ops_kmeans_finds_the_brute_force_optimum():
    """On 9 points the global optimum is found by trying all 3**9 labellings."""
    x, _ = _blobs([3, 3, 3], [[0, 0], [2.5, 0], [1.2, 2]], 0.8, 3)
    labs = torch.tensor(list(itertools.product(range(3), repeat=9)))  # (19683, 9)
    onehot = torch.nn.functional.one_hot(labs, 3).to(x.dtype)  # (L, 9, 3)
    counts = onehot.sum(1)  # (L, 3)
    sums = torch.einsum("lnk,nd->lkd", onehot, x)
    sse = (x * x).sum() - ((sums ** 2).sum(-1) / counts.clamp_min(1)).sum(-1)
    sse[(counts == 0).any(1)] = math.inf
    best = float(sse.min())
    r = ops_kmeans(x, 3, n_init=10, seed=0)
    assert r.inertia == pytest.approx(best, rel=1e-10)
    assert _same_partition(r.labels, labs[int(sse.argmin())])


@pytest.mark.parametrize("seed", range(4))
def test_ops_kmeans_restarts_never_worse_than_one_start(seed):
    """The first of n_init starts is the single start of the same seed; the best is kept."""
    x, _ = _blobs([30, 30, 30, 30], [[0, 0], [1.5, 0], [0, 1.5], [1.5, 1.5]], 0.6, 10 + seed)
    one = ops_kmeans(x, 6, n_init=1, seed=seed)
    many = ops_kmeans(x, 6, n_init=8, seed=seed)
    assert many.inertia <= one.inertia
    g = torch.Generator().manual_seed(seed)
    assert ops_kmeans(x, 6, n_init=8, generator=g).inertia == many.inertia


def test_ops_kmeans_greedy_seeding_lowers_the_seed_potential():
    """Greedy k-means++ (2 + ln k candidates) beats plain k-means++ (1 candidate) on average."""
    x, _ = _blobs([200, 20, 20, 20, 20, 5, 5, 5], np.random.default_rng(0).normal(0, 4, (8, 2)), 1.0, 0)

    def potential(n_local_trials, seed):
        idx = kmeans_plusplus(x, 8, generator=torch.Generator().manual_seed(seed), n_local_trials=n_local_trials)
        assert len(set(idx.tolist())) == 8
        return float(torch.cdist(x, x[idx]).pow(2).min(1).values.sum())

    greedy = np.mean([potential(None, s) for s in range(20)])
    plain = np.mean([potential(1, s) for s in range(20)])
    assert greedy < 0.9 * plain


def test_ops_kmeans_generator_scale_and_errors():
    x, y = _blobs([20, 20, 20], [[0, 0], [8, 0], [0, 8]], 0.5, 0)
    torch.manual_seed(1)
    a = ops_kmeans(x, 3, seed=5)
    torch.manual_seed(2)
    b = ops_kmeans(x, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centers, b.centers)  # no global RNG
    torch.manual_seed(3)
    c = ops_kmeans(x, 3)
    torch.manual_seed(3)
    assert torch.equal(ops_kmeans(x, 3).centers, c.centers)  # without a seed: from the global RNG
    for scale in (1e-170, 1e160):  # power-of-two rescaling inside: no overflow or underflow
        assert torch.equal(ops_kmeans(x * scale, 3, seed=5).labels, a.labels)
    d = ops_kmeans(torch.tensor([[1.0, 1.0]] * 4 + [[2.0, 2.0]] * 3), 3, seed=0)  # more clusters than points
    assert d.inertia == 0.0 and d.labels.unique().numel() == 2
    with pytest.raises(ValueError, match="kmeans: give a generator or a seed, not both"):
        ops_kmeans(x, 3, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="kmeans: 60 points cannot make 61 clusters"):
        ops_kmeans(x, 61)
    with pytest.raises(ValueError, match="kmeans: n_init must be an integer"):
        ops_kmeans(x, 3, n_init=0)


# ------------------------------------------------------------------------------------------- HAC
def _seqs(n=12, D=13, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(3, 40)), D)) for _ in range(n)]


def test_hac_shapes_and_counts_sum_to_frame_pairs():
    seqs = _seqs() + [np.zeros((1, 13)), np.ones((5, 13))]  # T=1 and T=lag: no pairs at that lag
    ex = HACExtractor(n_codewords=4, lags=(5, 2)).fit(seqs)
    assert [tuple(c.shape) for c in ex.codebooks_] == [(4, 13)] * 3
    h = ex.transform(seqs)
    assert h.shape == (len(seqs), 3 * 2 * 16) and h.dtype == np.int64 and ex.n_bins == 96
    blocks = h.reshape(len(seqs), 3, 2, 16).sum(-1)
    T = np.array([len(s) for s in seqs])
    for j, lag in enumerate((5, 2)):
        np.testing.assert_array_equal(blocks[:, :, j], np.maximum(T - lag, 0)[:, None].repeat(3, 1))
    assert h.sum() == 3 * sum(max(t - 5, 0) + max(t - 2, 0) for t in T)


def test_hac_tutorial_size():
    ex = HACExtractor(20, (5, 2)).fit(_seqs(40, seed=3))
    assert ex.transform(_seqs(3, seed=4)).shape == (3, 2400)


def test_hac_hand_computed_histogram():
    ex = HACExtractor(n_codewords=2, lags=(1, 2), streams=[(0, 1)])
    ex.codebooks_ = [torch.tensor([[0.0], [10.0]], dtype=torch.float64)]
    ex.means_, ex.scales_ = [torch.zeros(1, dtype=torch.float64)], [torch.ones(1, dtype=torch.float64)]
    ex.n_features_in_ = 1
    seq = np.array([[0.2], [-1.0], [9.0], [1.0], [12.0]])  # codes 0 0 1 0 1
    # lag 1 pairs: (0,0) (0,1) (1,0) (0,1) -> bins [00, 01, 10, 11] = [1, 2, 1, 0]
    # lag 2 pairs: (0,1) (0,0) (1,1)       ->                          [1, 1, 0, 1]
    h = ex.transform([seq, seq[:2]])
    np.testing.assert_array_equal(h, [[1, 2, 1, 0, 1, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0]])


def test_hac_derived_streams_use_deltas():
    seqs = _seqs(8, D=2)
    ex = HACExtractor(3, (1,), streams=["delta"]).fit(seqs)
    ex2 = HACExtractor(3, (1,), streams=[(0, 2)]).fit([deltas(s).numpy() for s in seqs])
    np.testing.assert_allclose(ex.codebooks_[0], ex2.codebooks_[0])
    np.testing.assert_array_equal(ex.transform(seqs), ex2.transform([deltas(s).numpy() for s in seqs]))


@pytest.mark.parametrize("standardize", [False, True])
def test_hac_save_load_reproduces_exactly(tmp_path, standardize):
    seqs = _seqs(30)
    ex = HACExtractor(5, (3, 1), standardize=standardize, seed=7, max_train_frames=200).fit(seqs)
    path = tmp_path / "hac.npz"
    ex.save(path)
    with np.load(path, allow_pickle=False) as z:  # no pickled objects inside
        assert "config" in z.files
    back = HACExtractor.load(path)
    assert back.get_config() == ex.get_config()
    new = _seqs(10, seed=9)
    np.testing.assert_array_equal(back.transform(new), ex.transform(new))
    # refitting with the same seed reproduces the codebooks too
    again = HACExtractor(5, (3, 1), standardize=standardize, seed=7, max_train_frames=200).fit(seqs)
    for a, b in zip(again.codebooks_, ex.codebooks_):
        assert torch.equal(a, b)


def test_hac_errors():
    with pytest.raises(ValueError, match="fit"):
        HACExtractor().transform(_seqs(2))
    with pytest.raises(ValueError, match="stream"):
        HACExtractor(streams=["bogus"])
    with pytest.raises(ValueError, match="NaN"):
        HACExtractor(2).fit([np.full((5, 13), np.nan)])


# --------------------------------------------------------------------------------- paired data
def test_pair_indices_cyclic_and_random():
    from serket_pyro.datasets.paired_data import build_pairs, n_reused, pair_indices

    labels = np.repeat(np.arange(10), 7)[::-1]
    # 10 per class > 7: refused unless reuse is asked for, and then counted
    with pytest.raises(ValueError, match=r"need 10 items of each class.*reuse=True"):
        pair_indices(labels, 100, rng=np.random.default_rng(0))
    idx = pair_indices(labels, 100, rng=np.random.default_rng(0), reuse=True)
    np.testing.assert_array_equal(labels[idx], np.arange(100) % 10)
    assert n_reused(idx) == 30 and n_reused(pair_indices(labels, 70)) == 0
    img_labels = np.random.default_rng(1).integers(0, 10, 500)
    i, s = build_pairs(img_labels, labels, 60, order="random", seed=3)
    np.testing.assert_array_equal(img_labels[i], labels[s])
    assert not np.array_equal(labels[s], np.arange(60) % 10)
    np.testing.assert_array_equal(np.bincount(labels[s]), [6] * 10)


def test_sad_pairs_keep_speakers_apart(data_dir):
    from serket_pyro.datasets import load_mnist, load_spoken_arabic_digit
    from serket_pyro.datasets.paired_data import build_sad_pairs

    sp = build_sad_pairs(100, 50, extractor=HACExtractor(4, (5, 2)), root=data_dir)
    tr, te = sp.train, sp.test
    assert tr.images.shape == (100, 784) and tr.hac.shape == (100, 96) and te.hac.shape == (50, 96)
    assert tr.images.dtype == np.float32 and 0 <= tr.images.min() and tr.images.max() <= 1
    np.testing.assert_array_equal(tr.category, np.arange(100) % 10)
    assert set(tr.speaker).isdisjoint(te.speaker)
    # labels aligned with the sources
    sad = load_spoken_arabic_digit("train", root=data_dir)
    img_rows, utt_rows = sp.index["train"]
    np.testing.assert_array_equal(load_mnist("train", root=data_dir).labels[img_rows], tr.category)
    np.testing.assert_array_equal(sad.digit[utt_rows], tr.category)
    np.testing.assert_array_equal(sad.speaker[utt_rows], tr.speaker)
    # "first" selection = the tutorial's utterances: row-block sums T - 5 / T - 2 of the tutorial HAC
    tut = np.load(f"{data_dir}/serket_tutorial.npz")["hac"][:100].reshape(100, 6, 400).sum(2)
    np.testing.assert_array_equal(tr.hac.reshape(100, 6, 16).sum(2), tut)


def test_fsdd_pairs_keep_speakers_apart(data_dir):
    from serket_pyro.datasets import load_fsdd
    from serket_pyro.datasets.paired_data import build_fsdd_pairs

    sp = build_fsdd_pairs(60, 20, order="random", test_speakers=("theo",), takes=range(10, 13),
                          extractor=HACExtractor(3, (2,)), root=data_dir)
    assert sp.n_reused == {"train": 0, "test": 0}
    # 3 takes of theo give 3 recordings per digit: 40 test pairs need reuse, and report it
    with pytest.raises(ValueError, match="reuse=True"):
        build_fsdd_pairs(60, 40, test_speakers=("theo",), takes=range(10, 13), extractor=sp.extractor,
                         root=data_dir)
    sp2 = build_fsdd_pairs(60, 40, test_speakers=("theo",), takes=range(10, 13), extractor=sp.extractor,
                           root=data_dir, reuse=True)
    assert sp2.n_reused["test"] == 10 and sp2.n_reused["train"] == 0
    f = load_fsdd(root=data_dir)
    theo = f.speaker_names.index("theo")
    assert (sp.test.speaker == theo).all() and (sp.train.speaker != theo).all()
    for split, data in (("train", sp.train), ("test", sp.test)):
        _, rec = sp.index[split]
        np.testing.assert_array_equal(f.digit[rec], data.category)
        np.testing.assert_array_equal(f.speaker[rec], data.speaker)
        assert np.isin(f.take[rec], [10, 11, 12]).all()
    assert sp.train.hac.shape == (60, 3 * 9) and sp.train.hac.sum() > 0


def test_fsdd_mfcc_rows_and_cmn(data_dir):
    from serket_pyro.datasets.paired_data import fsdd_mfcc

    raw, f = fsdd_mfcc(data_dir, rows=[0, 7])
    norm, _ = fsdd_mfcc(data_dir, rows=[0, 7], cmn=True)
    assert raw[1] is None and raw[0].shape == (1 + (f.lengths[0] - 200) // 80, 13)
    np.testing.assert_allclose(norm[7], raw[7] - raw[7].mean(0))
    np.testing.assert_allclose(norm[0].mean(0), 0.0, atol=1e-9)


@pytest.mark.slow  # tests/test_examples.py::test_speech_pairs_example_runs runs the same example in the default suite
def test_speech_pairs_example_tiny(tmp_path, data_dir):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "speech_pairs.py")
    spec = importlib.util.spec_from_file_location("example_speech_pairs", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    args = ex.parser().parse_args(["--n", "100", "--n-test", "50", "--epochs", "1", "--iterations", "1",
                                   "--mlda-itr", "5", "--gmm-itr", "5", "--fsdd-takes", "5", "--no-progress",
                                   "--data-dir", data_dir, "--output", str(tmp_path / "out")])
    res = ex.main(args)
    assert set(res) == {"fsdd", "sad"}
    for r in res.values():
        assert 0.0 <= r["train_accuracy"] <= 1.0 and 0.0 <= r["test_accuracy_train_map"] <= 1.0
