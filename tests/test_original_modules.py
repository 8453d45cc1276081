"""The original Serket's other modules: ``hac.HACFeatureExtractor``, ``TtoT``, ``serket.utils``
(``GroupSum``, ``TextSaver``, ``Buffer``), against exact answers computed here by hand."""

import wave

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro.features import HACExtractor
from serket_pyro.messages import ClassProbs, PointMessage


def _write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).astype({1: "u1", 2: "<i2", 4: "<i4"}[width]).tobytes())
    return str(path)


def _noise_wavs(tmp_path, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [_write_wav(tmp_path / f"u{i}.wav", rng.normal(size=L) * 3000) for i, L in enumerate(lengths)]


# ------------------------------------------------------------------------------------------- HAC
def _hand_extractor(lags):
    """Codebooks by hand: static frames quantised to {0, 10}; one codeword for each delta stream."""
    ex = HACExtractor([2, 1, 1], lags, standardize=False)
    one = [np.zeros((1, 1)), np.zeros(1), np.ones(1)]
    return ex.set_state([np.array([[0.0], [10.0]]), one[0], one[0]], [np.zeros(1)] * 3, [np.ones(1)] * 3, 1)


def test_hac_counts_with_a_hand_built_codebook(tmp_path):
    srk.set_output_root(tmp_path)
    frames = np.array([[0.0], [1.0], [9.0], [11.0], [-1.0]])  # codes 0 0 1 1 0
    h = srk.hac.HACFeatureExtractor([frames, frames[:2]], extractor=_hand_extractor([1, 2]))
    # static lag 1: pairs (0,0) (0,1) (1,1) (1,0); lag 2: (0,1) (0,1) (1,0); bins code[t] * 2 + code[t + lag];
    # the one-codeword delta streams count every pair: T - lag
    expected = np.array([[1, 1, 1, 1, 0, 2, 1, 0, 4, 3, 4, 3],
                         [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0]], dtype=float)
    np.testing.assert_array_equal(np.asarray(h.forward_msg), expected)
    assert list(h.lengths_) == [5, 2] and h.ks == [2, 1, 1] and h.lags == [1, 2]


def test_hac_from_wav_files_counts_sum_to_frames_minus_lag_per_block(tmp_path):
    srk.set_output_root(tmp_path)
    wavs = _noise_wavs(tmp_path, [8000, 4000, 6000, 8000])
    h = srk.hac.HACFeatureExtractor(wavs, [3, 4, 2], lags=[5, 2])
    c = np.asarray(h.forward_msg)
    T = 1 + (np.array([8000, 4000, 6000, 8000]) - 200) // 80  # 25 ms windows every 10 ms at 8 kHz
    assert list(h.lengths_) == list(T) and c.shape == (4, 2 * (9 + 16 + 4))
    starts = np.cumsum([0, 9, 9, 16, 16, 4])
    sizes = [9, 9, 16, 16, 4, 4]
    for b, (s, n) in enumerate(zip(starts, sizes)):
        np.testing.assert_array_equal(c[:, s:s + n].sum(1), T - (5, 2)[b % 2])
    # the same speech as samples gives the same counts with the same codebooks
    rng = np.random.default_rng(0)
    samples = [np.round(rng.normal(size=L) * 3000) for L in (8000, 4000, 6000, 8000)]
    h2 = srk.hac.HACFeatureExtractor(samples, sample_rate=8000, extractor=h.extractor_)
    np.testing.assert_array_equal(np.asarray(h2.forward_msg), c)


def test_hac_feeds_mlda_and_the_saved_codebooks_recognise_new_speech(tmp_path):
    srk.set_output_root(tmp_path / "run")
    srk.reset_module_counter()
    wavs = _noise_wavs(tmp_path, [3000, 3200, 3400, 3600])
    h = srk.hac.HACFeatureExtractor(wavs, [3, 3, 3], lags=[2], seed=4)
    m = srk.MLDA(2, [50], itr=5, category=[0, 0, 1, 1])
    m.connect(h)
    m.update()
    srk.save_graph(tmp_path / "g", m)
    (tmp_path / "new").mkdir()
    new = _noise_wavs(tmp_path / "new", [5000, 2000], seed=9)
    s = srk.load_graph(tmp_path / "g", {h.name: new}, mode="recog", output_root=tmp_path / "rec")
    loaded = s.modules[h.name]
    assert type(loaded) is type(h)
    for a, b in zip(loaded.codebooks_, h.codebooks_):
        assert torch.equal(a, b)
    expected = srk.hac.HACFeatureExtractor(new, extractor=h.extractor_)
    np.testing.assert_array_equal(np.asarray(loaded.forward_msg), np.asarray(expected.forward_msg))
    s.fit(n_iter=1, progress=False)
    assert s.result_module.forward_msg.N == 2


def test_hac_saved_state_that_does_not_fit_is_refused():
    cfg = {"ks": [2, 1, 1], "lags": [1], "sample_rate": None, "cmn": False, "standardize": False, "n_iter": 100,
           "seed": 0, "max_train_frames": None, "mfcc_params": {}}
    state = {"codebooks.0": torch.zeros(3, 1), "codebooks.1": torch.zeros(1, 1), "codebooks.2": torch.zeros(1, 1),
             **{f"{k}.{s}": torch.ones(1) for k in ("means", "scales") for s in range(3)},
             "n_features_in": torch.tensor(1)}
    with pytest.raises(ValueError, match=r"module007_x: the saved codebooks do not fit: .*stream 0 has codebook "
                                         r"\(3, 1\)"):
        srk.hac.HACFeatureExtractor.from_saved([np.zeros((4, 1))], cfg, state, "module007_x")
    with pytest.raises(ValueError, match="module007_x: the saved codebooks do not fit: n_features_in must be one"):
        srk.hac.HACFeatureExtractor.from_saved([np.zeros((4, 1))], cfg, {**state, "n_features_in": torch.ones(2)},
                                               "module007_x")
    with pytest.raises(ValueError, match="module007_x: saved config has entries"):
        srk.hac.HACFeatureExtractor.from_saved([np.zeros((4, 1))], {**cfg, "extra": 1}, state, "module007_x")


@pytest.mark.parametrize("make, message", [
    (lambda p: _write_wav(p / "s.wav", np.zeros(800), channels=2), "has 2 channels"),
    (lambda p: _write_wav(p / "b.wav", np.zeros(400), width=4)[:0] + str(p / "missing.wav"), "is not a file"),
    (lambda p: (p / "t.wav").write_bytes(b"RIFF0000WAVEjunk") and str(p / "t.wav"), "not a readable integer-PCM"),
])
def test_hac_refuses_unreadable_wav_files(tmp_path, make, message):
    with pytest.raises(ValueError, match=r"HACFeatureExtracter: .*" + message):
        srk.hac.HACFeatureExtractor([make(tmp_path)], [2, 2, 2])


@pytest.mark.parametrize("kwargs, message", [
    ({"hop_length": 160}, r"the MFCC parameter 'hop_length' \(librosa's\) is hop_ms"),
    ({"n_mffc": 13}, "unknown argument 'n_mffc'"),
    ({"ks": [2, 2]}, "n_codewords gives 2 codebook sizes for 3 streams"),
    ({"lags": []}, "lags must be a non-empty list"),
])
def test_hac_bad_arguments_name_the_module(tmp_path, kwargs, message):
    wav = _noise_wavs(tmp_path, [2000])
    kw = {"ks": [2, 2, 2], **kwargs}
    with pytest.raises(ValueError, match=r"module\d+_HACFeatureExtracter: " + message):
        srk.hac.HACFeatureExtractor(wav, **kw)


def test_hac_extractor_settings_must_agree(tmp_path):
    ex = _hand_extractor([1])
    with pytest.raises(ValueError, match=r"ks=\[3, 3, 3\] differs from the extractor's \[2, 1, 1\]"):
        srk.hac.HACFeatureExtractor([np.zeros((3, 1))], [3, 3, 3], extractor=ex)
    with pytest.raises(ValueError, match="fitted on frames of 1 coefficients, these utterances have 2"):
        srk.hac.HACFeatureExtractor([np.zeros((3, 2))], extractor=ex)


# ------------------------------------------------------------------------------------------ TtoT
def test_ttot_is_the_product_of_the_other_modules_smoothed_messages(tmp_path):
    srk.set_output_root(tmp_path)
    rng = np.random.default_rng(3)
    N, K, eps = 40, 4, 0.05
    labels = np.arange(N) % K
    q0 = rng.dirichlet(np.ones(K), size=N) * 0.3 + 0.7 * np.eye(K)[labels]
    sigma = np.array([2, 0, 3, 1])  # module 1 calls class k "sigma[k]"
    noisy = rng.dirichlet(np.ones(K), size=N) * 0.4 + 0.6 * np.eye(K)[labels]
    q1 = np.empty_like(noisy)
    q1[:, sigma] = noisy
    tt = srk.TtoT.TtoT(smoothing=eps, category=labels)
    tt.connect(srk.Observation(ClassProbs.from_probs(q0)), srk.Observation(ClassProbs.from_probs(q1)))
    tt.update()
    assert [list(p) for p in tt.permutations_] == [[0, 1, 2, 3], list(sigma)]
    r0 = (q0 + eps) / (1 + K * eps)
    r1 = (q1[:, sigma] + eps) / (1 + K * eps)
    post = r0 * r1 / (r0 * r1).sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(tt.forward_msg), post, rtol=1e-10)
    b0 = tt.children[0].get_backward_msg()
    b1 = tt.children[1].get_backward_msg()
    np.testing.assert_allclose(np.asarray(b0), r1 / r1.sum(1, keepdims=True), rtol=1e-10)
    expected_b1 = np.empty_like(r0)
    expected_b1[:, sigma] = r0 / r0.sum(1, keepdims=True)  # in module 1's own numbering
    np.testing.assert_allclose(np.asarray(b1), expected_b1, rtol=1e-10)
    assert tt.metrics_["accuracy"] == 1.0


def test_ttot_refuses_other_messages_and_sizes(tmp_path):
    srk.set_output_root(tmp_path)
    tt = srk.TtoT.TtoT()
    tt.connect(srk.Observation(ClassProbs.from_probs(np.ones((5, 3)))), srk.Observation(ClassProbs.from_probs(np.ones((5, 4)))))
    with pytest.raises(ValueError, match=r"_tt: the children's class messages have different shapes"):
        tt.update()


# ------------------------------------------------------------------------------------ serket.utils
def test_group_sum_sums_groups_and_copies_the_parents_message_down(tmp_path, make_parent):
    import serket_pyro.utils as utils

    srk.set_output_root(tmp_path)
    x = np.arange(10.0).reshape(5, 2)
    g = utils.GroupSum([1, 0, 1, 2, 0])
    obs = srk.Observation(x)
    g.connect(obs)
    g.update()
    np.testing.assert_array_equal(np.asarray(g.forward_msg), [[2 + 8, 3 + 9], [0 + 4, 1 + 5], [6, 7]])
    probs = np.array([[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]])
    parent = make_parent(probs)
    parent.connect(g)
    parent.update()
    g.update()
    np.testing.assert_allclose(np.asarray(obs.get_backward_msg()), probs[[1, 0, 1, 2, 0]], rtol=1e-12)
    with pytest.raises(ValueError, match=r"_SumGroup: groups \[1\] have no data point"):
        utils.GroupSum([0, 2])


def test_text_saver_writes_the_message_and_passes_it_on(tmp_path, make_parent):
    from serket_pyro.utils import TextSaver

    srk.set_output_root(tmp_path / "out")
    x = np.array([[1.5, 2.0], [3.0, -4.25]])
    t = TextSaver(tmp_path / "saved.txt", fmt="%.3f")
    obs = srk.Observation(x)
    t.connect(obs)
    t.update()
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "saved.txt"), x)
    assert (tmp_path / "saved.txt").read_text().splitlines()[0] == "1.500 2.000"
    assert t.forward_msg is obs.forward_msg
    parent = make_parent(np.array([[0.2, 0.8], [0.5, 0.5]]))
    parent.connect(t)
    parent.update()
    t.update()
    np.testing.assert_allclose(np.asarray(obs.get_backward_msg()), [[0.2, 0.8], [0.5, 0.5]])
    with pytest.raises(ValueError, match="does not exist"):
        TextSaver(tmp_path / "no" / "f.txt")


def test_buffer_grows_pads_and_keeps_the_last_size_points(tmp_path):
    from serket_pyro.utils import Buffer

    srk.set_output_root(tmp_path)
    b = Buffer(size=4)
    b.connect(srk.Observation(np.array([[1.0, 2.0], [3.0, 4.0]])))
    b.update()
    np.testing.assert_array_equal(np.asarray(b.forward_msg), [[1, 2], [3, 4]])
    b.connect(srk.Observation(np.array([[5.0, 6.0, 7.0]])))  # a new time step, a wider vocabulary
    b.update()
    np.testing.assert_array_equal(np.asarray(b.forward_msg), [[1, 2, 0], [3, 4, 0], [5, 6, 7]])
    b.connect(srk.Observation(np.array([[8.0], [9.0]])))
    b.update()
    np.testing.assert_array_equal(np.asarray(b.forward_msg), [[3, 4, 0], [5, 6, 7], [8, 0, 0], [9, 0, 0]])
    assert b.n_points == 4 and isinstance(b.forward_msg, PointMessage)
    # checkpoints keep the history: a resumed buffer continues it
    c = Buffer(size=4)
    c.load_full_state_dict(b.full_state_dict())
    c.connect(srk.Observation(np.array([[1.0, 1.0, 1.0]])))
    c.update()
    np.testing.assert_array_equal(np.asarray(c.forward_msg), [[5, 6, 7], [8, 0, 0], [9, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"_Buffer: the saved buffer must be finite"):
        Buffer().load_full_state_dict({"history/buffer": torch.tensor([1.0, float("nan")])})
    with pytest.raises(ValueError, match=r"_Buffer: size \(or -1 for no limit\) must be"):
        Buffer(size=0)


def test_ttot_takes_a_module_not_updated_yet_as_uniform(tmp_path):
    srk.set_output_root(tmp_path)
    q = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    tt = srk.TtoT.TtoT(smoothing=0.1)
    later = srk.MLDA(3, [10])  # never updated: no message yet
    later.connect(srk.Observation(np.ones((2, 4))))
    tt.connect(srk.Observation(ClassProbs.from_probs(q)), later)
    tt.update()
    r = (q + 0.1) / (q + 0.1).sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(tt.forward_msg), r, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(later.get_backward_msg()), r, rtol=1e-10)
