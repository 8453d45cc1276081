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
from serket_pyro.gmm import GMM, _kmeanspp
from serket_pyro.joint import joint_model
from serket_pyro.mlda import MLDA
from serket_pyro.mm import MarkovModel
from serket_pyro.vae import VAE


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
    before = [p.detach().clone() for p in jm.parameters()]
    with pytest.raises(ValueError, match=message):
        jm.fit(**{"epochs": 1, "init": None, **kwargs})
    assert all(torch.equal(a, b) for a, b in zip(before, jm.parameters()))


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
