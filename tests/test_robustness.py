"""Reliability: random and hostile inputs to every public constructor and ``update()`` of
Observation, VAE, GMM, MLDA and MarkovModel.  For every input the test works out whether it is
valid: a valid input must succeed, an invalid one must raise the ``ValueError`` whose message
names the module and the problem -- never a ``RuntimeError``/``IndexError``/... from deep inside
torch.  Plus numerical stability at extreme scales.  Hypothesis with few examples and small shapes
to stay fast."""

import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import serket_pyro as srk
from serket_pyro.datasets import load_hmm_toy
from serket_pyro.modules.gmm import GMM
from serket_pyro.messages import ClassProbs
from serket_pyro.modules.mlda import MLDA
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.validation import MAX_INT
from serket_pyro.modules.vae import VAE

# SERKET_ROBUST_EXAMPLES=300 searches harder (random seeds) than the default quick, fixed run
_N_EXAMPLES = int(os.environ.get("SERKET_ROBUST_EXAMPLES", "15"))
FAST = settings(max_examples=_N_EXAMPLES, deadline=None, derandomize=_N_EXAMPLES <= 15,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# values that hurt: NaN, inf, negatives, zeros, tiny and huge magnitudes
HOSTILE = st.one_of(st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-8, 1e8, 255.0, 0.5]),
                    st.floats(-10, 10, allow_nan=False))


def arrays(min_dims=0, max_dims=3, max_side=4, elements=HOSTILE):
    return hnp.arrays(np.float64, hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                                   max_side=max_side), elements=elements)


def expect(error, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` must succeed when ``error`` is None (its result is returned), and
    otherwise raise a ``ValueError`` whose message matches the regex ``error`` (returns None)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error is None:
            return fn(*args, **kwargs)
        with pytest.raises(ValueError, match=error):
            fn(*args, **kwargs)
        return None


# ------------------------------------------------------------------------------ expected refusals
def observation_error(data):
    """The message ``srk.Observation(data)`` must give, or None when ``data`` are valid."""
    obs = r"module\d+_obs: "
    if data is None:  # the original's missing modality (MLDA reads it as zero counts)
        return None
    if isinstance(data, (str, dict)):
        return obs + "data must be a numeric array"
    try:
        a = np.asarray(data, dtype=np.float64)
    except ValueError:  # ragged lists
        return obs + "data must be a numeric array"
    if a.ndim == 0:
        return obs + "data must have at least one axis"
    if a.shape[0] == 0:
        return obs + r"data are empty \(0 data points\)"
    if a.ndim >= 2 and a[:1].size == 0:
        return obs + "data have 0 dimensions per data point"
    if not np.isfinite(a).all():
        return obs + r"data contain \d+ NaN or infinite value"
    return None


def int_error(value, what, minimum=1):
    """The message of an integer argument ``what``, or None when ``value`` is valid."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and float(value).is_integer() and minimum <= value <= MAX_INT)
    return None if ok else f"{what} must be an integer in {minimum} \\.\\. {MAX_INT}, got "


def float_error(value, what):
    """The message of a positive-number argument ``what``, or None when ``value`` is valid."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    return None if ok else f"{what} must be a (finite )?number"


def category_error(category):
    """The message of ``category`` at construction, or None when it is valid."""
    if category is None:
        return None
    if isinstance(category, str):
        return "category must be integer labels"
    c = np.asarray(category)
    if c.ndim == 2 and 1 in c.shape:
        c = c.reshape(-1)
    if c.ndim != 1:
        return r"category must be 1-D \(N,\)"
    if c.size == 0:
        return "category is empty"
    if not np.isfinite(c).all():
        return "category contains NaN or infinite values"
    if (c != np.round(c)).any():
        return "category must be integer labels, got non-integer values"
    if c.min() < 0:
        return "category contains negative labels"
    return None


def first(name, *errors):
    """The first of ``errors`` that is not None, prefixed by the module's name pattern."""
    for e in errors:
        if e is not None:
            return rf"module\d+_{name}: {e}"
    return None


def n_points(data):
    return np.asarray(data, dtype=np.float64).shape[0]


# ------------------------------------------------------------------------------ Observation
@FAST
@given(data=st.one_of(arrays(), st.lists(st.lists(st.integers(-3, 3), max_size=3), max_size=3),
                      st.sampled_from([None, "abc", 3, [], [[]], [[1, 2], [3]], {"a": 1}])))
def test_observation_any_input(data):
    obs = expect(observation_error(data), srk.Observation, data)
    if data is None:  # Observation(None): a missing modality, no data
        assert obs.missing and obs.data is None and obs.n_points is None
    elif obs is not None:
        assert obs.data.dim() == 2 and obs.n_points >= 1 and bool(torch.isfinite(obs.data).all())


def test_observation_valid_inputs_all_succeed():
    for data in ([1, 2, 3], [[1, 2], [3, 4]], np.zeros((2, 3, 4)), np.arange(5, dtype=np.uint8), torch.ones(3, 2)):
        assert srk.Observation(data).n_points >= 1


# ------------------------------------------------------------------------------ constructors
BAD_NUMBERS = st.one_of(st.integers(-3, 60), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([None, "3", True, [2], 2.0, 1e9, 1e30]))


@FAST
@given(K=BAD_NUMBERS, itr=BAD_NUMBERS, alpha=BAD_NUMBERS)
def test_constructors_reject_bad_hyperparameters(K, itr, alpha):
    expect(first("gmm", int_error(K, r"K \(number of classes\)"), int_error(itr, "itr"), float_error(alpha, "alpha")),
           GMM, K, itr, alpha=alpha)
    expect(first("mlda", int_error(K, r"K \(number of topics\)"), int_error(itr, "itr"), float_error(alpha, "alpha")),
           MLDA, K, None, itr, alpha=alpha)
    expect(first("mm", int_error(itr, "num_samp"), float_error(alpha, "alpha")), MarkovModel, itr, alpha=alpha)
    expect(first("vae", int_error(K, "latent_dim"), int_error(itr, "itr"), float_error(alpha, "lr")),
           VAE, K, itr=itr, lr=alpha)


def test_constructors_take_valid_hyperparameters():
    for K, itr, alpha in ((1, 1, 1e-3), (3, 2.0, 2), (np.int64(5), 60, 0.5)):
        GMM(K, itr, alpha=alpha)
        MLDA(K, None, itr, alpha=alpha)
        MarkovModel(itr, alpha=alpha)
        VAE(K, itr=itr, lr=alpha)


@FAST
@given(category=st.one_of(arrays(max_dims=2), st.sampled_from([None, "abc", [1.5, 2.0], [[0, 1], [1, 0]]])))
def test_constructors_reject_bad_category(category):
    error = category_error(category)
    expect(first("gmm", error), GMM, 2, category=category)
    expect(first("mlda", error), MLDA, 2, category=category)
    expect(first("mm", error), MarkovModel, category=category)


# ------------------------------------------------------------------------------ update()
def connect_to_observation(module, x) -> bool:
    """Connect ``module`` (``None``: refused) to an Observation of ``x``; ``False`` where either
    was refused (each refusal already checked by ``expect``)."""
    if module is None:
        return False
    obs = expect(observation_error(x), srk.Observation, x)
    if obs is None:
        return False
    module.connect(obs)
    return True


@FAST
@given(x=arrays(min_dims=1, max_dims=3), K=st.integers(1, 8), category=st.one_of(st.none(), arrays(1, 1)))
def test_gmm_update_any_input(x, K, category, tmp_path):
    g = expect(first("gmm", category_error(category)), GMM, K, itr=2, category=category)
    if not connect_to_observation(g, x):
        return
    N = n_points(x)
    error = None
    if category is not None and len(category) != N:
        error = f"category has {len(category)} labels but the data have N={N} points"
    elif K > N:
        error = f"K={K} classes for N={N} data points: learning needs K <= N"
    n_files = len([p for p in tmp_path.rglob("*") if p.is_file()])
    expect(first("gmm", error), g.update)
    if error is not None:
        assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == n_files  # nothing written
    else:
        p = g.forward_msg.probs
        assert bool(torch.isfinite(p).all()) and torch.allclose(p.sum(1), torch.ones_like(p[:, 0]))


# counts up to 255: 1e8 counts would be 1e8 tokens per entry (minutes; the memory refusal of too
# many tokens is tested in test_bad_input.py)
COUNTS = st.one_of(st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-8, 255.0, 0.5]),
                   st.floats(-10, 10, allow_nan=False), st.integers(-2, 5).map(float))


@FAST
@given(x=arrays(min_dims=1, max_dims=2, elements=COUNTS),
       K=st.integers(1, 8), weights=st.sampled_from([None, [3], [200], [0], [-1], [1, 2], ["a"]]),
       token_rule=st.sampled_from(["largest_remainder", "fractional", "original"]))
def test_mlda_update_any_input(x, K, weights, token_rule):
    werr = {"[0]": r"weights\[0\] must be a finite number > 0", "[-1]": r"weights\[0\] must be a finite number > 0",
            "['a']": r"weights\[0\] must be a positive number or None"}.get(str(weights))
    m = expect(first("mlda", werr), MLDA, K, weights, itr=2, token_rule=token_rule)
    if not connect_to_observation(m, x):
        return
    v = np.asarray(x, dtype=np.float64).reshape(n_points(x), -1)
    error = None
    if weights is not None and len(weights) != 1:
        error = "weights has 2 entries but 1 children are connected"
    elif token_rule != "original" and (v < 0).any():
        error = r"the counts from module\d+_obs contain \d+ negative value"
    elif (np.maximum(v, 0).sum(1) == 0).any():
        error = r"\d+ of \d+ documents have all-zero counts in every modality"
    expect(first("mlda", error), m.update)
    if error is None:
        assert bool(torch.isfinite(m.theta_).all())


@FAST
@given(n1=st.integers(1, 4), n2=st.integers(1, 4))
def test_mlda_mismatched_modalities(n1, n2):
    m = MLDA(2, [5, 5], itr=2)
    a, b = srk.Observation(np.ones((n1, 3))), srk.Observation(np.ones((n2, 2)))
    error = None if n1 == n2 else rf"children have different numbers of data points \(module\d+_obs: N={n1}, "
    expect(first("mlda", error), m.connect, a, b)
    if error is None:
        m.update()
        assert bool(torch.isfinite(m.theta_).all())


def class_probs_error(lp):
    """The message of ``ClassProbs(lp)``, or None when ``lp`` are valid log-probabilities."""
    if lp.ndim != 2:
        return r"class log-probabilities must be 2-D \(N, K\)"
    if 0 in lp.shape:
        return "class log-probabilities must be non-empty"
    if np.isnan(lp).any() or (lp == np.inf).any():
        return r"class log-probabilities contain NaN or \+inf"
    if (lp == -np.inf).all(1).any():
        return "some rows of the class probabilities are all zero"
    return None


@FAST
@given(lp=arrays(min_dims=1, max_dims=3, elements=st.one_of(HOSTILE, st.just(-np.inf))),
       itr=st.integers(1, 3), eps=st.sampled_from(["learn", 0.0, 0.3]),
       method=st.sampled_from(["forward_backward", "original"]))
def test_markov_model_update_any_input(lp, itr, eps, method):
    assume(not (lp.ndim == 2 and lp.shape[1] == 1 and method == "forward_backward"))  # K = 1: see below
    msg = expect(class_probs_error(lp), ClassProbs, torch.as_tensor(lp))
    if msg is None:
        return
    mm = MarkovModel(itr=itr, evidence_noise=eps, method=method)
    mm.connect(srk.Observation(msg))
    error = None if lp.shape[0] >= 2 else f"a Markov model needs at least 2 time steps, got N={lp.shape[0]}"
    expect(first("mm", error), mm.update)
    if error is None:
        assert bool(torch.isfinite(mm.trans_prob_).all())


def test_markov_model_one_class_child():
    mm = MarkovModel(itr=1)
    mm.connect(srk.Observation(ClassProbs(torch.zeros(2, 1, dtype=torch.float64))))
    mm.update()
    assert mm.trans_prob_.tolist() == [[1.0]]


def test_markov_model_rejects_point_data():
    mm = MarkovModel()
    mm.connect(srk.Observation(np.ones((4, 3))))
    with pytest.raises(ValueError, match="class probabilities"):
        mm.update()


@FAST
@given(x=arrays(min_dims=1, max_dims=3, max_side=5), latent=st.integers(1, 3), batch=st.integers(1, 6),
       likelihood=st.sampled_from(["bernoulli", "gaussian"]))
def test_vae_update_any_input(x, latent, batch, likelihood):
    v = VAE(latent, itr=1, batch_size=batch, likelihood=likelihood, hidden=4)
    obs = expect(observation_error(x), srk.Observation, x)
    if obs is None:
        return
    v.connect(obs)
    error = None
    if likelihood == "bernoulli":
        lo, hi = float(x.min()), float(x.max())
        eight_bit = hi > 1 and lo >= 0 and hi <= 255 and (x == np.round(x)).all()
        if not eight_bit and (lo < 0 or hi > 1):
            error = r"likelihood='bernoulli' needs data in \[0, 1\]"
    elif np.abs(x).max() > 1e3:
        # Gaussian data of magnitude 1e8: whether training diverges depends on the draws; if it
        # does, the refusal must be the VAE's own (before, a message constructor's NaN error)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                v.update()
            except ValueError as e:
                assert re.match(r"module\d+_vae: the networks give NaN or infinite latents", str(e)), str(e)
                return
        assert bool(torch.isfinite(v.forward_msg.loc).all())
        return
    expect(first("vae", error), v.update)
    if error is None:
        assert bool(torch.isfinite(v.forward_msg.loc).all())


def test_vae_recognition_with_other_width_is_a_value_error():
    v = VAE(2, itr=1, hidden=4)
    v.connect(srk.Observation(np.random.default_rng(0).random((6, 5))))
    v.update()
    r = VAE(2, itr=1, hidden=4, mode="recog")
    r.load_state_dict(v.state_dict())
    r.connect(srk.Observation(np.random.default_rng(1).random((6, 7))))
    with pytest.raises(ValueError, match="D=7"):
        r.update()


@FAST
@given(n_child=st.integers(1, 5), n_cat=st.integers(1, 5))
def test_category_length_mismatch(n_child, n_cat):
    x = np.random.default_rng(0).normal(size=(n_child, 2))
    g = GMM(2, itr=2, category=np.arange(n_cat) % 2)
    g.connect(srk.Observation(x))
    if n_child != n_cat:
        error = f"category has {n_cat} labels but the data have N={n_child} points"
    elif n_child < 2:
        error = f"K=2 classes for N={n_child} data points"
    else:
        error = None
    expect(first("gmm", error), g.update)


# ------------------------------------------------------------------------------ stability
@pytest.mark.parametrize("scale", [1e-12, 1e-8, 1e-6, 1.0, 1e8, 1e12])
def test_gmm_data_prior_is_scale_invariant(scale):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 2)), rng.normal(3, 1, (40, 2))]) * scale
    g = GMM(2, itr=20, category=np.repeat([0, 1], 40), prior_scale="data")
    g.connect(srk.Observation(x))
    srk.set_seed(0)
    g.update()
    p = g.forward_msg.probs
    assert bool(torch.isfinite(p).all()) and torch.allclose(p.sum(1), torch.ones(80, dtype=p.dtype))
    assert g.metrics_["accuracy"] == 1.0


def _hmm_toy_classes(x, category, scale):
    srk.reset_module_counter()
    g = GMM(4, itr=30, category=category)
    g.connect(srk.Observation(x * scale))
    srk.set_seed(0)
    g.update()
    g.update()
    return g.forward_msg.probs.argmax(1), g.metrics_["accuracy"], g.means_ / scale


def test_gmm_gives_the_same_classes_at_every_scale(data_dir):
    """The HMM toy (4 classes, 0.99 at scale 1) at scales 1e-12 .. 1e12: the same classes and the
    same means in data units (before, scales <= 1e-6 gave one class, accuracy 0.25-0.52)."""
    d = load_hmm_toy(root=data_dir)
    ref, acc, means = _hmm_toy_classes(d.data, d.category, 1.0)
    assert acc >= 0.98
    for scale in (1e-12, 1e-9, 1e-6, 1e-3, 3.7, 1e6, 1e12):
        z, a, m = _hmm_toy_classes(d.data, d.category, scale)
        assert torch.equal(z, ref) and a == acc, scale
        assert torch.allclose(m, means, rtol=1e-6, atol=1e-9), scale


@pytest.mark.parametrize("scale", [1e-8, 1e8])
@pytest.mark.parametrize("prior_scale", ["data", "absolute"])
def test_gmm_extreme_scales_give_finite_probabilities(scale, prior_scale):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 2)), rng.normal(3, 1, (40, 2))]) * scale
    g = GMM(2, itr=20, prior_scale=prior_scale)
    g.connect(srk.Observation(x))
    g.update()
    p = g.forward_msg.probs
    assert bool(torch.isfinite(p).all()) and torch.allclose(p.sum(1), torch.ones(80, dtype=p.dtype))
    down = g.children[0].get_backward_msg()  # the GaussianMessage sent to the observation
    assert bool(torch.isfinite(down.loc).all()) and bool((down.scale > 0).all())


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_mlda_extreme_counts_give_finite_probabilities(scale):
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(20, 6)).astype(np.float64) + np.eye(20, 6) * 10
    m = MLDA(3, [50], itr=10)
    m.connect(srk.Observation(counts * scale))
    m.update()
    assert bool(torch.isfinite(m.theta_).all()) and torch.allclose(m.theta_.sum(1), torch.ones(20, dtype=torch.float64))
    assert all(bool(torch.isfinite(p).all()) for p in m.phi_)
