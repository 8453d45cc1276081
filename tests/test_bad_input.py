"""Bad input (issue 14): every refusal is a ``ValueError`` whose message names the module or
function and the problem, raised before any file is written; the valid neighbours still work."""

import json
import math

import numpy as np
import pytest
import torch

import serket_pyro as srk
from serket_pyro import features, metrics, validation
from serket_pyro.features import HACExtractor
from serket_pyro.modules.gmm import GMM, _kmeanspp
from serket_pyro.joint import joint_model
from serket_pyro.modules.mlda import MLDA
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.modules.vae import VAE


def files_under(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


@pytest.fixture
def no_files(tmp_path):
    """Asserts after the test that nothing was written under the test's folder (the cwd)."""
    yield
    assert files_under(tmp_path) == []


def small_memory(monkeypatch, nbytes=1000):
    monkeypatch.setattr(validation, "memory_limit", lambda: nbytes)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("value, expected", [(3, 3), (np.int64(3), 3), (3.0, 3), (np.float32(7), 7)])
def test_check_positive_int_takes_integers(value, expected):
    got = validation.check_positive_int(value, "n", "owner")
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.5, "5", None, [3], math.nan, math.inf, -1, 0, 1e30,
                                   2**31])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"^owner: n must be an integer in 1 \.\. 2147483647, got "):
        validation.check_positive_int(value, "n", "owner")


def test_check_positive_int_bounds():
    assert validation.check_positive_int(0, "n", "owner", minimum=0) == 0
    assert validation.check_positive_int(10**12, "n", "owner", maximum=None) == 10**12
    with pytest.raises(ValueError, match=r"owner: n must be an integer in 0 \.\. 2, got 3"):
        validation.check_positive_int(3, "n", "owner", minimum=0, maximum=2)


@pytest.mark.parametrize("value", [True, "0.5", None, math.nan, -1.0, 0.0])
def test_check_positive_float_refuses(value):
    with pytest.raises(ValueError, match=r"^owner: x must be a (finite )?number"):
        validation.check_positive_float(value, "x", "owner")


def test_check_memory_states_the_size(monkeypatch):
    small_memory(monkeypatch, 2**20)
    validation.check_memory(2**17, "things", "owner")  # exactly 1 MiB: fits
    with pytest.raises(ValueError, match=r"owner: things need 1\.5 MiB of memory, more than the 1 MiB of this machine"):
        validation.check_memory(3 * 2**16, "things", "owner")


def test_check_category_refuses_complex_and_strings():
    with pytest.raises(ValueError, match="m: category must be integer labels, got dtype complex128"):
        validation.check_category(np.array([0, 1]) + 0j, None, "m")
    with pytest.raises(ValueError, match="m: category must be integer labels, got 'ab'"):
        validation.check_category("ab", None, "m")


# ------------------------------------------------------------------------------ constructors
@pytest.mark.parametrize("make, what", [
    (lambda v: GMM(v), r"module000_gmm: K \(number of classes\)"),
    (lambda v: MLDA(v), r"module000_mlda: K \(number of topics\)"),
    (lambda v: VAE(v), "module000_vae: latent_dim"),
    (lambda v: MarkovModel(v), "module000_mm: num_samp"),
    (lambda v: GMM(2, itr=v), "module000_gmm: itr"),
])
@pytest.mark.parametrize("value", [1e30, 2.5, "5", True])
def test_constructors_refuse_absurd_or_non_integer_sizes(make, what, value, no_files):
    srk.reset_module_counter()
    with pytest.raises(ValueError, match=what + " must be an integer"):
        make(value)


def test_observation_refuses_complex_data(no_files):
    with pytest.raises(ValueError, match="module000_obs: data must be real numbers, got complex values"):
        srk.Observation(np.ones((3, 2)) + 1j)
    with pytest.raises(ValueError, match="module001_obs: data must be real numbers, got complex values"):
        srk.Observation(torch.ones(3, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="module002_gmm: mean_prior must be real numbers"):
        GMM(2, mean_prior=np.array([0.0, 1.0j]))


# ------------------------------------------------------------------------------ fit
@pytest.mark.parametrize("n_iter", [-1, 0, "5", 2.5, True, None, 1e30])
def test_fit_refuses_bad_n_iter(n_iter, no_files):
    g = GMM(2, itr=2)
    g.connect(srk.Observation(np.random.default_rng(0).normal(size=(10, 2))))
    with pytest.raises(ValueError, match=r"^fit: n_iter must be an integer in 1 \.\. "):
        srk.fit(g, n_iter=n_iter, progress=False, checkpoint_dir="ckpt")
    assert g.n_updates_ == 0


def test_fit_takes_an_integral_float(tmp_path):
    g = GMM(2, itr=2)
    g.connect(srk.Observation(np.random.default_rng(0).normal(size=(10, 2))))
    assert len(srk.fit(g, n_iter=2.0, progress=False)) == 2


# ------------------------------------------------------------------------------ GMM
def test_gmm_refuses_what_does_not_fit_in_memory(monkeypatch, no_files):
    small_memory(monkeypatch, 4096)
    g = GMM(2, itr=2)
    g.connect(srk.Observation(np.random.default_rng(0).normal(size=(50, 3))))
    with pytest.raises(ValueError, match=r"module000_gmm: N x D\^2 = 50 x 3\^2 outer products and N x K x D = "
                                         r"50 x 2 x 3 distances need 6 KiB of memory, more than the 4 KiB"):
        g.update()


@pytest.mark.parametrize("scale", [1e-120, 1e120, 1e200])
def test_gmm_refuses_data_whose_squares_overflow(scale, no_files):
    g = GMM(2, itr=2)
    g.connect(srk.Observation(np.random.default_rng(0).normal(size=(20, 2)) * scale))
    with pytest.raises(ValueError, match=r"module000_gmm: the data spread .* lies outside 1e-100 \.\. 1e\+100: .*"
                                         "rescale the data"):
        g.update()


def test_gmm_takes_constant_data():
    g = GMM(2, itr=2)
    g.connect(srk.Observation(np.full((10, 2), 3.0)))
    g.update()
    assert torch.isfinite(g.forward_msg.probs).all()


@pytest.mark.parametrize("scale", [1e-170, 1e160])
def test_kmeanspp_is_scale_free(scale):
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(60, 2)) + np.repeat([[0, 0], [8, 0], [0, 8]], 20, 0))
    torch.manual_seed(0)
    ref = _kmeanspp(x, 3)
    torch.manual_seed(0)
    assert torch.equal(_kmeanspp(x * scale, 3), ref)


@pytest.mark.parametrize("make", [lambda c: GMM(2, itr=2, category=c), lambda c: MLDA(2, itr=2, category=c),
                                  lambda c: MarkovModel(itr=2, category=c)])
def test_category_of_the_wrong_length_is_refused_before_any_file(make, no_files):
    rng = np.random.default_rng(0)
    m = make(np.zeros(7, dtype=int))
    if isinstance(m, MarkovModel):
        obs = srk.Observation(srk.messages.ClassProbs.from_probs(torch.as_tensor(rng.dirichlet([1, 1], 10))))
    else:
        obs = srk.Observation(rng.integers(0, 4, size=(10, 3)).astype(float) + 1)
    m.connect(obs)
    with pytest.raises(ValueError, match=f"{m.name}: category has 7 labels but the data have N=10 points"):
        m.update()


# ------------------------------------------------------------------------------ VAE, MLDA
def test_vae_refuses_networks_that_do_not_fit(monkeypatch, no_files):
    v = VAE(10**9, itr=1)
    v.connect(srk.Observation(np.random.default_rng(0).random((4, 3))))
    with pytest.raises(ValueError, match=r"module000_vae: .* need .* of memory, more than the"):
        v.update()
    small_memory(monkeypatch, 10_000)
    v = VAE(2, itr=1, hidden=100)
    v.connect(srk.Observation(np.random.default_rng(0).random((4, 3))))
    with pytest.raises(ValueError, match=r"module002_vae: networks of 1200 weights \(D=3, hidden=100, latent_dim=2\) "
                                         r"need 18\.8 KiB of memory"):
        v.update()


def test_mlda_refuses_tokens_that_do_not_fit(no_files):
    m = MLDA(3, [1e30], itr=2)
    m.connect(srk.Observation(np.random.default_rng(0).integers(1, 5, size=(6, 4)).astype(float)))
    with pytest.raises(ValueError, match=r"module000_mlda: 6e\+30 tokens of module001_obs x K=3 topics need .* of memory"):
        m.update()


# ------------------------------------------------------------------------------ joint model
def _joint():
    x = torch.rand(12, 6)
    obs = srk.Observation(x)
    v = VAE(2, hidden=5, batch_size=4)
    g = GMM(3)
    v.connect(obs)
    g.connect(v)
    return joint_model([obs, v, g])


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, r"joint: epochs must be an integer in 0 \.\. "),
    ({"epochs": 1.5}, r"joint: epochs must be an integer in 0 \.\. "),
    ({"batch_size": 0}, r"joint: batch_size must be an integer in 1 \.\. "),
    ({"pretrain_epochs": "2"}, r"joint: pretrain_epochs must be an integer in 0 \.\. "),
    ({"lr": 0}, r"joint: lr must be a finite number > 0, got 0"),
    ({"eval_every": -2}, r"joint: eval_every must be an integer in 0 \.\. "),
])
def test_joint_fit_refuses_bad_arguments(kwargs, message, no_files):
    jm = _joint()
    before = [p.detach().clone() for p in jm.program.parameters()]
    with pytest.raises(ValueError, match=message):
        jm.fit(**{"epochs": 1, "init": None, **kwargs})
    assert all(torch.equal(a, b) for a, b in zip(before, jm.program.parameters()))


def test_joint_pretrain_refuses_bad_arguments():
    jm = _joint()
    with pytest.raises(ValueError, match=r"joint: batch_size must be an integer in 1 \.\. "):
        jm.pretrain(1, batch_size=0)
    with pytest.raises(ValueError, match=r"joint: epochs must be an integer in 0 \.\. "):
        jm.pretrain(-1)
    assert len(jm.pretrain(1, batch_size=4)) == 1


# ------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("max_iter", [-1, 0, 2.5, "10", None])
def test_greedy_refuses_bad_max_iter(max_iter):
    with pytest.raises(ValueError, match=r"greedy_accuracy: max_iter must be an integer in 1 \.\. "):
        metrics.greedy_accuracy([0, 1, 1], [1, 0, 0], max_iter=max_iter)
    with pytest.raises(ValueError, match=r"greedy_mapping: max_iter must be an integer in 1 \.\. "):
        metrics.greedy_mapping([0, 1, 1], [1, 0, 0], max_iter=max_iter)


def test_greedy_takes_a_valid_max_iter():
    assert metrics.greedy_accuracy([0, 1, 1], [1, 0, 0], max_iter=1) == 1.0


# ------------------------------------------------------------------------------ features
SR = 8000


@pytest.mark.parametrize("bad, message", [(np.nan, "1 NaN or infinite sample"), (np.inf, "1 NaN or infinite sample")])
def test_mfcc_refuses_non_finite_samples(bad, message):
    x = np.random.default_rng(0).normal(size=2000)
    x[100] = bad
    for fn in (features.mfcc, features.log_mel_spectrogram):
        with pytest.raises(ValueError, match=f"{fn.__name__}: signal contains {message}"):
            fn(x, SR)


def test_mfcc_refuses_stereo_and_complex():
    x = np.random.default_rng(0).normal(size=(2000, 2))
    with pytest.raises(ValueError, match=r"mfcc: signal must be 1-D \(L,\) mono samples, got shape \(2000, 2\)"):
        features.mfcc(x, SR)
    with pytest.raises(ValueError, match="mfcc: signal must be real numbers"):
        features.mfcc(x[:, 0] + 1j, SR)
    # one channel as a column is mono
    assert torch.equal(features.mfcc(x[:, :1], SR), features.mfcc(x[:, 0], SR))


@pytest.mark.parametrize("sr", ["8000", None, -8000, 0, math.nan, True])
def test_mfcc_refuses_bad_sample_rates(sr):
    with pytest.raises(ValueError, match=r"mfcc: sample_rate must be a (finite )?number"):
        features.mfcc(np.zeros(2000), sr)


def test_mfcc_refuses_absurd_frames():
    with pytest.raises(ValueError, match=r"mfcc: the window in samples .* must be an integer in 1 \.\. "):
        features.mfcc(np.zeros(2000), 1e30)
    with pytest.raises(ValueError, match=r"mfcc: n_mfcc must be an integer"):
        features.mfcc(np.zeros(2000), SR, n_mfcc=2.5)
    with pytest.raises(ValueError, match=r"mfcc: n_deltas must be an integer in 0 \.\. 2, got 3"):
        features.mfcc(np.zeros(2000), SR, n_deltas=3)


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", 1e30])
def test_kmeans_refuses_bad_k(k):
    with pytest.raises(ValueError, match=r"kmeans: k \(number of clusters\) must be an integer in 1 \.\. "):
        features.kmeans(torch.rand(10, 2), k)


def test_kmeans_refuses_bad_points(monkeypatch):
    with pytest.raises(ValueError, match="kmeans: x must be real numbers"):
        features.kmeans(torch.rand(10, 2) + 1j, 2)
    with pytest.raises(ValueError, match=r"kmeans: x must be \(n, D\), got shape \(10,\)"):
        features.kmeans(torch.rand(10), 2)
    with pytest.raises(ValueError, match="kmeans: x contains NaN"):
        features.kmeans(torch.full((10, 2), math.nan), 2)
    small_memory(monkeypatch, 100)
    with pytest.raises(ValueError, match=r"kmeans: n x k = 10 x 2 distances need 320 B of memory"):
        features.kmeans(torch.rand(10, 2, dtype=torch.float64), 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_codewords": 1e30}, "n_codewords must be an integer"),
    ({"n_codewords": 0}, "n_codewords must be an integer"),
    ({"n_codewords": 10**6}, r"one feature vector of 6000000000000 bins .* need 43\.7 TiB of memory"),
    ({"lags": [0]}, "lags must be an integer"),
    ({"lags": 5}, "lags must be a non-empty list of positive integers"),
    ({"lags": [2.5]}, "lags must be an integer"),
    ({"streams": [(0, "3")]}, "stream column range must be an integer"),
    ({"streams": [5]}, r"a stream must be a name in \('static', 'delta', 'delta2'\) or a \(start, stop\)"),
    ({"standardize": "no"}, "standardize must be True or False"),
    ({"n_iter": -1}, r"n_iter must be an integer in 0 \.\. "),
    ({"seed": -1}, "seed must be an integer"),
    ({"max_train_frames": 0}, "max_train_frames must be an integer"),
])
def test_hac_extractor_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match="HACExtractor: " + message):
        HACExtractor(**kwargs)


@pytest.fixture
def saved_hac(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(30, 4)) for _ in range(5)]
    h = HACExtractor(n_codewords=3, lags=(2,), streams=["static", (1, 3)]).fit(seqs)
    path = tmp_path / "hac.npz"
    h.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays, seqs, h.transform(seqs)


def _rewrite(path, arrays, config=None):
    out = dict(arrays)
    if config is not None:
        out["config"] = np.array(json.dumps(config))
    with open(path, "wb") as f:
        np.savez(f, **out)


def test_hac_load_round_trip(saved_hac):
    path, _, seqs, counts = saved_hac
    np.testing.assert_array_equal(HACExtractor.load(path).transform(seqs), counts)


@pytest.mark.parametrize("change, message", [
    (lambda c, a: c.update(colour="red"), r"config has unknown entries \['colour'\] and lacks \[\]"),
    (lambda c, a: c.pop("lags"), r"config has unknown entries \[\] and lacks \['lags'\]"),
    (lambda c, a: c.update(n_codewords=-3), "invalid config: HACExtractor: n_codewords must be an integer"),
    (lambda c, a: c.update(n_features_in=2.5), "invalid config: HACExtractor: n_features_in must be an integer"),
    (lambda c, a: c.update(streams=["static", [1, 9]]), r"stream 1 uses columns \(1, 9\), beyond n_features_in=4"),
    (lambda c, a: c.update(n_codewords=4), r"stream 0 has codebook \(3, 4\), mean \(4,\), scale \(4,\); the config "
                                           r"needs \(4, 4\), \(4,\), \(4,\)"),
    (lambda c, a: c.update(streams=["static"]), r"the config has 1 streams but the file holds arrays"),
    (lambda c, a: a.pop("scale_1"), r"the config has 2 streams but the file holds arrays"),
    (lambda c, a: a.update(scale_0=-a["scale_0"]), "stream 0 has non-float, non-finite or non-positive-scale arrays"),
])
def test_hac_load_refuses_unknown_or_inconsistent_files(saved_hac, change, message):
    path, arrays, _, _ = saved_hac
    config = json.loads(str(arrays.pop("config")))
    change(config, arrays)
    _rewrite(path, arrays, config)
    with pytest.raises(ValueError, match=r"^HACExtractor\.load: .*hac\.npz: " + message):
        HACExtractor.load(path)


def test_hac_load_refuses_files_it_cannot_read(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    with pytest.raises(ValueError, match=r"HACExtractor\.load: .*bad\.npz: cannot read the file"):
        HACExtractor.load(bad)
    with pytest.raises(ValueError, match=r"HACExtractor\.load: .*missing\.npz: cannot read the file"):
        HACExtractor.load(tmp_path / "missing.npz")
    _rewrite(bad, {"codebook_0": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"HACExtractor\.load: .*bad\.npz: no 'config' entry"):
        HACExtractor.load(bad)
    _rewrite(bad, {"config": np.array("{not json")})
    with pytest.raises(ValueError, match=r"HACExtractor\.load: .*bad\.npz: the config is not valid JSON"):
        HACExtractor.load(bad)
