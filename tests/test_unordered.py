"""A Markov model on data without (or with only partial) sequential order (issue 21).

The chain is a prior over class sequences.  On data in random order its learned transition rows
must shrink to the class marginal and its message to the child must be flat, so that the child
classifies exactly as without the chain; on partly ordered data it must help and recover the
transition matrix.  Plus the driver's guard against a module whose objective keeps falling.
"""

import warnings

import numpy as np
import pytest

import serket_pyro as srk
from serket_pyro import gmm, mlda, mm
from serket_pyro.driver import falling_objectives
from serket_pyro.metrics import best_mapping
from serket_pyro.datasets.paired_data import markov_order, markov_order_transitions


def _fit(children_of_mm, modules, iterations, seed):
    srk.set_seed(seed)
    srk.fit(*modules, n_iter=iterations, progress=False)


def gmm_run(data, category, seed, with_mm, K=4, iterations=4):
    srk.reset_module_counter()
    obs = srk.Observation(data)
    g = gmm.GMM(K, category=category)
    g.connect(obs)
    modules = [g]
    m = None
    if with_mm:
        m = mm.MarkovModel(category=category)
        m.connect(g)
        modules.append(m)
    _fit(g, modules, iterations, seed)
    return g, m


# ----------------------------------------------------------------------------------- no order
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmm_mm_on_shuffled_hmm_toy_equals_gmm_alone(data_dir, seed):
    d = np.load(f"{data_dir}/serket_hmm_toy.npz")
    perm = np.random.default_rng(seed).permutation(len(d["category"]))
    x, c = d["data"][perm], d["category"][perm]
    alone, _ = gmm_run(x, c, seed, False)
    g, m = gmm_run(x, c, seed, True)
    # the chain found no order: its rows are the marginal and its message is flat, so the GMM's
    # updates are the ones without it, draw for draw
    A = m.trans_prob_.numpy()
    np.testing.assert_allclose(A, np.tile(A[0], (4, 1)), atol=1e-12)
    assert g.get_class_backward_msg(len(c), 4) is None
    assert g.metrics_["accuracy"] == pytest.approx(alone.metrics_["accuracy"], abs=0.01)
    np.testing.assert_array_equal(g.assignments_.numpy(), alone.assignments_.numpy())


def test_mlda_mm_on_shuffled_documents_equals_mlda_alone():
    rng = np.random.default_rng(3)
    N, K, V = 120, 3, 12
    topic = np.arange(N) % K
    rng.shuffle(topic)
    # each topic favours its own third of the vocabulary in both modalities
    phi = np.full((K, V), 0.02)
    for k in range(K):
        phi[k, 4 * k:4 * k + 4] = 1.0
    phi /= phi.sum(1, keepdims=True)
    docs = [np.stack([rng.multinomial(30, phi[t]) for t in topic]) for _ in range(2)]

    def run(with_mm):
        srk.reset_module_counter()
        o1, o2 = srk.Observation(docs[0]), srk.Observation(docs[1])
        lda = mlda.MLDA(K, itr=30, category=topic)
        lda.connect(o1, o2)
        modules = [lda]
        if with_mm:
            m = mm.MarkovModel()
            m.connect(lda)
            modules.append(m)
        srk.set_seed(0)
        srk.fit(*modules, n_iter=4, progress=False)
        return lda

    alone, with_mm = run(False), run(True)
    assert alone.metrics_["accuracy"] > 0.9
    assert with_mm.metrics_["accuracy"] == pytest.approx(alone.metrics_["accuracy"], abs=0.01)
    np.testing.assert_allclose(with_mm.theta_.numpy(), alone.theta_.numpy(), atol=1e-12)


# ------------------------------------------------------------------------------ partial order
def test_partly_ordered_sequence_recovers_the_transition_matrix():
    rng = np.random.default_rng(0)
    K, T, p_next = 4, 1200, 0.7
    means = np.array([[0.0, 0.0], [3.5, 0.0], [0.0, 3.5], [3.5, 3.5]])
    pool = np.repeat(np.arange(K), T)                                   # plenty of items per class
    rows = markov_order(pool, p_next, n=T, rng=rng, n_classes=K)
    c = pool[rows]
    x = means[c] + rng.normal(size=(len(c), 2))
    alone, _ = gmm_run(x, c, 0, False)
    g, m = gmm_run(x, c, 0, True)
    assert g.metrics_["accuracy"] > alone.metrics_["accuracy"] + 0.005  # the chain helps
    # learned matrix in the true labels' order, against the true labels' transition frequencies
    mapping = best_mapping(c, m.forward_msg.probs.argmax(1).numpy())
    perm = np.array([mapping[k] for k in range(K)])
    A = np.empty((K, K))
    A[np.ix_(perm, perm)] = m.trans_prob_.numpy()
    counts = np.zeros((K, K))
    np.add.at(counts, (c[:-1], c[1:]), 1)
    empirical = counts / counts.sum(1, keepdims=True)
    assert np.abs(A - empirical).max() < 0.05, np.abs(A - empirical).max()
    assert np.abs(A - markov_order_transitions(p_next, K)).max() < 0.05


def test_markov_order_uses_each_item_once_and_follows_the_chain():
    labels = np.repeat(np.arange(10), 300)
    rows = markov_order(labels, 0.7, rng=np.random.default_rng(1))
    assert len(rows) > 2000 and len(np.unique(rows)) == len(rows)
    c = labels[rows]
    successor = (c[1:] == (c[:-1] + 1) % 10).mean()
    assert successor == pytest.approx(0.7 + 0.3 / 10, abs=0.03)
    assert np.abs(markov_order_transitions(0.7).sum(1) - 1).max() < 1e-12
    with pytest.raises(ValueError, match="p_next"):
        markov_order(labels, 1.5)


# ------------------------------------------------------------------------------ driver guard
def test_falling_objectives_flags_two_falls_in_a_row():
    hist = [{"a": {"objective": v}, "b": {"objective": w}}
            for v, w in ((-100.0, -100.0), (-120.0, -99.0), (-150.0, -100.5))]
    flags = falling_objectives(hist, ["a", "b"])
    assert len(flags) == 2 and flags[0].startswith("a:") and flags[1].startswith("b:")
    assert falling_objectives(hist[:2], ["a", "b"]) == []               # one fall is not enough
    # a child's objective falls while its parent's rises more: the system got better
    better = [{"a": {"objective": v}, "b": {"objective": w}}
              for v, w in ((-100.0, -300.0), (-120.0, -200.0), (-150.0, -100.0))]
    assert falling_objectives(better, ["a", "b"]) == []
    # falls within the tolerance (sampler noise, a child that changed its message) are not flagged
    tiny = [{"a": {"objective": -1e4 - d}} for d in (0.0, 100.0, 200.0)]
    assert falling_objectives(tiny, ["a"]) == []


class _Worsening(srk.Module):
    """Test module whose objective falls at every update."""

    def __init__(self):
        super().__init__("worse")

    def update(self):
        x = self.get_observations()[0]
        self.set_forward_msg(x)
        self.metrics_ = {"objective": -float(self.n_updates_) ** 2}
        self.n_updates_ += 1


def test_fit_flags_a_module_that_keeps_making_things_worse():
    obs = srk.Observation(np.zeros((5, 2)))
    w = _Worsening()
    w.connect(obs)
    with pytest.warns(RuntimeWarning, match="objective fell"):
        hist = srk.fit(w, n_iter=4, progress=False)
    assert "flags" not in hist[1] and any(f.startswith(w.name) for f in hist[2]["flags"])


def test_tutorial_modules_report_their_objective(data_dir):
    d = np.load(f"{data_dir}/serket_hmm_toy.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)                 # no false alarm here
        g, m = gmm_run(d["data"], d["category"], 0, True, iterations=4)
    assert np.isfinite(g.metrics_["objective"]) and m.metrics_["objective"] == m.log_likelihood_
