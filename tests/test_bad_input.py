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
