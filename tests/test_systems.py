"""Modules working together on real data."""

import numpy as np
import pytest

import serket_pyro as srk
from serket_pyro import gmm, mm


def gmm_accuracy(data, category, seed, with_mm, iterations=5):
    srk.reset_module_counter()
    srk.set_seed(seed)
    obs = srk.Observation(data)
    g = gmm.GMM(4, category=category)
    g.connect(obs)
    modules = [g]
    if with_mm:
        m = mm.MarkovModel()
        m.connect(g)
        modules.append(m)
    srk.fit(*modules, n_iter=iterations, progress=False)
    return g.metrics_["accuracy"]


def test_gmm_mm_on_hmm_toy_is_at_least_gmm_alone(data_dir):
    d = np.load(f"{data_dir}/serket_hmm_toy.npz")
    seeds = range(5)
    alone = [gmm_accuracy(d["data"], d["category"], s, False) for s in seeds]
    with_mm = [gmm_accuracy(d["data"], d["category"], s, True) for s in seeds]
    print(f"GMM alone {alone}, GMM+MM {with_mm}")
    # measured: GMM alone 0.98-0.99, GMM+MM 1.00 on every seed (the original: 0.74-0.98 and ~0.74)
    assert all(b >= a for a, b in zip(alone, with_mm))
    assert min(with_mm) == pytest.approx(1.0)


def test_graph_with_two_parents_combines_their_messages(data_dir):
    """A GMM under two Markov models receives the product of their messages."""
    d = np.load(f"{data_dir}/serket_hmm_toy.npz")
    srk.set_seed(0)
    obs = srk.Observation(d["data"])
    g = gmm.GMM(4, category=d["category"])
    g.connect(obs)
    m1, m2 = mm.MarkovModel(), mm.MarkovModel(method="original")
    m1.connect(g)
    m2.connect(g)
    srk.fit(g, n_iter=2, progress=False)
    msgs = g.get_backward_msgs()
    assert set(msgs) == {m1.name, m2.name}
    prod = msgs[m1.name] * msgs[m2.name]
    np.testing.assert_allclose(g.get_backward_msg().probs.numpy(), prod.probs.numpy(), atol=1e-12)
