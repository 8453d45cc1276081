"""The joint compiler (serket_pyro.joint.compiler): the compiled program against the modules' own
``model()`` and brute-force sums, its ELBO against a hand-written one, and fitting each tutorial
system for a few steps.  Non-default hyperparameters and random parameters throughout."""

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate

import serket_pyro as srk
from serket_pyro.joint import JointProgram, joint_program
from serket_pyro.modules.gmm import GMM
from serket_pyro.modules.mlda import MLDA
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.modules.vae import VAE


# --------------------------------------------------------------------- helpers
def _gauss(x, mean, cov):
    """log N(x | mean, cov) written out (inverse and determinant), independent of torch.distributions."""
    d = (x - mean).double()
    return -0.5 * (len(d) * math.log(2 * math.pi) + torch.logdet(cov) + d @ torch.linalg.inv(cov) @ d)


def _random_gmm(p, g, D, seed=0, weights=True):
    gen = torch.Generator().manual_seed(seed)
    K = g.K
    means = torch.randn(K, D, generator=gen, dtype=torch.float64)
    a = torch.randn(K, D, D, generator=gen, dtype=torch.float64) * 0.4
    cov = a @ a.transpose(-1, -2) + 0.3 * torch.eye(D, dtype=torch.float64)
    p.set_param(g, "means", means)
    p.set_param(g, "scale_tril", torch.linalg.cholesky(cov))
    w = None
    if weights:
        w = torch.rand(K, generator=gen, dtype=torch.float64) + 0.2
        w = w / w.sum()
        p.set_param(g, "weights", w)
    return w, means, cov


def _log_joint(p, data, *args):
    """``log p`` of the compiled model with the sites in ``data`` fixed (its densities are per point: x N)."""
    tr = poutine.trace(poutine.condition(p.model, data=data)).get_trace(*args)
    return float(tr.log_prob_sum().detach()) * p.N


def _log_marginal(p):
    """``log p(data)`` of the compiled model with its class sites enumerated (no other latents)."""
    return -float(TraceEnum_ELBO(max_plate_nesting=p.max_plate_nesting).differentiable_loss(
        p.model, lambda *a: None).detach()) * p.N


class Shift(srk.Module):
    """A user's module with joint hooks: ``z ~ N(0, I)``, its observation ``x ~ N(z, noise^2 I)``."""

    joint_role = "latent"

    def __init__(self, dim, noise=0.5, name="shift"):
        super().__init__(name)
        self.dim, self.noise = dim, noise
        self.loc_ = None

    def _infer(self, inputs, backward):
        pass

    def _forward_message(self, inputs, backward):
        return inputs[0]

    def joint_size(self):
        return self.dim

    def joint_local_params(self, N):
        return {"q_loc": (torch.zeros(N, self.dim, dtype=torch.float64), dist.constraints.real)}

    def joint_prior(self, params):
        z = torch.zeros(self.dim, dtype=torch.float64)
        return dist.Normal(z, 1.0).to_event(1)

    def joint_child_dist(self, params, value, i):
        return dist.Normal(value, self.noise).to_event(1)

    def joint_guide(self, params, local, observed):
        return dist.Normal(local["q_loc"], 0.3).to_event(1)

    def joint_to_module(self, params, posterior):
        self.loc_ = posterior


# --------------------------------------------------------------------- log joints against the modules' model()
def test_gmm_log_joint_equals_gmm_model_and_marginal_equals_brute_force():
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64)
    obs = srk.Observation(x)
    g = GMM(3, alpha=0.7)
    g.connect(obs)
    p = joint_program(g)
    w, means, cov = _random_gmm(p, g, 2)
    c = torch.tensor([0, 2, 1, 1, 0, 2])
    got = _log_joint(p, {g.joint_site(): c})
    # the module's own model, at the same parameters (precisions = inverse covariances)
    own = poutine.trace(poutine.condition(g.model, data={
        "weights": w, "means": means, "precisions": torch.linalg.inv(cov), "z": c})).get_trace(x)
    own.compute_log_prob()
    expect = float(own.nodes["z"]["log_prob"].sum() + own.nodes["x"]["log_prob"].sum())
    assert got == pytest.approx(expect, rel=1e-10)
    brute = sum(torch.logsumexp(torch.stack([w[k].log() + _gauss(x[n], means[k], cov[k]) for k in range(3)]), 0)
                for n in range(6))
    assert _log_marginal(p) == pytest.approx(float(brute), rel=1e-10)


def test_chain_over_gmm_marginal_equals_brute_force():
    torch.manual_seed(1)
    N, K = 6, 2
    x = torch.randn(N, 2, dtype=torch.float64)
    obs = srk.Observation(x)
    g = GMM(K)
    g.connect(obs)
    mm = MarkovModel(alpha=0.3)
    mm.connect(g)
    p = joint_program(mm, chunk_len=N)
    _, means, cov = _random_gmm(p, g, 2, weights=False)
    A = torch.tensor([[0.8, 0.2], [0.35, 0.65]], dtype=torch.float64)
    p.set_param(mm, "trans_prob", A)
    e = torch.stack([torch.stack([_gauss(x[t], means[k], cov[k]) for k in range(K)]) for t in range(N)])
    terms = []
    for s in itertools.product(range(K), repeat=N):
        lp = -math.log(K) + sum(A[s[t - 1], s[t]].log() for t in range(1, N)) + sum(e[t, s[t]] for t in range(N))
        terms.append(lp)
    brute = float(torch.logsumexp(torch.stack(terms), 0))
    tr = poutine.trace(p.model).get_trace()
    assert float(tr.log_prob_sum()) * N == pytest.approx(brute, rel=1e-10)
    # the module's own model (evidence normalised per step, trans_prob conditioned) agrees up to
    # the normaliser it drops, sum_t logsumexp_k e_t(k), and the Dirichlet density of the matrix
    own = -TraceEnum_ELBO(max_plate_nesting=1).loss(
        config_enumerate(poutine.condition(mm.model, data={"trans_prob": A})), lambda *a, **k: None,
        log_evidence=[e])
    dirichlet = dist.Dirichlet(torch.full((K, K), 0.3, dtype=torch.float64)).log_prob(A).sum()
    assert float(own - dirichlet + e.logsumexp(-1).sum()) == pytest.approx(brute, rel=1e-8)


def _mlda_counts(N, V, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (N, V), generator=gen).double() + torch.eye(N, V, dtype=torch.float64)


def test_mlda_log_joint_equals_mlda_model_with_tokens_enumerated():
    N, V, K = 4, 5, 3
    counts = _mlda_counts(N, V, 2)
    obs = srk.Observation(counts)
    m = MLDA(K, alpha=0.6, beta=0.8)
    m.connect(obs)
    p = joint_program(m)
    gen = torch.Generator().manual_seed(3)
    phi = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((K,))
    theta = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((N,))
    del gen
    p.set_param(m, "phi_0", phi)
    got = _log_joint(p, {m.joint_site(): theta})
    # MLDA.model: one topic per token, enumerated; conditioned on theta and phi
    own = -TraceEnum_ELBO(max_plate_nesting=1).loss(
        config_enumerate(poutine.condition(m.model, data={"theta": theta, "phi_0": phi})), lambda *a: None, counts)
    phi_prior = dist.Dirichlet(torch.full((V,), 0.8, dtype=torch.float64)).log_prob(phi).sum()
    assert got == pytest.approx(float(own - phi_prior), rel=1e-10)


def test_mlda_over_gmm_class_is_a_weighted_token():
    N, V, K, Kg = 5, 4, 2, 3
    torch.manual_seed(4)
    counts = _mlda_counts(N, V, 5)
    x = torch.randn(N, 2, dtype=torch.float64)
    g = GMM(Kg)
    g.connect(srk.Observation(x))
    m = MLDA(K, weights=[None, 3.0], alpha=0.9)
    m.connect(srk.Observation(counts), g)
    p = joint_program(m)
    _, means, cov = _random_gmm(p, g, 2, weights=False)
    assert "weights" not in p.params(g)  # the MLDA places the class's distribution
    phi0 = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((K,))
    phi1 = torch.distributions.Dirichlet(torch.ones(Kg, dtype=torch.float64)).sample((K,))
    theta = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((N,))
    p.set_param(m, "phi_0", phi0)
    p.set_param(m, "phi_1", phi1)
    got = -float(TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        poutine.condition(p.model, data={m.joint_site(): theta}), lambda *a: None)) * N
    expect = 0.0
    for n in range(N):
        expect += dist.Dirichlet(torch.full((K,), 0.9, dtype=torch.float64)).log_prob(theta[n])
        expect += (counts[n] * (theta[n] @ phi0).log()).sum()
        pc = theta[n] @ phi1
        expect += torch.logsumexp(torch.stack([3.0 * pc[c].log() + _gauss(x[n], means[c], cov[c])
                                               for c in range(Kg)]), 0)
    assert got == pytest.approx(float(expect), rel=1e-10)


def test_vae_under_gmm_log_joint_equals_modules_models():
    torch.manual_seed(5)
    N, D, L = 5, 6, 2
    x = torch.rand(N, D)
    v = VAE(L, hidden=4)
    v.connect(srk.Observation(x))
    g = GMM(2)
    g.connect(v)
    p = joint_program(g)
    w, means, cov = _random_gmm(p, g, L)
    c = torch.tensor([1, 0, 1, 1, 0])
    z = torch.randn(N, L, dtype=torch.float64)
    got = _log_joint(p, {g.joint_site(): c, v.joint_site(): z})
    own_g = poutine.trace(poutine.condition(g.model, data={
        "weights": w, "means": means, "precisions": torch.linalg.inv(cov), "z": c})).get_trace(z)
    own_g.compute_log_prob()
    own_v = poutine.trace(poutine.condition(v.model, data={"z": z.float()})).get_trace(x)
    own_v.compute_log_prob()
    expect = (own_g.nodes["z"]["log_prob"].sum() + own_g.nodes["x"]["log_prob"].sum()
              + own_v.nodes["x"]["log_prob"].sum() * N)  # VAE.model is per point (scale 1 / N)
    assert got == pytest.approx(float(expect), rel=1e-5)


def test_chain_over_mlda_marginal_equals_brute_force():
    N, V, K = 5, 4, 2
    counts = _mlda_counts(N, V, 6)
    m = MLDA(K, alpha=0.5)
    m.connect(srk.Observation(counts))
    mm = MarkovModel()
    mm.connect(m)
    p = joint_program(mm, chunk_len=N)
    torch.manual_seed(7)
    phi = torch.distributions.Dirichlet(torch.ones(V, dtype=torch.float64)).sample((K,))
    theta = torch.distributions.Dirichlet(torch.ones(K, dtype=torch.float64)).sample((N,))
    conc = torch.tensor([[3.0, 0.5], [0.7, 2.0]], dtype=torch.float64)
    A = torch.tensor([[0.6, 0.4], [0.1, 0.9]], dtype=torch.float64)
    p.set_param(m, "phi_0", phi)
    p.set_param(m, "state_concentration", conc)
    p.set_param(mm, "trans_prob", A)
    got = _log_joint(p, {m.joint_site(): theta.unsqueeze(0)})
    e = torch.stack([dist.Dirichlet(conc[k]).log_prob(theta) for k in range(K)], -1)  # (N, K)
    terms = [-math.log(K) + sum(A[s[t - 1], s[t]].log() for t in range(1, N)) + sum(e[t, s[t]] for t in range(N))
             for s in itertools.product(range(K), repeat=N)]
    words = (counts * (theta @ phi).log()).sum()
    assert got == pytest.approx(float(torch.logsumexp(torch.stack(terms), 0) + words), rel=1e-10)


def _mlda_model_log_joint(m, counts, theta, phis, bias=None):
    """``log p(words, theta)`` of ``MLDA.model`` at ``theta`` and ``phis`` (its token topics
    enumerated), without the Dirichlet priors of the ``phis`` (global point estimates in the program)."""
    data = {"theta": theta, **{f"phi_{i}": ph for i, ph in enumerate(phis)}}
    own = -TraceEnum_ELBO(max_plate_nesting=1).loss(
        config_enumerate(poutine.condition(m.model, data=data)), lambda *a, **k: None, *counts, bias=bias)
    return own - sum(float(dist.Dirichlet(torch.full((ph.shape[1],), float(m.beta), dtype=torch.float64))
                           .log_prob(ph).sum()) for ph in phis)


def test_mlda_under_mlda_log_joint_equals_the_mldas_models_and_marginal_equals_brute_force():
    """The objects hierarchy in small: a top MLDA over two MLDAs (one with two modalities); the
    top draws one topic of each lower MLDA per document (counted as ``weights[i]`` tokens), which
    draws the lower MLDA's ``theta`` (``Dirichlet(state_concentration[state])``)."""
    N, K1, K2, K = 4, 3, 2, 2
    c1a, c1b, c2 = _mlda_counts(N, 5, 11), _mlda_counts(N, 3, 12), _mlda_counts(N, 4, 13)
    low1 = MLDA(K1, alpha=0.7, beta=0.6)
    low1.connect(srk.Observation(c1a), srk.Observation(c1b))
    low2 = MLDA(K2, alpha=1.3, beta=0.9)
    low2.connect(srk.Observation(c2))
    top = MLDA(K, weights=[3, 2], alpha=0.8, beta=1.2)
    top.connect(low1, low2)
    p = joint_program(top)
    assert p.has_enumerated_sites() and p.params(low1)["state_concentration"].shape == (K1, K1)
    torch.manual_seed(14)
    rows = lambda n, k: torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample((n,))  # noqa: E731
    phi1a, phi1b, phi2 = rows(K1, 5), rows(K1, 3), rows(K2, 4)
    phit1, phit2 = rows(K, K1), rows(K, K2)
    conc1 = 0.3 + 3.0 * torch.rand(K1, K1, dtype=torch.float64)
    conc2 = 0.3 + 3.0 * torch.rand(K2, K2, dtype=torch.float64)
    for mod, name, v in [(low1, "phi_0", phi1a), (low1, "phi_1", phi1b), (low2, "phi_0", phi2),
                         (top, "phi_0", phit1), (top, "phi_1", phit2),
                         (low1, "state_concentration", conc1), (low2, "state_concentration", conc2)]:
        p.set_param(mod, name, v)
    th, th1, th2 = rows(N, K), rows(N, K1), rows(N, K2)
    s1, s2 = torch.tensor([2, 0, 1, 2]), torch.tensor([1, 1, 0, 1])
    got = _log_joint(p, {top.joint_site(): th, low1.joint_site(): th1, low2.joint_site(): th2,
                         f"{low1.name}.state": s1, f"{low2.name}.state": s2})
    # the modules' own models: the top MLDA reads each drawn state as weights[i] tokens of that
    # word; the lower MLDAs' theta prior Dirichlet(alpha) is replaced by Dirichlet(conc[state])
    onehot = lambda s, k, w: w * torch.nn.functional.one_hot(s, k).double()  # noqa: E731
    expect = _mlda_model_log_joint(top, [onehot(s1, K1, 3), onehot(s2, K2, 2)], th, [phit1, phit2])
    for low, counts, theta, phis, conc, s in [(low1, [c1a, c1b], th1, [phi1a, phi1b], conc1, s1),
                                               (low2, [c2], th2, [phi2], conc2, s2)]:
        expect += _mlda_model_log_joint(low, counts, theta, phis)
        expect -= float(dist.Dirichlet(torch.full((low.K,), float(low.alpha), dtype=torch.float64))
                        .log_prob(theta).sum())
        expect += float(dist.Dirichlet(conc[s]).log_prob(theta).sum())
    assert got == pytest.approx(expect, rel=1e-10)
    # the states enumerated by the program against a brute-force sum over every document's states
    got = -float(TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        poutine.condition(p.model, data={top.joint_site(): th, low1.joint_site(): th1,
                                         low2.joint_site(): th2}), lambda *a: None)) * N
    brute = 0.0
    for n in range(N):
        brute += dist.Dirichlet(torch.full((K,), 0.8, dtype=torch.float64)).log_prob(th[n])
        brute += (c1a[n] * (th1[n] @ phi1a).log()).sum() + (c1b[n] * (th1[n] @ phi1b).log()).sum()
        brute += (c2[n] * (th2[n] @ phi2).log()).sum()
        for theta, phit, conc, w, k in [(th1[n], phit1, conc1, 3, K1), (th2[n], phit2, conc2, 2, K2)]:
            q = th[n] @ phit
            brute += torch.logsumexp(torch.stack([w * q[j].log() + dist.Dirichlet(conc[j]).log_prob(theta)
                                                  for j in range(k)]), 0)
    assert got == pytest.approx(float(brute), rel=1e-10)


def test_class_log_posterior_of_the_states_a_parent_mlda_draws():
    """class_log_posterior()["<child>.state"]: the topic of each lower MLDA that the top MLDA drew
    for each document, p(s | theta_top, theta_low) ~ (theta_top phi)[s]^weights Dir(theta_low |
    conc[s]), at the guide means (brute force per document and state, non-default weights)."""
    N, K1, K2, K = 5, 3, 2, 2
    low1 = MLDA(K1, alpha=0.7)
    low1.connect(srk.Observation(_mlda_counts(N, 5, 31)))
    low2 = MLDA(K2, alpha=1.3)
    low2.connect(srk.Observation(_mlda_counts(N, 4, 32)))
    top = MLDA(K, weights=[3, 2], alpha=0.8)
    top.connect(low1, low2)
    p = joint_program(top)
    torch.manual_seed(33)
    rows = lambda n, k: torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample((n,))  # noqa: E731
    phit = {low1: rows(K, K1), low2: rows(K, K2)}
    conc = {low1: 0.3 + 3.0 * torch.rand(K1, K1, dtype=torch.float64),
            low2: 0.3 + 3.0 * torch.rand(K2, K2, dtype=torch.float64)}
    p.set_param(top, "phi_0", phit[low1])
    p.set_param(top, "phi_1", phit[low2])
    for low in (low1, low2):
        p.set_param(low, "state_concentration", conc[low])
    means = p.latent_means()
    got = p.class_log_posterior()
    for low, w in ((low1, 3), (low2, 2)):
        lp = got[f"{low.name}.state"]
        assert lp.shape == (N, low.K) and torch.allclose(lp.exp().sum(-1), torch.ones(N, dtype=torch.float64))
        for n in range(N):
            q = means[top.name][n].double() @ phit[low]
            u = torch.stack([w * q[j].log() + dist.Dirichlet(conc[low][j]).log_prob(means[low.name][n].double())
                             for j in range(low.K)])
            assert torch.allclose(lp[n], u - u.logsumexp(0), atol=1e-10)


def test_mlda_chain_of_three_enumerates_each_state_and_fits():
    """MLDA3 -> MLDA2 -> MLDA1 (the mMLDA chain's shape): MLDA2 has a lower MLDA and words; the
    two states are summed independently; a few SVI steps fit and write back."""
    N, K = 4, 2
    c1, c2 = _mlda_counts(N, 3, 21), _mlda_counts(N, 4, 22)
    m1 = MLDA(K, alpha=0.9)
    m1.connect(srk.Observation(c1))
    m2 = MLDA(K, weights=[2, None], alpha=1.1)
    m2.connect(m1, srk.Observation(c2))
    m3 = MLDA(K, weights=[4], alpha=0.6)
    m3.connect(m2)
    p = joint_program(m3)
    torch.manual_seed(23)
    rows = lambda n, k: torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64)).sample((n,))  # noqa: E731
    P = {m1: {"phi_0": rows(K, 3), "state_concentration": 0.5 + 2 * torch.rand(K, K, dtype=torch.float64)},
         m2: {"phi_0": rows(K, K), "phi_1": rows(K, 4),
              "state_concentration": 0.5 + 2 * torch.rand(K, K, dtype=torch.float64)},
         m3: {"phi_0": rows(K, K)}}
    for mod, d in P.items():
        for k, v in d.items():
            p.set_param(mod, k, v)
    th = {m: rows(N, K) for m in (m1, m2, m3)}
    got = -float(TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        poutine.condition(p.model, data={m.joint_site(): v for m, v in th.items()}), lambda *a: None)) * N
    brute = 0.0
    for n in range(N):
        brute += dist.Dirichlet(torch.full((K,), 0.6, dtype=torch.float64)).log_prob(th[m3][n])
        brute += (c1[n] * (th[m1][n] @ P[m1]["phi_0"]).log()).sum()
        brute += (c2[n] * (th[m2][n] @ P[m2]["phi_1"]).log()).sum()
        for par, child, w in [(m3, m2, 4), (m2, m1, 2)]:
            q = th[par][n] @ P[par]["phi_0"]
            brute += torch.logsumexp(torch.stack([
                w * q[j].log() + dist.Dirichlet(P[child]["state_concentration"][j]).log_prob(th[child][n])
                for j in range(K)]), 0)
    assert got == pytest.approx(float(brute), rel=1e-10)
    losses = p.fit(5, lr=0.02)
    assert all(np.isfinite(losses))
    p.to_modules()
    assert m1.theta_.shape == (N, K) and [ph.shape for ph in m3.phi_] == [(K, K)]


def test_user_module_under_gmm():
    torch.manual_seed(8)
    N, D = 4, 2
    x = torch.randn(N, D, dtype=torch.float64)
    u = Shift(D, noise=0.7)
    u.connect(srk.Observation(x))
    g = GMM(2)
    g.connect(u)
    p = joint_program(g)
    w, means, cov = _random_gmm(p, g, D)
    c = torch.tensor([0, 1, 1, 0])
    z = torch.randn(N, D, dtype=torch.float64)
    got = _log_joint(p, {g.joint_site(): c, u.joint_site(): z})
    expect = sum(w[c[n]].log() + _gauss(z[n], means[c[n]], cov[c[n]])
                 + _gauss(x[n], z[n], 0.49 * torch.eye(D, dtype=torch.float64)) for n in range(N))
    assert got == pytest.approx(float(expect), rel=1e-10)
    p.fit(2, lr=0.05)
    p.to_modules()
    assert u.loc_.shape == (N, D) and g.means_.shape == (2, D)


# --------------------------------------------------------------------- ELBO against a hand-written one
@pytest.mark.parametrize("entropy", ["analytic", "sampled"])
@pytest.mark.parametrize("chain", [False, True])
def test_elbo_equals_brute_force_elbo(chain, entropy):
    torch.manual_seed(9)
    N, D, L, K = 5, 6, 2, 2
    x = torch.rand(N, D)
    v = VAE(L, hidden=4)
    v.connect(srk.Observation(x))
    g = GMM(K)
    g.connect(v)
    top = g
    if chain:
        top = MarkovModel()
        top.connect(g)
    p = joint_program(top, chunk_len=N, entropy=entropy)
    w, means, cov = _random_gmm(p, g, L, weights=not chain)
    A = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float64)
    if chain:
        p.set_param(top, "trans_prob", A)
    torch.manual_seed(10)
    loss = float(p.loss_fn().differentiable_loss(p.model, p.guide).detach())
    torch.manual_seed(10)
    z = poutine.trace(p.guide).get_trace().nodes[v.joint_site()]["value"].reshape(N, L)
    with torch.no_grad():
        loc, scale = v.encoder_(x)
        logits = v.decoder_(z.float()).double()
    loc, scale = loc.double(), scale.double()
    log_px = (x.double() * torch.nn.functional.logsigmoid(logits)
              + (1 - x.double()) * torch.nn.functional.logsigmoid(-logits)).sum()
    if entropy == "sampled":  # the drawn -log q(z)
        log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
    else:  # minus the Normal's entropy, E_q[log q]
        log_q = (-0.5 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
    e = torch.stack([torch.stack([_gauss(z[n], means[k], cov[k]) for k in range(K)]) for n in range(N)])
    if chain:
        log_pz = torch.logsumexp(torch.stack([
            -math.log(K) + sum(A[s[t - 1], s[t]].log() for t in range(1, N)) + sum(e[t, s[t]] for t in range(N))
            for s in itertools.product(range(K), repeat=N)]), 0)
    else:
        log_pz = (e + w.log()).logsumexp(-1).sum()
    elbo = float(log_px + log_pz - log_q)
    assert -loss * N == pytest.approx(elbo, rel=1e-5)


# --------------------------------------------------------------------- errors
def test_module_without_hooks_is_named():
    class NoHooks(srk.Module):
        def _infer(self, inputs, backward):
            pass

        def _forward_message(self, inputs, backward):
            return inputs[0]

    u = NoHooks("nohooks")
    u.connect(srk.Observation(torch.rand(4, 2)))
    g = GMM(2)
    g.connect(u)
    with pytest.raises(ValueError, match=f"{u.name}: NoHooks has no joint hooks"):
        joint_program(g)

    class HalfHooks(Shift):
        joint_guide = srk.Module.joint_guide

    h = HalfHooks(2)
    h.connect(srk.Observation(torch.rand(4, 2)))
    p = joint_program(h)
    with pytest.raises(ValueError, match=f"{h.name}: HalfHooks does not implement the joint hook joint_guide"):
        p.fit(1)


def test_graphs_the_compiler_does_not_take_are_named():
    v = VAE(2, hidden=3)
    v.connect(srk.Observation(torch.rand(4, 3)))
    upper = MLDA(2)
    upper.connect(v)  # a VAE's z has no distribution per state: not a token of an MLDA
    with pytest.raises(ValueError, match=f"{upper.name}: in the joint program an MLDA's children"):
        joint_program(upper)
    g1 = GMM(2)
    g1.connect(srk.Observation(torch.rand(4, 2)))
    g2 = GMM(2)
    g2.connect(g1)
    with pytest.raises(ValueError, match=f"{g2.name}: in the joint program a GMM's child.*no density on a class"):
        joint_program(g2)
    # Markov chains: the top of their graph, so one per connected tree
    chains = []
    for _ in range(2):
        g = GMM(2)
        g.connect(srk.Observation(torch.rand(4, 2)))
        mm = MarkovModel()
        mm.connect(g)
        chains.append(mm)
    top = MLDA(2)
    top.connect(*chains)
    with pytest.raises(ValueError, match="at most one Markov chain"):
        joint_program(top)
    g = GMM(2)
    g.connect(srk.Observation(torch.rand(4, 2)))
    mm = MarkovModel()
    mm.connect(g)
    top = MLDA(2)
    top.connect(mm)
    with pytest.raises(ValueError, match=f"{mm.name}: a Markov chain must be at the top"):
        joint_program(top)


def test_joint_model_routes_other_graphs_to_the_compiler():
    g = GMM(2)
    g.connect(srk.Observation(torch.rand(6, 2)))
    mm = MarkovModel()
    mm.connect(g)
    assert isinstance(srk.joint_model(mm), JointProgram)
    with pytest.raises(ValueError, match="joint_model supports"):
        srk.joint_model(mm, compiled=False)


# --------------------------------------------------------------------- fitting the tutorial systems
@pytest.mark.parametrize("system", ["vae_gmm", "vae_gmm_mm", "vae_gmm_mlda", "vae_gmm_mlda_mm"])
def test_tutorial_systems_compile_and_fit(system, tmp_path):
    import importlib

    from serket_pyro.datasets import load_tutorial

    build = importlib.import_module(f"serket_pyro.models.{system}").build
    d = load_tutorial()
    n = 60
    pyro.set_rng_seed(0)
    args = (d.images[:n],) if "mlda" not in system else (d.images[:n], d.hac[:n])
    s = build(*args, d.category[:n], latent_dim=3, epochs=1, output_root=str(tmp_path))
    p = joint_program(s, chunk_len=20)
    losses = p.fit(3, batch_size=40)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    p.to_modules()
    g = s["gmm"]
    assert g.means_.shape == (g.K, 3) and g.assignments_.shape == (n,)
    assert torch.allclose(g.covariances_, g.covariances_.transpose(-1, -2))
    if "mlda" in system:
        m = s["mlda"]
        assert m.theta_.shape == (n, m.K) and torch.allclose(m.theta_.sum(-1), torch.ones(n, dtype=torch.float64))
        assert [ph.shape for ph in m.phi_] == [(m.K, d.hac.shape[1]), (m.K, g.K)]
    if system.endswith("_mm"):
        A = s["mm"].trans_prob_
        assert torch.allclose(A.sum(-1), torch.ones(A.shape[0], dtype=torch.float64))
    # the modules work after the joint fit as after message passing: recognition of the data
    for mod in (s["vae"], g):
        mod.mode = "recog"
        mod.update()
    assert s["vae"].forward_msg.loc.shape == (n, 3)
    assert g.metrics_["accuracy"] >= 0


def test_to_modules_then_save_load_recognises_as_the_program(tmp_path):
    from serket_pyro.datasets import load_hmm_toy

    d = load_hmm_toy()
    srk.set_seed(0)
    obs = srk.Observation(d.data)
    g = GMM(4, output_root=str(tmp_path / "out"))
    g.connect(obs)
    m = MarkovModel(output_root=str(tmp_path / "out"))
    m.connect(g)
    p = joint_program(m, chunk_len=50)
    p.fit(40, lr=0.05)
    pred = p.predict(g)
    p.to_modules()
    assert np.array_equal(g.assignments_.cpu().numpy(), pred)
    A = p.params(m)["trans_prob"].double()
    assert torch.allclose(m.trans_prob_, A / A.sum(-1, keepdim=True))
    srk.save_graph(tmp_path / "saved", m)
    s2 = srk.load_graph(tmp_path / "saved", [d.data], mode="recog", output_root=str(tmp_path / "recog"))
    g2 = next(x for x in s2.modules.values() if isinstance(x, GMM))
    assert torch.allclose(g2.means_, g.means_) and torch.allclose(g2.covariances_, g.covariances_)
    # the GMM's recognition with the saved parameters: its own classes equal the program's
    # mixture posterior (no chain) up to a relabelling-free comparison
    g2.update()
    own = g.class_log_posterior(torch.as_tensor(d.data)).argmax(-1).numpy()
    assert np.array_equal(np.loadtxt(tmp_path / "recog" / g2.name / "class_recog.txt").astype(int), own)
