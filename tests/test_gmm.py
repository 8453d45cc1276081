"""Tests for serket_pyro.modules.gmm: exactness of the Gibbs kernel, closed-form messages, files, state."""

import io
import itertools
import json
import os

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from scipy.special import gammaln, multigammaln
from scipy.stats import dirichlet, multivariate_normal, multivariate_t, wishart

import serket_pyro as srk
import serket_pyro.modules.gmm as G
from serket_pyro.modules.gmm import GMM
from serket_pyro.messages import ClassProbs, GaussianMessage, PointMessage

from conftest import Parent

F64 = torch.float64


def toy(data_dir):
    d = np.load(os.path.join(data_dir, "serket_hmm_toy.npz"))
    return d["data"], d["category"]


def fixed_params(K=3, D=2, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(K) * 2)
    mu = rng.normal(size=(K, D)) * 2
    A = rng.normal(size=(K, D, D))
    cov = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    return w, mu, cov


def state_of(w, mu, cov):
    return {"weights": torch.tensor(w), "means": torch.tensor(mu), "covariances": torch.tensor(cov)}


# ----------------------------------------------------------------------------------------------
# 1. The Gibbs kernel samples the exact posterior over assignment vectors
# ----------------------------------------------------------------------------------------------
X5 = np.array([[-1.2, -0.3], [-0.8, 0.1], [0.1, 0.4], [0.9, -0.2], [1.4, 0.3]])
ALPHA, KAPPA0, NU0 = 1.0, 1.0, 4.0  # nu0 = D + 2 as the original
# a non-unit weight concentration: with alpha = 1 a kernel that ignores alpha is exact too
# (exact TV between the posteriors with alpha 0.3 and 1 on X5: 0.25)
ALPHA_NON_UNIT = 0.3
PSI0 = 0.5 * np.eye(2)
M0 = np.zeros(2)
# the parent's message breaks the label symmetry and must be honoured by the sampler
BIAS5 = np.log(np.array([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7], [0.5, 0.5]]))
TV_BOUND = 0.03


def niw_log_marginal(x):
    """log p(x_1..x_n) under NIW(M0, KAPPA0, NU0, PSI0), by the chain rule of multivariate-t
    posterior predictives (scipy), independent of the module's algebra."""
    D = x.shape[1] if x.ndim == 2 else 2
    lp, m, kap, nu, psi = 0.0, M0.copy(), KAPPA0, NU0, PSI0.copy()
    for xi in x:
        df = nu - D + 1
        lp += multivariate_t(loc=m, shape=psi * (kap + 1) / (kap * df), df=df).logpdf(xi)
        psi = psi + kap / (kap + 1) * np.outer(xi - m, xi - m)
        m, kap, nu = (kap * m + xi) / (kap + 1), kap + 1, nu + 1
    return lp


def niw_log_marginal_closed(x):
    """The textbook closed form (Murphy 2007, eq. 266), to cross-check the chain rule."""
    n, D = x.shape
    if n == 0:
        return 0.0
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar)
    kn, nun = KAPPA0 + n, NU0 + n
    psin = PSI0 + S + KAPPA0 * n / kn * np.outer(xbar - M0, xbar - M0)
    return (-n * D / 2 * np.log(np.pi) + D / 2 * np.log(KAPPA0 / kn) + NU0 / 2 * np.linalg.slogdet(PSI0)[1]
            - nun / 2 * np.linalg.slogdet(psin)[1] + multigammaln(nun / 2, D) - multigammaln(NU0 / 2, D))


def exact_posterior(x, K, bias, alpha=ALPHA):
    """p(z | x) for all K^N assignment vectors (weights and class parameters integrated out):
    Dirichlet-multinomial (concentration ``alpha``) x NIW marginal likelihood per class x parent
    message."""
    N = len(x)
    out = []
    for z in itertools.product(range(K), repeat=N):
        z = np.array(z)
        n = np.bincount(z, minlength=K)
        lp = gammaln(K * alpha) - gammaln(N + K * alpha) + np.sum(gammaln(n + alpha) - gammaln(alpha))
        lp += sum(niw_log_marginal(x[z == k]) for k in range(K))
        if bias is not None:
            lp += bias[np.arange(N), z].sum()
        out.append(lp)
    out = np.array(out)
    p = np.exp(out - out.max())
    return p / p.sum()


def sampled_posterior(x, K, bias, chains=4000, burn=20, keep=10, seed=0, alpha=ALPHA):
    """Empirical distribution of z over ``chains`` independent chains of the module's kernel
    (batched: the kernel accepts leading chain dimensions), ``keep`` sweeps each after ``burn``."""
    pyro.set_rng_seed(seed)
    N, D = x.shape
    xt = torch.tensor(x)
    xx = (xt.unsqueeze(-1) * xt.unsqueeze(-2)).reshape(N, D * D)
    prior = G.NIWPrior(torch.tensor(M0), torch.tensor(KAPPA0, dtype=F64), torch.tensor(NU0, dtype=F64),
                       torch.tensor(PSI0))
    z = torch.randint(K, (chains, N))
    w, mu, _, tril = G._sample_params(prior, alpha, G._suff_stats(xt, xx, z, K))
    b = None if bias is None else torch.tensor(bias)
    counts = np.zeros(K ** N)
    code = K ** torch.arange(N - 1, -1, -1)
    for s in range(burn + keep):
        z, _, w, mu, _, tril = G._gibbs_sweep(xt, xx, w, mu, tril, prior, alpha, b)
        if s >= burn:
            counts += np.bincount((z * code).sum(-1).numpy(), minlength=K ** N)
    return counts / counts.sum()


def tv(p, q):
    return 0.5 * np.abs(p - q).sum()


def test_niw_marginal_two_ways():
    for idx in ([], [0], [1, 3], [0, 2, 4], list(range(5))):
        assert np.isclose(niw_log_marginal(X5[idx]), niw_log_marginal_closed(X5[idx].reshape(-1, 2)))


@pytest.mark.parametrize("alpha", [ALPHA, ALPHA_NON_UNIT])
def test_gibbs_matches_exact_posterior(alpha):
    # 40,000 draws over 32 assignment vectors; measured TV 0.009-0.013 for seeds 0-4 (alpha 1).
    p = exact_posterior(X5, 2, BIAS5, alpha)
    q = sampled_posterior(X5, 2, BIAS5, alpha=alpha)
    assert tv(p, q) < TV_BOUND


def test_wrong_samplers_exceed_bound(monkeypatch):
    """The bound of the previous test catches wrong conditionals (measured TV in brackets):
    ignoring the parent message (0.35), weights from the prior Dirichlet(alpha) instead of
    Dirichlet(alpha + n_k) (0.11), and a Bartlett sampler with one degree of freedom too many
    (0.059); also (not run here) kappa0 instead of kappa_N for the mean (0.15), nu0 instead of
    nu_N (0.16), and Psi_N without the kappa0 n / kappa_N shrinkage term (0.094)."""
    p = exact_posterior(X5, 2, BIAS5)
    assert tv(p, sampled_posterior(X5, 2, None)) > 2 * TV_BOUND
    with monkeypatch.context() as m:
        m.setattr(G, "_sample_weights", lambda a, c: torch.distributions.Dirichlet(a + 0 * c).sample())
        assert tv(p, sampled_posterior(X5, 2, BIAS5)) > 2 * TV_BOUND
    with monkeypatch.context() as m:
        iw = G.sample_inverse_wishart
        m.setattr(G, "sample_inverse_wishart", lambda df, scale: iw(df + 1, scale))
        assert tv(p, sampled_posterior(X5, 2, BIAS5)) > 1.5 * TV_BOUND


def test_bartlett_matches_model_prior():
    """Sigma from the Bartlett sampler has the moments of the model's prior (Sigma^-1 ~
    Wishart(df, Psi^-1)): E[Sigma] = Psi / (df - D - 1), E[Sigma^-1] = df Psi^-1."""
    torch.manual_seed(0)
    psi = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    df = torch.full((40000,), 10.0, dtype=F64)
    sigma, tril = G.sample_inverse_wishart(df, psi.expand(40000, 2, 2))
    assert torch.allclose(tril @ tril.transpose(-1, -2), sigma)
    assert torch.allclose(sigma.mean(0), psi / 7, rtol=0.03, atol=0.003)
    assert torch.allclose(torch.linalg.inv(sigma).mean(0), 10 * torch.linalg.inv(psi), rtol=0.03, atol=0.05)


def test_update_runs_the_tested_kernel(tmp_path):
    """update() from a saved chain state = the kernel above, sweep for sweep (warm start), with a
    non-unit alpha (a module that passed the default 1 or ignored alpha would differ)."""
    x, _ = X5, None
    g = GMM(2, itr=3, n_average=1, mean_prior=M0, kappa0=KAPPA0, nu0=NU0, psi0=PSI0, alpha=ALPHA_NON_UNIT,
            prior_scale="absolute")
    g.connect(srk.Observation(x))
    w, mu, cov = fixed_params(K=2, D=2, seed=3)
    st = state_of(w, mu, cov)
    st.update({f"last_sample/{k}": v * (1.0 if k != "means" else -1.0) for k, v in state_of(w, mu, cov).items()})
    g.load_state_dict(st)
    pyro.set_rng_seed(11)
    g.update()

    pyro.set_rng_seed(11)
    xt = torch.tensor(x)
    xx = (xt.unsqueeze(-1) * xt.unsqueeze(-2)).reshape(5, 4)
    prior = G.NIWPrior(torch.tensor(M0), torch.tensor(KAPPA0, dtype=F64), torch.tensor(NU0, dtype=F64),
                       torch.tensor(PSI0))
    state = (torch.tensor(w), -torch.tensor(mu), torch.linalg.cholesky(torch.tensor(cov)))
    for _ in range(3):
        z, stats, *params = G._gibbs_sweep(xt, xx, *state, prior, ALPHA_NON_UNIT)
        state = (params[0], params[1], params[3])
    assert torch.equal(g.assignments_, z)
    assert torch.allclose(g.last_sample_["means"], params[1])
    # n_average=1: the reported parameters are E[theta | z, x] of the last sweep (independent numpy)
    zz = z.numpy()
    for k in range(2):
        xk = x[zz == k]
        n = len(xk)
        assert np.isclose(g.weights_[k].item(), (ALPHA_NON_UNIT + n) / (5 + 2 * ALPHA_NON_UNIT))
        xbar = xk.mean(0) if n else M0
        kn, nun = KAPPA0 + n, NU0 + n
        psin = PSI0 + (xk - xbar).T @ (xk - xbar) + KAPPA0 * n / kn * np.outer(xbar - M0, xbar - M0)
        np.testing.assert_allclose(g.means_[k].numpy(), (KAPPA0 * M0 + xk.sum(0)) / kn, atol=1e-12)
        np.testing.assert_allclose(g.covariances_[k].numpy(), psin / (nun - 2 - 1), atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 2. Enumerated class posterior = closed form; the Pyro model agrees
# ----------------------------------------------------------------------------------------------
def test_class_posterior_closed_form():
    w, mu, cov = fixed_params()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 2)) * 2
    bias = np.log(rng.dirichlet(np.ones(3), size=20))
    g = GMM(3)
    g.load_state_dict(state_of(w, mu, cov))
    ref = np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(3)], 1) + bias
    ref -= np.logaddexp.reduce(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(g.class_log_posterior(torch.tensor(x), bias).numpy(), ref, atol=1e-10)


def test_pyro_model_log_density_and_enumeration():
    w, mu, cov = fixed_params()
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(6, 2)))
    bias = torch.tensor(np.log(rng.dirichlet(np.ones(3), size=6)))
    m0, psi0 = np.array([0.1, -0.2]), np.array([[0.4, 0.1], [0.1, 0.3]])
    g = GMM(3, alpha=1.5, mean_prior=m0, kappa0=2.0, nu0=5.0, psi0=psi0, prior_scale="absolute")
    g.load_state_dict(state_of(w, mu, cov))
    prec = torch.linalg.inv(torch.tensor(cov))
    params = {"weights": torch.tensor(w), "precisions": prec, "means": torch.tensor(mu)}

    # joint log-density against scipy
    z = torch.tensor([0, 2, 1, 1, 0, 2])
    tr = poutine.trace(poutine.condition(g.model, data={**params, "z": z})).get_trace(x, bias)
    ref = dirichlet.logpdf(w, 1.5 * np.ones(3))
    for k in range(3):
        ref += wishart(df=5.0, scale=np.linalg.inv(psi0)).logpdf(prec[k].numpy())
        ref += multivariate_normal(m0, cov[k] / 2.0).logpdf(mu[k])
    for n in range(6):
        k = int(z[n])
        ref += np.log(w[k]) + float(bias[n, k]) + multivariate_normal(mu[k], cov[k]).logpdf(x[n].numpy())
    assert np.isclose(float(tr.log_prob_sum()), ref)

    # enumerating z in the model's trace gives the module's class posterior
    cols = []
    for k in range(3):
        tr = poutine.trace(poutine.condition(g.model, data={**params, "z": torch.full((6,), k)})).get_trace(x, bias)
        tr.compute_log_prob()
        cols.append(sum(tr.nodes[s]["log_prob"] for s in ("z", "bias", "x")))
    lp = torch.stack(cols, -1)
    lp = lp - lp.logsumexp(-1, keepdim=True)
    assert torch.allclose(lp, g.class_log_posterior(x, bias))


# ----------------------------------------------------------------------------------------------
# 3. The forward message excludes the parent's message; Pdz includes it
# ----------------------------------------------------------------------------------------------
def run_with_parent(x, bias, mode, state=None, seed=0, **kw):
    srk.reset_module_counter()
    g = GMM(3, mode=mode, **kw)
    g.connect(srk.Observation(x))
    if state is not None:
        g.load_state_dict(state)
    p = Parent()
    p.connect(g)
    if bias is not None:
        p.send_backward_msgs([ClassProbs(bias)])
    pyro.set_rng_seed(seed)
    g.update()
    return g


def test_forward_excludes_parent_message():
    w, mu, cov = fixed_params()
    x = np.random.default_rng(3).normal(size=(30, 2)) * 2
    strong = np.log(np.full((30, 3), 1e-6))
    strong[:, 2] = 0.0
    g0 = run_with_parent(x, None, "recog", state_of(w, mu, cov))
    g1 = run_with_parent(x, strong, "recog", state_of(w, mu, cov))
    assert torch.allclose(g0.forward_msg.log_probs, g1.forward_msg.log_probs)
    own = np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(3)], 1)
    full = own + strong
    pdz = np.loadtxt(os.path.join(g1.output_dir, "Pdz_recog.txt"))
    np.testing.assert_allclose(pdz, np.exp(full - np.logaddexp.reduce(full, 1, keepdims=True)), atol=1e-7)
    assert (pdz.argmax(1) == 2).mean() > 0.9 > (g1.forward_msg.probs.argmax(1) == 2).float().mean()


def test_forward_excludes_parent_message_learn_mode():
    w, mu, cov = fixed_params()
    x = np.random.default_rng(4).normal(size=(40, 2)) * 2
    strong = np.log(np.full((40, 3), 1e-3))
    strong[:, 0] = 0.0
    g = run_with_parent(x, strong, "learn", itr=10)
    own = np.stack([np.log(g.weights_[k].item()) + multivariate_normal(g.means_[k].numpy(),
                                                                       g.covariances_[k].numpy()).logpdf(x)
                    for k in range(3)], 1)
    own -= np.logaddexp.reduce(own, 1, keepdims=True)
    np.testing.assert_allclose(g.forward_msg.log_probs.numpy(), own, atol=1e-9)
    full = own + strong
    pdz = np.loadtxt(os.path.join(g.output_dir, "Pdz_learn.txt"))
    np.testing.assert_allclose(pdz, np.exp(full - np.logaddexp.reduce(full, 1, keepdims=True)), atol=1e-7)


# ----------------------------------------------------------------------------------------------
# 4. Backward messages
# ----------------------------------------------------------------------------------------------
def test_soft_backward_is_moment_matched_mixture():
    w, mu, cov = fixed_params(K=3, D=2, seed=5)
    x = np.random.default_rng(5).normal(size=(25, 2)) * 2
    bias = np.log(np.random.default_rng(6).dirichlet(np.ones(3), size=25))
    g = run_with_parent(x, bias, "recog", state_of(w, mu, cov))
    msg = g.children[0].get_backward_msgs()[g.name]
    r = np.loadtxt(os.path.join(g.output_dir, "Pdz_recog.txt"))
    for n in range(25):  # law of total variance, point by point
        loc = sum(r[n, k] * mu[k] for k in range(3))
        var = sum(r[n, k] * (np.diag(cov[k]) + (mu[k] - loc) ** 2) for k in range(3))
        np.testing.assert_allclose(msg.loc[n].numpy(), loc, atol=1e-6)
        np.testing.assert_allclose(msg.scale[n].numpy(), np.sqrt(var), atol=1e-6)
    np.testing.assert_allclose(np.loadtxt(os.path.join(g.output_dir, "mu_recog.txt")), msg.loc.numpy(), atol=1e-6)


def test_original_backward_is_hard_mean(data_dir):
    x, c = toy(data_dir)
    pyro.set_rng_seed(0)
    g = GMM(4, category=c, backward="original", itr=20)
    obs = srk.Observation(x)
    g.connect(obs)
    g.update()
    msg = obs.get_backward_msgs()[g.name]
    assert torch.equal(msg.loc, g.means_[g.assignments_])
    assert torch.equal(msg.scale, torch.ones_like(msg.loc))


def test_gaussian_child_input_mean_and_sample(data_dir):
    x, c = toy(data_dir)
    outs = {}
    for name, child in [("point", PointMessage(x)), ("gauss", GaussianMessage(x, 5.0))]:
        srk.reset_module_counter()
        pyro.set_rng_seed(0)
        g = GMM(4, category=c, itr=20)
        g.connect(srk.Observation(child))
        g.update()
        outs[name] = g.means_
    assert torch.equal(outs["point"], outs["gauss"])  # input="mean" ignores the scale
    pyro.set_rng_seed(0)
    g = GMM(4, category=c, itr=20, input="sample")
    g.connect(srk.Observation(GaussianMessage(x, 5.0)))
    g.update()
    within = (g.weights_.unsqueeze(-1) * g.covariances_.diagonal(dim1=-2, dim2=-1)).sum(0)
    assert within.min() > 2.0  # it clustered noisy draws (sd 5); the toy classes have variance 0.04


def test_two_children_concatenated(data_dir):
    x, c = toy(data_dir)
    a, b = srk.Observation(x[:, :1]), srk.Observation(x[:, 1:])
    pyro.set_rng_seed(0)
    g = GMM(4, category=c, itr=30)
    g.connect(a, b)
    g.update()
    assert g.means_.shape == (4, 2) and g.metrics_["accuracy"] > 0.9
    # each child gets its own columns of the moment-matched mixture over the concatenated data
    r = np.loadtxt(os.path.join(g.output_dir, "Pdz_learn.txt"))  # no parent: the class posterior
    mu, var = g.means_.numpy(), g.covariances_.diagonal(dim1=-2, dim2=-1).numpy()
    loc = r @ mu
    sd = np.sqrt(np.einsum("nk,nkd->nd", r, var[None] + (mu[None] - loc[:, None]) ** 2))
    for child, cols in ((a, slice(0, 1)), (b, slice(1, 2))):
        msg = child.get_backward_msgs()[g.name]
        assert msg.loc.shape == (100, 1)
        np.testing.assert_allclose(msg.loc.numpy(), loc[:, cols], atol=1e-6)
        np.testing.assert_allclose(msg.scale.numpy(), sd[:, cols], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 5. Accuracy on the HMM toy data, revival of empty classes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_accuracy(data_dir, seed):
    # GMM(4) alone, one update of 100 sweeps, seeds 0-19: accuracy 0.96-0.99 (0.99 on 17 of 20);
    # the original scores 0.74-0.98 on these data (dead clusters).
    x, c = toy(data_dir)
    pyro.set_rng_seed(seed)
    g = GMM(4, category=c)
    g.connect(srk.Observation(x))
    g.update()
    assert g.metrics_["accuracy"] >= 0.95
    assert g.metrics_["n_active_classes"] == 4.0


def test_empty_class_revives(data_dir):
    """Class 3 starts empty and far away (the original would keep it dead); its parameters are
    redrawn from the prior and it takes over one of the two corners class 2 had merged."""
    x, c = toy(data_dir)
    cov = np.stack([0.04 * np.eye(2), 0.04 * np.eye(2), np.diag([0.3, 0.04]), 0.04 * np.eye(2)])
    start = state_of(np.array([0.25, 0.25, 0.5, 1e-9]), np.array([[0.0, 0.0], [1, 0], [0.55, 1], [50, 50]]), cov)
    accs = []
    for seed in range(5):
        srk.reset_module_counter()
        g = GMM(4, category=c)
        g.connect(srk.Observation(x))
        g.load_state_dict(start)
        pyro.set_rng_seed(seed)
        g.update()
        assert (g.assignments_ == 3).sum() > 0
        assert g.means_[3].abs().max() < 2
        accs.append(g.metrics_["accuracy"])
    assert np.mean(accs) > 0.9  # measured: 0.75, 0.99, 0.99, 0.98, 0.98


# ----------------------------------------------------------------------------------------------
# 6. Validation, reproducibility, files, state
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"K": 0}, {"K": 2.5}, {"K": True}, {"K": 3, "itr": 0}, {"K": 3, "input": "draw"},
    {"K": 3, "backward": "hard"}, {"K": 3, "init": "kmeans"}, {"K": 3, "alpha": 0.0},
    {"K": 3, "kappa0": -1.0}, {"K": 3, "psi0": -0.1}, {"K": 3, "mode": "test"}, {"K": 3, "n_average": 0},
    {"K": 3, "psi0": [[1.0, float("nan")]]}, {"K": 3, "category": [[0, 1], [1, 0]]},
])
def test_constructor_validation(kw):
    with pytest.raises(ValueError, match="gmm"):
        GMM(**kw)


def test_update_validation(data_dir):
    x, c = toy(data_dir)
    g = GMM(4, category=c[:50])
    g.connect(srk.Observation(x))
    with pytest.raises(ValueError, match="category has 50 labels"):
        g.update()

    g = GMM(4)
    g.connect(srk.Observation(x))
    p = Parent()
    p.connect(g)
    p.send_backward_msgs([ClassProbs(np.zeros((100, 5)))])
    with pytest.raises(ValueError, match=r"shape \(100, 5\).*\(100, 4\)"):
        g.update()
    p.send_backward_msgs([PointMessage(np.zeros((100, 4)))])
    with pytest.raises(ValueError, match="ClassProbs"):
        g.update()

    for bad in [{"nu0": 3.0}, {"mean_prior": [0.0, 0.0, 0.0]}, {"psi0": [[1.0, 2.0], [2.0, 1.0]]}]:
        g = GMM(4, **bad)
        g.connect(srk.Observation(x))
        with pytest.raises(ValueError, match="gmm"):
            g.update()

    g = GMM(4)
    g.connect(srk.Observation(ClassProbs(np.zeros((100, 4)))))
    with pytest.raises(ValueError, match="point or Gaussian"):
        g.update()

    msg = PointMessage(x.copy())
    msg.value[3, 1] = float("nan")  # a child that produced NaN after validation
    g = GMM(4)
    g.connect(srk.Observation(msg))
    with pytest.raises(ValueError, match="NaN"):
        g.update()

    with pytest.raises(ValueError, match="no parameters"):
        g = GMM(4, mode="recog")
        g.connect(srk.Observation(x))
        g.update()


def test_more_classes_than_points_is_refused(tmp_path):
    x = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    g = GMM(5)
    g.connect(srk.Observation(x))
    with pytest.raises(ValueError, match=r"module000_gmm: K=5 classes for N=3 data points: learning needs K <= N"):
        g.update()
    assert g.weights_ is None and not [p for p in tmp_path.rglob("*") if p.is_file()]
    g = GMM(3)  # K = N is fine
    g.connect(srk.Observation(x))
    g.update()
    assert g.means_.shape == (3, 2) and torch.isfinite(g.forward_msg.log_probs).all()


def test_reproducible(data_dir):
    x, c = toy(data_dir)
    res = []
    for _ in range(2):
        srk.reset_module_counter()
        pyro.set_rng_seed(7)
        g = GMM(4, category=c, itr=20, init="random")
        g.connect(srk.Observation(x))
        g.update()
        g.update()
        res.append((g.assignments_, g.means_, g.forward_msg.log_probs))
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_files(data_dir, tmp_path):
    x, c = toy(data_dir)
    pyro.set_rng_seed(0)
    g = GMM(4, category=c, itr=10, output_root=tmp_path / "out")
    g.connect(srk.Observation(x))
    g.update()
    g.update()
    assert g.name == "module000_gmm"  # constructed before its observation
    names = ["Pdz_learn.txt", "class_learn.txt", "acc_learn.txt", "metrics_learn.json", "mu_learn.txt",
             "means_learn.txt", "weights_learn.txt", "covariances_learn.npz"]
    for folder in ["", "000", "001"]:
        for n in names:
            assert os.path.isfile(tmp_path / "out" / g.name / folder / n), (folder, n)
    top = tmp_path / "out" / g.name
    assert np.loadtxt(top / "Pdz_learn.txt").shape == (100, 4)
    assert np.loadtxt(top / "mu_learn.txt").shape == (100, 2)
    np.testing.assert_allclose(np.loadtxt(top / "means_learn.txt"), g.means_.numpy(), rtol=1e-7)
    np.testing.assert_allclose(np.loadtxt(top / "weights_learn.txt"), g.weights_.numpy(), rtol=1e-7)
    np.testing.assert_allclose(np.load(top / "covariances_learn.npz")["covariances"], g.covariances_.numpy())
    assert np.isclose(float(np.loadtxt(top / "acc_learn.txt")), g.metrics_["accuracy"], atol=1e-6)
    # class_learn.txt is relabelled onto the true labels: its agreement with them is the accuracy
    cls = np.loadtxt(top / "class_learn.txt")
    assert set(cls.astype(int)) <= set(range(4))
    assert float((cls == c).mean()) == pytest.approx(g.metrics_["accuracy"], abs=1e-9)
    assert all(isinstance(v, float) for v in g.metrics_.values())
    json.dumps(g.get_config())


def test_state_dict_round_trip_and_resume(data_dir):
    x, c = toy(data_dir)
    g = GMM(4, category=c, itr=20)
    g.connect(srk.Observation(x))
    pyro.set_rng_seed(1)
    g.update()
    buf = io.BytesIO()
    torch.save(g.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(sd) == {"weights", "means", "covariances", "assignments", "last_sample/weights",
                       "last_sample/means", "last_sample/covariances"}

    # recognition with the restored parameters gives the same messages
    r = GMM(4, mode="recog")
    r.connect(srk.Observation(x))
    r.load_state_dict(sd)
    for k, v in r.state_dict().items():  # weights are renormalised on loading: equal to rounding
        assert torch.allclose(v, sd[k], rtol=1e-13, atol=0), k
    r.update()
    assert torch.allclose(r.forward_msg.log_probs, g.forward_msg.log_probs)

    # resuming from the checkpoint continues the same chain
    pyro.set_rng_seed(2)
    g.update()
    h = GMM(4, category=c, itr=20)
    h.connect(srk.Observation(x))
    h.load_full_state_dict({f"state/{k}": v for k, v in sd.items()})
    pyro.set_rng_seed(2)
    h.update()
    assert torch.equal(h.assignments_, g.assignments_)
    assert torch.allclose(h.means_, g.means_)

    with pytest.raises(ValueError, match="K=3"):
        GMM(3).load_state_dict(sd)


def test_collapsed_log_joint_equals_closed_form():
    """The criterion that picks between chains is the exact collapsed log p(x, z) + bias."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 2)) + M0
    K, N = 3, 7
    bias = np.log(rng.dirichlet(np.ones(K), size=N))
    xt = torch.tensor(x - M0)
    xx = (xt.unsqueeze(-1) * xt.unsqueeze(-2)).reshape(N, 4)
    prior = G.NIWPrior(torch.zeros(2, dtype=F64), torch.tensor(KAPPA0, dtype=F64), torch.tensor(NU0, dtype=F64),
                       torch.tensor(PSI0))
    for _ in range(5):
        z = rng.integers(K, size=N)
        n = np.bincount(z, minlength=K)
        exact = gammaln(K * ALPHA) - gammaln(N + K * ALPHA) + np.sum(gammaln(n + ALPHA) - gammaln(ALPHA))
        exact += sum(niw_log_marginal_closed(x[z == k]) for k in range(K)) + bias[np.arange(N), z].sum()
        zt = torch.tensor(z)
        got = G._log_collapsed_joint(prior, ALPHA, G._suff_stats(xt, xx, zt, K), zt, torch.tensor(bias))
        assert got == pytest.approx(exact, rel=1e-9, abs=1e-8)


def test_message_init_chain_moves_a_whole_class():
    """A confident parent that splits a merged class is followed thanks to the message-started
    chain (single-point Gibbs moves alone keep the merge); without it the merge stays."""
    rng = np.random.default_rng(0)
    # three well separated blobs, but the parent insists blob 2 is two classes by index parity
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    truth = np.repeat([0, 1, 2], 60)
    x = centres[truth] + 0.5 * rng.normal(size=(180, 2))
    parent = np.where(truth == 2, 2 + (np.arange(180) % 2), truth)   # 4 classes
    bias = np.log(np.full((180, 4), 1e-6))
    bias[np.arange(180), parent] = 0.0
    results = {}
    for message_init in (False, True):
        srk.reset_module_counter()
        pyro.set_rng_seed(0)
        obs = srk.Observation(x)
        g = GMM(4, itr=30, message_init=message_init, nu0=4.0, psi0=0.1, prior_scale="absolute")  # original prior
        g.connect(obs)
        g.update()                         # no parent message yet: 3 blobs, a 4th class near-empty
        g._backward_msgs["parent"] = ClassProbs(torch.tensor(bias))
        g.parents.append(type("P", (), {"name": "parent"})())
        g.update()
        pred = g.class_log_posterior(torch.tensor(x), torch.tensor(bias)).argmax(-1).numpy()
        results[message_init] = (pred == parent).mean()
    assert results[True] > 0.99 and results[False] < 0.9, results


def test_cold_start_keeps_the_most_probable_of_n_init_chains():
    """Five clusters, two of them close: chains from random starts often merge a pair and split
    another; the first update keeps the chain of highest collapsed log joint among ``n_init``."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [6, 0], [0, 6], [6, 6], [2.5, 0]])
    x = np.concatenate([c + 0.5 * rng.standard_normal((60, 2)) for c in centres])
    c = np.repeat(np.arange(5), 60)
    prior = GMM(5)._prior(torch.as_tensor(x, dtype=torch.float64))
    xc = torch.as_tensor(x, dtype=torch.float64) - prior.loc
    xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(len(x), -1)
    kept = {1: [], 8: []}
    for n_init in (1, 8):
        for seed in range(6):
            pyro.set_rng_seed(seed)
            g = GMM(5, itr=30, n_init=n_init, category=c, init="random")
            g.connect(srk.Observation(x))
            g.update()
            assert len(g.chain_log_joint_) == n_init
            np.testing.assert_allclose(np.loadtxt(g.output_dir + "/000/chain_log_joint_learn.txt", ndmin=1),
                                       g.chain_log_joint_, rtol=1e-7)
            assert g.metrics_["n_chains"] == n_init
            lj = G._log_collapsed_joint(prior, g.alpha, G._suff_stats(xc, xx, g.assignments_, 5), g.assignments_)
            assert np.isclose(lj, max(g.chain_log_joint_))
            kept[n_init].append(lj)
            g.update()  # warm start: one chain
            assert len(g.chain_log_joint_) == 1
    # the best of eight random starts is far more probable than a single one, on average
    assert np.mean(kept[8]) > np.mean(kept[1]) + 20


def test_kmeanspp_start_is_ops_kmeans_and_recovers_blobs():
    """The GMM's cold start is ops.kmeans seeded from the global RNG: separated blobs come out exact."""
    from serket_pyro.ops import kmeans

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0], [9.0, 9.0]], dtype=torch.float64)
    y = torch.arange(4).repeat_interleave(torch.tensor([50, 10, 30, 4]))
    x = centres[y] + 0.4 * torch.randn(len(y), 2, generator=g, dtype=torch.float64)
    torch.manual_seed(7)
    z = G._kmeanspp(x, 4)
    assert z.shape == (94,) and z.dtype == torch.int64
    assert len(set(zip(z.tolist(), y.tolist()))) == 4  # the true partition, up to renaming
    torch.manual_seed(7)
    seed = int(torch.randint(2**62, (), dtype=torch.int64))
    assert torch.equal(z, kmeans(x, 4, n_init=10, max_iter=20, seed=seed).labels)


def test_cold_chains_are_screened_and_the_best_runs_on(monkeypatch):
    """screen_sweeps: every cold chain runs S sweeps, only the most probable runs on to itr (the
    same Markov chain as itr sweeps in one go); kmeans_restarts reaches each chain's k-means++."""
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [6, 0], [0, 6], [6, 6]])
    x = np.concatenate([c + rng.standard_normal((40, 2)) for c in centres])
    sweeps, restarts = [0], []
    sweep, kpp = G._gibbs_sweep, G._kmeanspp

    def counted(*a, **k):
        sweeps[0] += 1
        return sweep(*a, **k)

    def recorded(x_, K, n_init=10, n_lloyd=20):
        restarts.append(n_init)
        return kpp(x_, K, n_init=n_init, n_lloyd=n_lloyd)

    monkeypatch.setattr(G, "_gibbs_sweep", counted)
    monkeypatch.setattr(G, "_kmeanspp", recorded)
    pyro.set_rng_seed(0)
    g = GMM(4, itr=30, n_init=3, screen_sweeps=12, n_average=5, kmeans_restarts=1)
    g.connect(srk.Observation(x))
    g.update()
    assert sweeps[0] == 3 * 12 + (30 - 12)                  # not 3 * 30
    assert restarts == [1, 1, 1]                             # kmeans_restarts for each chain
    assert len(g.chain_log_joint_) == 3
    sweeps[0], restarts[:] = 0, []
    g2 = GMM(4, itr=30, n_init=3, n_average=5)              # defaults: no screening, 10 restarts
    g2.connect(srk.Observation(x))
    g2.update()
    assert sweeps[0] == 3 * 30 and restarts == [10, 10, 10]
    # too few sweeps left after the screen to average n_average: no screening either
    sweeps[0] = 0
    g3 = GMM(4, itr=30, n_init=3, screen_sweeps=28, n_average=5)
    g3.connect(srk.Observation(x))
    g3.update()
    assert sweeps[0] == 3 * 30

    # a chain continued from its last state is the chain run in one go
    monkeypatch.setattr(G, "_gibbs_sweep", sweep)
    prior = g._prior(torch.as_tensor(x, dtype=torch.float64))
    xc = torch.as_tensor(x, dtype=torch.float64) - prior.loc
    xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(len(x), -1)
    pyro.set_rng_seed(5)
    start = g._cold_state(xc, xx, prior)
    pyro.set_rng_seed(6)
    one = g._run_chain(xc, xx, start, prior, None, sweeps=20)
    pyro.set_rng_seed(6)
    a = g._run_chain(xc, xx, start, prior, None, sweeps=8)
    b = g._run_chain(xc, xx, (a["last"]["weights"], a["last"]["means"], a["last_tril"]), prior, None, sweeps=12)
    assert torch.equal(one["z"], b["z"]) and torch.equal(one["last"]["means"], b["last"]["means"])
    assert torch.equal(one["weights"], b["weights"]) and one["log_joint"] == b["log_joint"]
