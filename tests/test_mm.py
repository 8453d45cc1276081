"""Markov model: forward-backward against brute-force enumeration and Pyro's TraceEnum_ELBO,
transition learning, the cyclic lock-on, the original rule, validation, files and state.

Tolerances.  Exact quantities (likelihood, marginals, pairwise counts, leave-one-out messages) are
compared with ``atol=1e-10``: a wrong recursion (e.g. the leave-one-out message taken after
absorbing step t's evidence, which is the smoothed marginal) misses by > 0.1 on these chains, and
``test_leave_one_out_differs_from_smoothed`` checks that gap explicitly.  Learned quantities use
bounds that the original's sampling rule demonstrably exceeds on the same data (asserted in the
same test), so the bounds discriminate.
"""

import itertools
import math
import os

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate
from scipy.special import logsumexp

import serket_pyro as srk

from conftest import Parent
from serket_pyro.ops.forward_backward import forward_backward, forward_backward_torch, viterbi
from serket_pyro.messages import ClassProbs
from serket_pyro.metrics import accuracy
from serket_pyro.modules.mm import MarkovModel, markov_model, original_message, original_transitions
from serket_pyro.modules.mm import choose_evidence_model, evidence_model_penalty


# ---------------------------------------------------------------------------------------------
# reference implementations (independent of the code under test)
# ---------------------------------------------------------------------------------------------
def brute_force(log_init, log_trans, log_obs):
    """Enumerate all K^T sequences: log-likelihood, marginals, pairwise counts, leave-one-out."""
    T, K = log_obs.shape
    seqs = np.array(list(itertools.product(range(K), repeat=T)))          # (K^T, T)
    prior = log_init[seqs[:, 0]] + log_trans[seqs[:, :-1], seqs[:, 1:]].sum(1)
    ev = log_obs[np.arange(T), seqs]                                      # (K^T, T)
    joint = prior + ev.sum(1)
    loglik = logsumexp(joint)
    w = np.exp(joint - loglik)
    marg = np.zeros((T, K))
    loo = np.zeros((T, K))
    counts = np.zeros((K, K))
    for t in range(T):
        np.add.at(marg[t], seqs[:, t], w)
        j = joint - ev[:, t]                                              # drop step t's evidence
        wl = np.exp(j - logsumexp(j))
        np.add.at(loo[t], seqs[:, t], wl)
        if t:
            np.add.at(counts, (seqs[:, t - 1], seqs[:, t]), w)
    return loglik, marg, counts, loo


def _logspace_alpha_beta(log_init, log_trans, log_obs):
    """Plain log-space forward and backward messages (logsumexp at every step), each ``(T, K)``."""
    T, K = log_obs.shape
    la = np.empty((T, K))
    la[0] = log_init + log_obs[0]
    for t in range(1, T):
        la[t] = logsumexp(la[t - 1][:, None] + log_trans, axis=0) + log_obs[t]
    lb = np.zeros((T, K))
    for t in range(T - 1, 0, -1):
        lb[t - 1] = logsumexp(log_trans + log_obs[t] + lb[t], axis=1)
    return la, lb


def logspace_reference(log_init, log_trans, log_obs):
    """Plain log-space forward-backward: log-likelihood and marginals."""
    la, lb = _logspace_alpha_beta(log_init, log_trans, log_obs)
    ll = logsumexp(la[-1])
    lg = la + lb
    return ll, np.exp(lg - logsumexp(lg, axis=1, keepdims=True))


def random_chain(K, T, seed, sharp=1.0):
    rng = np.random.default_rng(seed)
    log_init = np.log(rng.dirichlet(np.ones(K)))
    log_trans = np.log(rng.dirichlet(np.ones(K) * 0.5, size=K))
    log_obs = sharp * rng.normal(size=(T, K))
    return log_init, log_trans, log_obs


def cyclic_evidence(seed, T=3000, K=10, acc=0.65, conf=0.99):
    """Class probabilities of a cyclic label sequence 0..K-1,0,...: correct with probability ``acc``,
    otherwise a random wrong class; the reported class gets ``conf`` (confidently wrong, like a GMM)."""
    rng = np.random.default_rng(seed)
    z = np.arange(T) % K
    rep = z.copy()
    wrong = rng.random(T) > acc
    rep[wrong] = (z[wrong] + rng.integers(1, K, wrong.sum())) % K
    p = np.full((T, K), (1 - conf) / (K - 1))
    p[np.arange(T), rep] = conf
    return z, p


def mm_on(probs, **kw):
    obs = srk.Observation(ClassProbs.from_probs(probs))
    m = MarkovModel(**kw)
    m.connect(obs)
    return obs, m


# ---------------------------------------------------------------------------------------------
# 1-2. forward-backward against enumeration
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rescale_every", [1, 2, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_backward_matches_enumeration(seed, rescale_every):
    li, lt, lo = random_chain(3, 5, seed)
    ll, marg, counts, loo = brute_force(li, lt, lo)
    r = forward_backward(li, lt, lo, rescale_every=rescale_every)
    assert r.log_likelihood == pytest.approx(ll, abs=1e-10)
    np.testing.assert_allclose(np.exp(r.log_marginals), marg, atol=1e-10)
    np.testing.assert_allclose(r.trans_counts, counts, atol=1e-10)
    assert r.trans_counts.sum() == pytest.approx(4.0)                    # T - 1 transitions
    np.testing.assert_allclose(np.exp(r.log_loo), loo, atol=1e-10)


def test_forward_backward_torch_matches_numpy():
    li, lt, lo = random_chain(4, 40, 3)
    r = forward_backward(li, lt, lo)
    rt = forward_backward_torch(*(torch.from_numpy(a) for a in (li, lt, lo)))
    assert isinstance(rt.log_marginals, torch.Tensor)
    assert float(rt.log_likelihood) == pytest.approx(r.log_likelihood, abs=1e-9)
    for a, b in zip(rt[1:], r[1:]):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-10)


def test_leave_one_out_differs_from_smoothed():
    # sharp evidence: the smoothed marginal follows step t's own evidence, the leave-one-out
    # message does not; a recursion that absorbed e_t into the message would fail the test above
    li, lt, lo = random_chain(3, 5, 7, sharp=3.0)
    r = forward_backward(li, lt, lo)
    gap = np.abs(np.exp(r.log_loo) - np.exp(r.log_marginals)).max()
    assert gap > 0.3
    # and leave-one-out times own evidence is the smoothed marginal
    post = r.log_loo + lo
    np.testing.assert_allclose(np.exp(post - logsumexp(post, 1, keepdims=True)), np.exp(r.log_marginals),
                               atol=1e-12)


def test_forward_backward_extreme_evidence_and_zeros():
    # evidence spanning ~600 nats per step forces the rescaled blocks to be redone step by step;
    # a sparse transition matrix and -inf evidence entries must not produce NaN
    rng = np.random.default_rng(5)
    K, T = 4, 300
    lt = np.log(rng.dirichlet(np.ones(K), size=K))
    lt[0, 2] = -np.inf
    li = np.full(K, -np.log(K))
    lo = rng.uniform(-600, 0, size=(T, K))
    lo[rng.random((T, K)) < 0.2] = -np.inf
    lo[np.arange(T), rng.integers(0, K, T)] = 0.0                        # a finite entry per row
    ll, marg = logspace_reference(li, lt, lo)
    for b in (1, 16):
        r = forward_backward(li, lt, lo, rescale_every=b)
        assert np.isfinite(r.log_likelihood)
        assert r.log_likelihood == pytest.approx(ll, rel=1e-12)
        np.testing.assert_allclose(np.exp(r.log_marginals), marg, atol=1e-9)
        assert not np.isnan(r.log_loo).any() and not np.isnan(r.trans_counts).any()
        assert r.trans_counts[0, 2] == 0.0
    # a sticky chain (switch probability 1e-30) whose evidence switches state at every step: the
    # mass shrinks by ~1e-30 per step, so an unchecked block of 16 steps underflows to zero
    eps = 1e-30
    lt = np.log(np.full((K, K), eps) + np.eye(K) * (1 - K * eps))
    lo = rng.uniform(-600, -300, size=(T, K))
    lo[np.arange(T), np.arange(T) % K] = 0.0
    ll, marg = logspace_reference(li, lt, lo)
    r = forward_backward(li, lt, lo)
    assert r.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(np.exp(r.log_marginals), marg, atol=1e-9)


def _logspace_counts(log_init, log_trans, log_obs):
    """Expected transition counts from a plain log-space forward-backward (independent reference)."""
    la, lb = _logspace_alpha_beta(log_init, log_trans, log_obs)
    lxi = la[:-1, :, None] + log_trans + (log_obs[1:] + lb[1:])[:, None, :]
    lxi -= logsumexp(lxi, axis=(1, 2), keepdims=True)
    return np.exp(logsumexp(lxi, axis=0))


@pytest.mark.parametrize("rescale_every", [7, 256])
def test_forward_backward_long_chain_in_chunks(rescale_every):
    # 1500 steps: many chunks (the banded solves), evidence spanning 60 nats per step so that chunks
    # are cut where the row mass leaves its range, and a state the evidence never allows
    rng = np.random.default_rng(11)
    K, T = 5, 1500
    li = np.log(rng.dirichlet(np.ones(K)))
    lt = np.log(rng.dirichlet(np.ones(K) * 0.5, size=K))
    lo = rng.uniform(-60, 0, size=(T, K))
    lo[:, 4] = -np.inf
    ll, marg = logspace_reference(li, lt, lo)
    r = forward_backward(li, lt, lo, rescale_every=rescale_every)
    assert r.log_likelihood == pytest.approx(ll, rel=1e-12)
    np.testing.assert_allclose(np.exp(r.log_marginals), marg, atol=1e-10)
    with np.errstate(divide="ignore"):
        counts = _logspace_counts(li, lt, lo)
    np.testing.assert_allclose(r.trans_counts, counts, atol=1e-8)
    assert r.trans_counts.sum() == pytest.approx(T - 1)
    rf = forward_backward(li, lt, np.asfortranarray(lo), rescale_every=rescale_every)   # any layout
    np.testing.assert_array_equal(rf.log_marginals, r.log_marginals)
    post = r.log_loo + lo
    with np.errstate(invalid="ignore"):
        post = np.exp(post - logsumexp(post, 1, keepdims=True))
    np.testing.assert_allclose(post, marg, atol=1e-10)


def test_forward_backward_memory_is_order_t_k():
    # no T x K x K products: the peak of Python-level allocations stays within a dozen (T, K)
    # float64 arrays (the inputs, outputs and a few buffers); keeping A * e_t for every step
    # (T K^2 numbers, 40 times more here) exceeds it
    import tracemalloc
    rng = np.random.default_rng(0)
    K, T = 40, 10000
    li, lt = np.full(K, -np.log(K)), np.log(rng.dirichlet(np.ones(K), size=K))
    lo = 3.0 * rng.normal(size=(T, K))
    tracemalloc.start()
    try:
        forward_backward(li, lt, lo)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * T * K * 8, f"peak {peak / 1e6:.1f} MB"


def test_forward_backward_errors():
    li, lt, lo = random_chain(3, 4, 0)
    with pytest.raises(ValueError, match="shape"):
        forward_backward(li, lt[:2], lo)
    bad = lo.copy()
    bad[2] = -np.inf
    with pytest.raises(ValueError, match="row 2"):
        forward_backward(li, lt, bad)
    # deterministic chain 0 -> 1 -> 2 -> 0 but evidence that forbids it at step 2
    with np.errstate(divide="ignore"):
        det = np.log(np.roll(np.eye(3), 1, axis=1))
    ev = np.zeros((4, 3))
    ev[0] = [0, -np.inf, -np.inf]
    ev[2] = [0, -np.inf, -np.inf]
    with pytest.raises(ValueError, match="probability zero"):
        forward_backward(li, det, ev)
    with pytest.raises(ValueError, match="NaN"):
        forward_backward(li, lt, lo * np.nan)


def test_viterbi_matches_enumeration():
    li, lt, lo = random_chain(3, 6, 2)
    T, K = lo.shape
    seqs = np.array(list(itertools.product(range(K), repeat=T)))
    joint = li[seqs[:, 0]] + lt[seqs[:, :-1], seqs[:, 1:]].sum(1) + lo[np.arange(T), seqs].sum(1)
    path, lp = viterbi(li, lt, lo)
    np.testing.assert_array_equal(path, seqs[joint.argmax()])
    assert lp == pytest.approx(joint.max(), abs=1e-10)


# ---------------------------------------------------------------------------------------------
# 3. Pyro enumeration of the same submodel
# ---------------------------------------------------------------------------------------------
def _enum_log_likelihood(log_ev, A, alpha, eps, log_bias=None):
    model = pyro.poutine.condition(markov_model, data={"trans_prob": A})
    model = config_enumerate(model, default="parallel")
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    neg = elbo.loss(model, lambda *a, **k: None, log_ev, alpha, None, eps, log_bias)
    # -loss = log Dirichlet(A) + log p(evidence | A)
    return -neg - float(dist.Dirichlet(torch.full_like(A, alpha)).log_prob(A).sum())


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_pyro_enumeration_matches_forward_backward(eps):
    K, T = 3, 6
    rng = np.random.default_rng(11)
    A = torch.from_numpy(rng.dirichlet(np.ones(K), size=K))
    log_p = torch.from_numpy(rng.dirichlet(np.ones(K) * 0.5, size=T)).log()
    pyro_ll = _enum_log_likelihood(log_p, A, 0.1, eps)
    ev = MarkovModel._robust(log_p.numpy(), eps)
    r = forward_backward(np.full(K, -math.log(K)), A.log().numpy(), ev)
    assert pyro_ll == pytest.approx(r.log_likelihood, abs=1e-8)
    # marginals of z_t from Pyro's enumeration
    model = config_enumerate(pyro.poutine.condition(markov_model, data={"trans_prob": A}), default="parallel")
    margs = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, lambda *a, **k: None,
                                                                   log_p, 0.1, None, eps)
    for t in range(T):
        p = margs[f"z_{t}"].log_prob(torch.arange(K)).exp().numpy()
        np.testing.assert_allclose(p, np.exp(r.log_marginals[t]), atol=1e-8)
    # two children and a parent's message: all are factors on z_t
    log_q = torch.from_numpy(rng.dirichlet(np.ones(K), size=T)).log()
    log_b = torch.from_numpy(rng.dirichlet(np.ones(K), size=T)).log()
    pyro_ll = _enum_log_likelihood([log_p, log_q], A, 0.1, eps, log_b)
    ev = ev + MarkovModel._robust(log_q.numpy(), eps) + log_b.numpy()
    r = forward_backward(np.full(K, -math.log(K)), A.log().numpy(), ev)
    assert pyro_ll == pytest.approx(r.log_likelihood, abs=1e-8)


@pytest.mark.parametrize("evidence_model", ["noise", "confusion"])
def test_module_model_and_log_likelihood_agree(evidence_model):
    K, T = 3, 6
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(K), size=T)
    _obs, m = mm_on(probs, itr=5, evidence_model=evidence_model, emission_prior=0.5)
    m.update()
    model = config_enumerate(m.model, default="parallel")
    neg = TraceEnum_ELBO(max_plate_nesting=1).loss(model, lambda *a, **k: None, None, m.trans_prob_)
    prior = float(dist.Dirichlet(torch.full((K, K), m.alpha, dtype=torch.float64)).log_prob(m.trans_prob_).sum())
    assert -neg - prior == pytest.approx(m.log_likelihood_, abs=1e-8)
    assert (m.emission_ is None) == (evidence_model == "noise")


# ---------------------------------------------------------------------------------------------
# module: messages against enumeration
# ---------------------------------------------------------------------------------------------
def test_messages_are_leave_one_out_with_parent_and_two_children():
    K, T = 3, 5
    rng = np.random.default_rng(8)
    p1, p2, bias = (rng.dirichlet(np.ones(K) * 0.7, size=T) for _ in range(3))
    o1, o2 = srk.Observation(ClassProbs.from_probs(p1)), srk.Observation(ClassProbs.from_probs(p2))
    m = MarkovModel(itr=3, evidence_noise=0.0)
    m.connect(o1, o2)
    par = Parent(bias)
    par.connect(m)
    m.update()
    par.update()
    m.update()                                       # second update sees the parent's message
    A = m.trans_prob_.numpy()
    li = np.full(K, -math.log(K))
    lp1, lp2, lb = np.log(p1), np.log(p2), np.log(bias)

    _, marg, _, loo = brute_force(li, np.log(A), lp1 + lp2 + lb)       # loo: without any evidence at t

    def with_rest_at_t(log_rest, prior=None):
        # p(z_t | everything except one source at t) = loo times the remaining sources at t;
        # a child's message is that over the prior marginal p(z_t) (the child has its own prior)
        post = np.log(loo) + log_rest - (0.0 if prior is None else np.log(prior))
        return np.exp(post - logsumexp(post, 1, keepdims=True))

    prior = np.stack([np.full(K, 1.0 / K) @ np.linalg.matrix_power(A, t) for t in range(T)])  # init A^t
    assert np.abs(prior - 1.0 / K).max() > 0.01                      # the division matters here
    np.testing.assert_allclose(o1.get_backward_msg().probs.numpy(), with_rest_at_t(lp2 + lb, prior), atol=1e-10)
    np.testing.assert_allclose(o2.get_backward_msg().probs.numpy(), with_rest_at_t(lp1 + lb, prior), atol=1e-10)
    np.testing.assert_allclose(m.forward_msg.probs.numpy(), with_rest_at_t(lp1 + lp2), atol=1e-10)
    # and the message to child 1 is not its smoothed posterior
    assert np.abs(o1.get_backward_msg().probs.numpy() - marg).max() > 0.05


def test_forward_message_is_smoothed_marginal_without_parent():
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.ones(3), size=6)
    obs, m = mm_on(p, itr=4, evidence_noise=0.2)
    m.update()
    ev = MarkovModel._robust(np.log(p), m.evidence_noise_)
    A = m.trans_prob_.numpy()
    _, marg, _, loo = brute_force(np.full(3, -math.log(3)), np.log(A), ev)
    np.testing.assert_allclose(m.forward_msg.probs.numpy(), marg, atol=1e-10)
    # down: p(z_t | the other steps) / p(z_t), i.e. the likelihood of the other steps' evidence
    prior = np.stack([np.full(3, 1.0 / 3) @ np.linalg.matrix_power(A, t) for t in range(6)])
    down = loo / prior
    np.testing.assert_allclose(obs.get_backward_msg().probs.numpy(), down / down.sum(1, keepdims=True), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# 4. transition learning recovers a known matrix
# ---------------------------------------------------------------------------------------------
def test_learned_transitions_recover_known_matrix():
    rng = np.random.default_rng(0)
    K, T = 3, 6000
    A_true = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.25, 0.05, 0.7]])
    B = np.array([[0.7, 0.2, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]])       # emission p(y | z)
    z = np.empty(T, dtype=int)
    z[0] = 0
    for t in range(1, T):
        z[t] = rng.choice(K, p=A_true[z[t - 1]])
    y = (rng.random(T)[:, None] > np.cumsum(B[z], 1)).sum(1)
    lik = B[:, y].T                                                         # p(y_t | z_t = k)
    assert (lik.argmax(1) == z).mean() < 0.75                                # evidence is noisy
    _obs, m = mm_on(lik, itr=300, tol=1e-4, evidence_noise=0.0, restart=False, max_splits=0)
    m.update()
    assert m.n_em_iter_ < 300                                               # converged
    err = np.abs(m.trans_prob_.numpy() - A_true).max()
    assert err < 0.06, err
    # the original's pair-sampling rule on the same evidence misses the bound by far
    pyro.set_rng_seed(0)
    A_orig = original_transitions(torch.from_numpy(lik / lik.sum(1, keepdims=True)), 20).numpy()
    assert np.abs(A_orig - A_true).max() > 0.2
    # warm start: a second update from the learned matrix stays there
    m.update()
    assert np.abs(m.trans_prob_.numpy() - A_true).max() < 0.06


# ---------------------------------------------------------------------------------------------
# 5. the cyclic lock-on of the tutorials
# ---------------------------------------------------------------------------------------------
def test_cyclic_sequence_locks_on_with_confidently_wrong_evidence():
    z, p = cyclic_evidence(0)
    assert 0.6 < (p.argmax(1) == z).mean() < 0.7
    obs, m = mm_on(p)                                                       # tutorial defaults
    m.update()
    msg = obs.get_backward_msg().log_probs.numpy()
    acc = ((msg + np.log(p)).argmax(1) == z).mean()
    assert acc > 0.95, acc
    A = m.trans_prob_.numpy()
    np.testing.assert_array_equal(A.argmax(1), (np.arange(10) + 1) % 10)   # the cycle
    assert A.max(1).min() > 0.95                                            # near-deterministic
    # the plain chain (evidence trusted as is) cannot: each confident mistake must be explained
    # by a transition, so the matrix stays noisy and the message never overrules the evidence
    obs0, m0 = mm_on(p, evidence_noise=0.0)
    m0.update()
    acc0 = ((obs0.get_backward_msg().log_probs.numpy() + np.log(p)).argmax(1) == z).mean()
    assert acc0 < 0.8 and m0.trans_prob_.numpy().max(1).min() < 0.7


# Class probabilities of a child that merged digits 4/9 and split 6, rows = true digit: the
# mean MLDA message at the first update of VAE+GMM+MLDA+MM seed 3, rounded to two decimals.
_MERGED_CHILD = np.array([
    [0.01, 0.01, 0.01, 0.01, 0.90, 0.01, 0.01, 0.01, 0.04, 0.00],
    [0.00, 0.01, 0.01, 0.04, 0.00, 0.00, 0.01, 0.00, 0.02, 0.89],
    [0.00, 0.00, 0.01, 0.02, 0.00, 0.01, 0.91, 0.01, 0.04, 0.01],
    [0.00, 0.00, 0.01, 0.03, 0.00, 0.00, 0.01, 0.00, 0.92, 0.00],
    [0.00, 0.45, 0.49, 0.01, 0.00, 0.00, 0.02, 0.01, 0.01, 0.01],
    [0.01, 0.01, 0.01, 0.02, 0.01, 0.55, 0.01, 0.01, 0.37, 0.01],
    [0.50, 0.00, 0.00, 0.01, 0.01, 0.01, 0.01, 0.42, 0.04, 0.00],
    [0.01, 0.75, 0.16, 0.01, 0.01, 0.01, 0.02, 0.00, 0.02, 0.00],
    [0.00, 0.01, 0.01, 0.82, 0.00, 0.00, 0.01, 0.01, 0.14, 0.00],
    [0.01, 0.41, 0.49, 0.01, 0.01, 0.02, 0.01, 0.02, 0.03, 0.00],
])


@pytest.mark.parametrize("seed", [0, 2])
def test_moment_start_avoids_the_half_period_cycle(seed, monkeypatch):
    # From the uniform matrix alone, EM on this evidence settles in a 5-cycle (each state covers
    # digits d and d + 5, accuracy 0.5-0.7); the start from the child's transition statistics finds
    # the 10-cycle, whose likelihood is higher by hundreds of nats.
    import serket_pyro.modules.mm as mm_mod
    rng = np.random.default_rng(seed)
    T, K = 3000, 10
    z = np.arange(T) % K
    C = _MERGED_CHILD / _MERGED_CHILD.sum(1, keepdims=True)
    c = (rng.random((T, 1)) > np.cumsum(C[z], 1)).sum(1)                  # class ~ C[digit]
    p = np.full((T, K), 0.02 / (K - 1))
    p[np.arange(T), c] = 0.98

    def fit():
        obs, m = mm_on(p)
        m.update()
        post = m.forward_msg.log_probs.numpy().argmax(1)
        return accuracy(z, post), m.log_likelihood_

    acc, ll = fit()
    monkeypatch.setattr(mm_mod, "_moment_transitions", lambda log_ev, alpha: np.full((K, K), 1.0 / K))
    acc_uniform, ll_uniform = fit()
    assert acc == 1.0 and acc_uniform < 0.8, (acc, acc_uniform)
    assert ll > ll_uniform + 100


def test_relabelled_child_is_followed():
    # the child renames its classes between updates (a GMM may): from the old near-deterministic
    # matrix alone EM explains the evidence as noise (eps -> 1); the uniform restart finds the cycle
    K = 5
    z, p = cyclic_evidence(0, T=1000, K=K)
    perm = np.roll(np.arange(K), 2)[::-1].copy()
    accs = {}
    for restart, prior, accelerate in ((False, "flat", False), (True, "flat", False), (False, "shrink", False),
                                       (True, "shrink", False), (False, "flat", True)):
        obs, m = mm_on(p, restart=restart, max_splits=0, evidence_noise=0.8, transition_prior=prior,
                       accelerate=accelerate)
        m.update()
        obs._forward_msg = ClassProbs.from_probs(p[:, perm])
        m.update()
        z2 = np.argsort(perm)[z]
        key = (restart, prior, "accelerated") if accelerate else (restart, prior)
        accs[key] = ((obs.get_backward_msg().log_probs.numpy() + np.log(p[:, perm])).argmax(1) == z2).mean()
    assert accs[True, "flat"] > 0.95 and accs[False, "flat"] < 0.8, accs
    # SQUAREM's extrapolations (the default) leave the old matrix's basin even without a restart
    assert accs[False, "flat", "accelerated"] > 0.95, accs
    # the hierarchical prior's refinement lets the warm start go as well: rows that the evidence
    # no longer supports shrink to the marginal, and EM finds the new cycle from there
    assert accs[True, "shrink"] > 0.95 and accs[False, "shrink"] > 0.95, accs


def test_learned_evidence_noise_matches_error_rate():
    # a step is "noise" with probability eps and then shows a uniformly random class, so a
    # fraction f of wrong reports means eps = f K / (K - 1) (the model is exact as conf -> 1)
    z, p = cyclic_evidence(2, conf=0.9999)
    f = (p.argmax(1) != z).mean()
    _obs, m = mm_on(p, evidence_noise="learn")
    m.update()
    assert m.evidence_noise_ == pytest.approx(f * 10 / 9, abs=0.02)


def test_m_step_is_dirichlet_posterior_mean():
    # certain evidence makes the expected counts the observed counts whatever the matrix, so EM
    # stops at (n_ij + alpha) / (n_i + K alpha)
    K, alpha = 4, 0.3
    seq = np.random.default_rng(3).integers(0, K, 50)
    _obs, m = mm_on(np.eye(K)[seq], alpha=alpha, evidence_noise=0.0, transition_prior="flat")
    m.update()
    n = np.zeros((K, K))
    np.add.at(n, (seq[:-1], seq[1:]), 1)
    np.testing.assert_allclose(m.trans_prob_.numpy(), (n + alpha) / (n.sum(1, keepdims=True) + K * alpha),
                               atol=1e-12)


def test_cyclic_sequence_locks_on_with_soft_evidence():
    rng = np.random.default_rng(1)
    K, T = 10, 3000
    z = np.arange(T) % K
    logits = rng.normal(size=(T, K))
    logits[np.arange(T), z] += 2.0
    p = np.exp(logits - logsumexp(logits, 1, keepdims=True))
    assert 0.55 < (p.argmax(1) == z).mean() < 0.75
    obs, m = mm_on(p, evidence_noise=0.0)
    m.update()
    acc = ((obs.get_backward_msg().log_probs.numpy() + np.log(p)).argmax(1) == z).mean()
    assert acc > 0.95, acc


# ---------------------------------------------------------------------------------------------
# 6. the original rule, validation, reproducibility, files, state
# ---------------------------------------------------------------------------------------------
def test_original_rule_reproduces_its_formula():
    K = 3
    seq = np.array([0, 1, 2, 0, 1, 1, 2])
    onehot = np.eye(K)[seq]
    obs, m = mm_on(onehot, method="original", num_samp=7)
    m.update()
    counts = np.zeros((K, K))
    np.add.at(counts, (seq[:-1], seq[1:]), 7)                               # one-hot: every draw equal
    A = (counts + 0.1) / (counts + 0.1).sum(1, keepdims=True)
    np.testing.assert_allclose(m.trans_prob_.numpy(), A, atol=1e-12)
    msg = np.empty_like(onehot)
    msg[0] = onehot[0]
    for t in range(1, len(seq)):
        msg[t] = onehot[t - 1] @ A
        msg[t] /= msg[t].sum()
    np.testing.assert_allclose(obs.get_backward_msg().probs.numpy(), msg, atol=1e-12)
    np.testing.assert_allclose(m.forward_msg.probs.numpy(), msg, atol=1e-12)
    # soft probabilities: the message formula with the returned matrix, and a bias
    rng = np.random.default_rng(0)
    P = torch.from_numpy(rng.dirichlet(np.ones(K), size=5))
    bias = torch.from_numpy(rng.dirichlet(np.ones(K), size=5))
    out = original_message(P, torch.from_numpy(A), bias).numpy()
    ref = (P.numpy()[:-1] @ A) * bias.numpy()[1:]
    np.testing.assert_allclose(out[1:], ref / ref.sum(1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(out[0], P.numpy()[0])


def test_original_sampling_matches_expected_counts():
    rng = np.random.default_rng(2)
    P = rng.dirichlet(np.ones(3), size=400)
    pyro.set_rng_seed(1)
    A = original_transitions(torch.from_numpy(P), num_samp=200).numpy()
    expected = P[:-1].T @ P[1:]
    expected = expected / expected.sum(1, keepdims=True)
    assert np.abs(A - expected).max() < 0.01


def test_validation_errors():
    with pytest.raises(ValueError, match="ClassProbs"):
        obs = srk.Observation(np.random.rand(10, 3))
        m = MarkovModel()
        m.connect(obs)
        m.update()
    with pytest.raises(ValueError, match="module000_obs"):
        m.update()
    with pytest.raises(ValueError, match="at least 2 time steps"):
        mm_on(np.array([[0.5, 0.5]]))[1].update()
    for kw in ({"alpha": 0}, {"alpha": -1}, {"itr": 0}, {"method": "gibbs"}, {"mode": "test"},
               {"evidence_noise": 1.0}, {"evidence_noise": "auto"}, {"num_samp": 0}):
        with pytest.raises(ValueError, match="mm"):
            MarkovModel(**kw)
    with pytest.raises(ValueError, match="mode='recog'"):
        mm_on(np.full((4, 2), 0.5), mode="recog")[1].update()
    # K must stay the same across updates
    obs, m = mm_on(np.full((5, 3), 1 / 3))
    m.update()
    obs._forward_msg = ClassProbs.from_probs(np.full((5, 4), 0.25))
    with pytest.raises(ValueError, match="K=4"):
        m.update()
    with pytest.raises(ValueError, match="category"):
        mm_on(np.full((5, 3), 1 / 3), category=np.zeros(4, dtype=int))[1].update()


@pytest.mark.parametrize("method", ["forward_backward", "original"])
def test_reproducible(method):
    _z, p = cyclic_evidence(3, T=200)
    outs = []
    for _ in range(2):
        srk.reset_module_counter()
        pyro.set_rng_seed(5)
        obs, m = mm_on(p, method=method, itr=20)
        m.update()
        outs.append((m.trans_prob_.clone(), obs.get_backward_msg().log_probs.clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_files_and_metrics(tmp_path):
    z, p = cyclic_evidence(4, T=300, K=5)
    obs, m = mm_on(p, category=z, output_root=tmp_path, evidence_noise=0.8)
    m.update()
    m.update()
    folder = tmp_path / "module001_mm"
    for sub in ("", "000", "001"):
        for f in ("msg_learn.txt", "trans_prob_learn.txt", "loglik_learn.txt", "evidence_noise_learn.txt"):
            assert (folder / sub / f).is_file(), (sub, f)
    np.testing.assert_allclose(np.loadtxt(folder / "msg_learn.txt"), obs.get_backward_msg().probs.numpy(),
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(np.loadtxt(folder / "trans_prob_learn.txt"), m.trans_prob_.numpy(), rtol=1e-6)
    assert np.loadtxt(folder / "msg_learn.txt").shape == (300, 5)
    assert float(np.loadtxt(folder / "loglik_learn.txt")) == pytest.approx(m.log_likelihood_, rel=1e-6)
    assert (folder / "acc_learn.txt").is_file()
    assert m.metrics_["accuracy"] > 0.95 and m.n_updates_ == 2
    assert set(m.metrics_) >= {"log_likelihood", "evidence_noise", "accuracy"}


def test_state_dict_round_trip_and_recognition(tmp_path):
    _z, p = cyclic_evidence(5, T=400, K=5)
    obs, m = mm_on(p)
    m.update()
    path = os.path.join(tmp_path, "mm.pt")
    torch.save(m.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"trans_prob", "init_prob", "evidence_noise", "log_likelihood"}
    obs2, m2 = mm_on(p, mode="recog")
    m2.load_state_dict(state)
    m2.update()
    assert torch.equal(m2.trans_prob_, m.trans_prob_)                        # frozen in recognition
    np.testing.assert_allclose(obs2.get_backward_msg().log_probs.numpy(), obs.get_backward_msg().log_probs.numpy(),
                               atol=1e-10)
    assert os.path.isfile(os.path.join(m2.output_dir, "msg_recog.txt"))
    # full state (messages included) through the checkpoint helpers
    full = m.full_state_dict()
    m3 = MarkovModel()
    m3.connect(srk.Observation(ClassProbs.from_probs(p)))
    m3.load_full_state_dict(full)
    assert torch.equal(m3.trans_prob_, m.trans_prob_) and m3.forward_msg is not None
    assert m.get_config()["method"] == "forward_backward"
    with pytest.raises(ValueError, match="square"):
        MarkovModel().load_state_dict({"trans_prob": torch.ones(2, 3)})


def test_tutorial_call_and_device():
    _z, p = cyclic_evidence(6, T=100, K=4)
    obs = srk.Observation(ClassProbs.from_probs(p))
    m = MarkovModel()
    assert m.name == "module001_mm"
    m.connect(obs)
    m.update()
    msg = obs.get_backward_msg()
    assert isinstance(msg, ClassProbs) and msg.log_probs.device.type == "cpu"
    assert msg.log_probs.shape == (100, 4) and m.trans_prob_.shape == (4, 4)
    np.testing.assert_allclose(m.trans_prob_.sum(1).numpy(), 1.0)


def test_default_noise_is_too_weak_for_a_short_noisy_chain():
    """The documented trade-off of evidence_noise=0.9 under plain EM: 300 steps of 65%-correct
    evidence over 5 classes are not enough to find the cycle, 0.8 is; the accelerated search (the
    default) finds it at 0.9 as well."""
    z, p = cyclic_evidence(4, T=300, K=5)
    accs = {}
    for eps, accelerate in ((0.8, False), (0.9, False), (0.9, True)):
        _obs, m = mm_on(p, category=z, evidence_noise=eps, accelerate=accelerate)
        m.update()
        accs[eps, accelerate] = m.metrics_["accuracy"]
    assert accs[0.8, False] > 0.95 and accs[0.9, False] < 0.6, accs
    assert accs[0.9, True] > 0.95, accs


# ---------------------------------------------------------------------------------------------
# hierarchical transition prior and the child's message (issue 21)
# ---------------------------------------------------------------------------------------------
def _dirmult_log_evidence(counts, a):
    """sum_i log DirMult(n_i | a), written out with math.lgamma."""
    out = 0.0
    for row in counts:
        out += math.lgamma(a.sum()) - math.lgamma(row.sum() + a.sum())
        out += sum(math.lgamma(n + aj) - math.lgamma(aj) for n, aj in zip(row, a))
    return out


def test_shrunk_transitions_maximise_the_evidence_over_the_concentration():
    from serket_pyro.modules.mm import shrunk_transitions

    rng = np.random.default_rng(5)
    K, alpha = 4, 0.3
    A_true = 0.5 * np.eye(K)[np.roll(np.arange(K), 1)] + 0.5 * rng.dirichlet(np.ones(K) * 2, size=K)
    counts = np.stack([rng.multinomial(60, A_true[i]) for i in range(K)]).astype(float)
    A, c = shrunk_transitions(counts, alpha)
    pi = (counts.sum(0) + alpha) / (counts.sum() + K * alpha)
    grid = np.exp(np.linspace(math.log(1e-3), math.log(1e5), 4001))
    ev = [_dirmult_log_evidence(counts, alpha + g * pi) for g in grid]
    c_best = grid[int(np.argmax(ev))]
    assert c == pytest.approx(c_best, rel=0.02)
    np.testing.assert_allclose(A, (counts + alpha + c * pi) / (counts.sum(1, keepdims=True) + K * alpha + c),
                               atol=1e-12)
    assert 1.0 < c < 1e4                       # partly ordered rows: a finite, informative shrinkage


def test_shrunk_transitions_of_rows_without_order_are_the_marginal():
    from serket_pyro.modules.mm import shrunk_transitions

    rng = np.random.default_rng(6)
    seq = rng.choice(5, size=4000, p=[0.4, 0.3, 0.1, 0.1, 0.1])         # i.i.d.: no order at all
    counts = np.zeros((5, 5))
    np.add.at(counts, (seq[:-1], seq[1:]), 1)
    A, c = shrunk_transitions(counts, 0.1)
    assert c > 1000                             # the rows' spread is multinomial noise
    assert np.abs(A - A.mean(0)).max() < 5e-3   # ... so they nearly equal the marginal
    np.testing.assert_allclose(A[0], [0.4, 0.3, 0.1, 0.1, 0.1], atol=0.02)
    # rows equal to the marginal up to rounding: c is infinite and the rows are exactly equal
    exact = np.outer(np.full(5, 800.0), [0.4, 0.3, 0.1, 0.1, 0.1])
    A, c = shrunk_transitions(exact, 0.1)
    assert c == math.inf
    np.testing.assert_array_equal(A, np.tile(A[0], (5, 1)))
    # a cycle keeps its rows
    cyc = np.arange(4000) % 5
    counts = np.zeros((5, 5))
    np.add.at(counts, (cyc[:-1], cyc[1:]), 1)
    A, c = shrunk_transitions(counts, 0.1)
    assert c < 1e-3 and A.max(1).min() > 0.99


def test_prior_marginals_are_matrix_powers():
    from serket_pyro.modules.mm import prior_marginals

    rng = np.random.default_rng(7)
    A = rng.dirichlet(np.ones(3), size=3)
    init = np.array([0.7, 0.2, 0.1])
    got = np.exp(prior_marginals(np.log(init), A, 200))
    want = np.stack([init @ np.linalg.matrix_power(A, t) for t in range(200)])
    np.testing.assert_allclose(got, want, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the confusion model: a child that confuses classes systematically
# ---------------------------------------------------------------------------------------------
def confused_chain(seed, T=3000, K=5, p_next=0.7, conf=0.99, noise=None):
    """A partly cyclic chain (successor with ``p_next``, else uniform) whose child reports state
    ``k`` as class ``C[k]`` (``C``: a fixed confusion matrix, 25 % of state 1 read as class 2 and
    of state 3 as class 4), confidently (the reported class gets ``conf``).  ``noise=eps``: the
    noise model's ``C = (1 - eps) I + eps / K`` instead (mistakes at random, no structure)."""
    rng = np.random.default_rng(seed)
    A = p_next * np.roll(np.eye(K), 1, 1) + (1 - p_next) / K
    C = np.eye(K)
    C[1] = [0, 0.75, 0.25, 0, 0]
    C[3] = [0, 0, 0, 0.75, 0.25]
    if noise is not None:
        C = (1 - noise) * np.eye(K) + noise / K
    z = np.empty(T, dtype=int)
    z[0] = 0
    for t in range(1, T):
        z[t] = rng.choice(K, p=A[z[t - 1]])
    rep = (rng.random(T)[:, None] > np.cumsum(C[z], 1)).sum(1)
    p = np.full((T, K), (1 - conf) / (K - 1))
    p[np.arange(T), rep] = conf
    counts = np.zeros((K, K))
    np.add.at(counts, (z[:-1], z[1:]), 1)
    return z, p, counts / counts.sum(1, keepdims=True), C


def test_confusion_model_reads_systematic_confusions_as_confusions():
    """The learned emission matrix recovers the child's confusions and the transitions stay those
    of the states; the single-eps noise model must explain the confusions by transitions."""
    z, p, empirical, C = confused_chain(0)
    _obs, m = mm_on(p, evidence_model="confusion")
    m.update()
    assert m.forward_msg.probs.argmax(1).numpy().tolist() != p.argmax(1).tolist()  # it re-reads
    assert np.abs(m.trans_prob_.numpy() - empirical).max() < 0.05
    np.testing.assert_allclose(m.emission_[0].numpy(), C, atol=0.05)
    assert accuracy(z, m.forward_msg.probs.argmax(1).numpy()) > 0.95
    _obs0, m0 = mm_on(p, evidence_model="noise")
    m0.update()
    assert np.abs(m0.trans_prob_.numpy() - empirical).max() > 0.1


def test_confusion_state_round_trip_and_recognition():
    _z, p, _emp, _C = confused_chain(1, T=600)
    obs, m = mm_on(p, evidence_model="confusion")
    m.update()
    state = m.state_dict()
    assert tuple(state["emission"].shape) == (1, 5, 5)
    obs2, m2 = mm_on(p, evidence_model="confusion", mode="recog")
    m2.load_state_dict(state)
    m2.update()
    assert torch.equal(m2.emission_, m.emission_) and torch.equal(m2.trans_prob_, m.trans_prob_)
    np.testing.assert_allclose(obs2.get_backward_msg().log_probs.numpy(), obs.get_backward_msg().log_probs.numpy(),
                               atol=1e-10)
    assert os.path.isfile(os.path.join(m.output_dir, "000", "emission_learn.txt"))
    bad = dict(state, emission=state["emission"] * 2)
    with pytest.raises(ValueError, match=r"module\d+_mm.*emission"):
        mm_on(p, evidence_model="confusion", mode="recog")[1].load_state_dict(bad)


def test_auto_evidence_model_chooses_confusion_for_systematic_confusions():
    """Data with a structured confusion matrix: the confusion model pays for its two observed
    confusions many times over, and the default (``"auto"``) keeps it."""
    z, p, empirical, C = confused_chain(0, T=2000)
    _obs, m = mm_on(p)                                               # default evidence_model="auto"
    m.update()
    assert m.evidence_model == "auto" and m.emission_ is not None
    assert m.metrics_["confusion_model"] == 1.0 and m.evidence_gain_ > 5 * m.evidence_penalty_ > 0
    assert np.abs(m.trans_prob_.numpy() - empirical).max() < 0.05
    np.testing.assert_allclose(m.emission_[0].numpy(), C, atol=0.06)


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_evidence_model_chooses_noise_for_random_mistakes(seed):
    """Data from the noise model itself (15 % of the reports a uniformly random class): a
    confusion matrix gains less than its parameters (nearly every one of the 20 confusions is observed),
    and "auto" gives the noise model's fit."""
    z, p, empirical, _C = confused_chain(seed, T=2000, noise=0.15)
    _obs, m = mm_on(p)
    m.update()
    assert m.emission_ is None and m.metrics_["confusion_model"] == 0.0
    assert m.evidence_penalty_ >= 15 and 0 <= m.evidence_gain_ < m.evidence_penalty_
    _obs0, m0 = mm_on(p, evidence_model="noise")
    m0.update()
    np.testing.assert_array_equal(m.trans_prob_.numpy(), m0.trans_prob_.numpy())
    assert m.evidence_noise_ == pytest.approx(0.15, abs=0.03)


def test_choose_evidence_model_is_aic_over_the_observed_confusions():
    C = np.diag([50.0, 40.0, 30.0])
    C[0, 1], C[2, 0], C[1, 2] = 3.0, 0.99, 1.0                         # 2 confusions seen, 1 not
    assert evidence_model_penalty([C]) == 1 and evidence_model_penalty([C, C]) == 2
    assert evidence_model_penalty([np.diag([5.0, 5.0])]) == 0            # the noise model's eps is enough
    assert evidence_model_penalty([np.full((4, 4), 2.0)]) == 11
    assert choose_evidence_model(-1000.0, -1000.0 + 11.5, 11) == "confusion"
    assert choose_evidence_model(-1000.0, -1000.0 + 10.5, 11) == "noise"


def test_accelerated_search_needs_fewer_e_steps_for_the_same_fit(monkeypatch):
    # SQUAREM in the structure search and the log-likelihood stopping rule (the defaults) against
    # plain EM stopped on the parameters alone: the same chain, under half the E-steps
    import serket_pyro.modules.mm as mm_mod
    z, p = cyclic_evidence(0, T=1500, K=8)
    calls = [0]

    e_step = mm_mod.sharded_forward_backward  # the EM's E-step (one process: forward_backward)

    def counted(*a, **kw):
        calls[0] += 1
        return e_step(*a, **kw)

    monkeypatch.setattr(mm_mod, "sharded_forward_backward", counted)
    fits = {}
    for kw in ({"accelerate": False, "ll_tol": 0.0}, {}):
        calls[0] = 0
        _obs, m = mm_on(p, category=z, **kw)
        m.update()
        fits[bool(kw)] = (calls[0], m.log_likelihood_, m.metrics_["accuracy"], m.trans_prob_.numpy())
    (n_plain, ll_plain, acc_plain, A_plain), (n_fast, ll_fast, acc_fast, A_fast) = fits[True], fits[False]
    assert acc_plain == acc_fast == 1.0
    assert abs(ll_fast - ll_plain) < 1e-5 * abs(ll_plain), (ll_fast, ll_plain)
    np.testing.assert_allclose(A_fast, A_plain, atol=1e-3)
    assert n_fast < 0.5 * n_plain, (n_fast, n_plain)


def test_ll_stopping_rule_waits_while_the_gains_grow():
    m = MarkovModel(ll_tol=1e-6)
    assert m._ll_converged(1e-4, 2e-4, -1000.0)           # small and shrinking
    assert not m._ll_converged(1e-4, 5e-5, -1000.0)       # small but growing: leaving a saddle
    assert not m._ll_converged(1e-2, 2e-2, -1000.0)       # not small
    assert m._ll_converged(-1e-4, 2e-4, -1000.0)          # the refinement's prior: a tiny dip
    assert not MarkovModel(ll_tol=0.0)._ll_converged(0.0, 1.0, -1000.0)
