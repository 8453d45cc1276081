"""Joint mode (serket_pyro.joint): exact discrete marginalisation, module-wise decomposition, smoke runs."""

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import serket_pyro as srk
from serket_pyro.datasets import load_mnist_subset
from serket_pyro.modules.gmm import GMM, class_log_likelihood
from serket_pyro.joint import joint_model
from serket_pyro.modules.mm import MarkovModel
from serket_pyro.models import vae_gmm, vae_gmm_mm
from serket_pyro.modules.vae import VAE


def _graph(x, K, mm, **vae_kw):
    """Observation -> VAE -> GMM (-> MarkovModel) on ``x``; returns the module list."""
    obs = srk.Observation(x)
    v = VAE(**vae_kw)
    g = GMM(K)
    v.connect(obs)
    g.connect(v)
    mods = [obs, v, g]
    if mm:
        m = MarkovModel()
        m.connect(g)
        mods.append(m)
    return mods


def _tiny(mm=False, N=12, D=6, K=3, L=2, chunk_len=4, seed=0, covariance="full", likelihood="bernoulli",
          entropy="analytic"):
    """A JointModel on random data with random (non-trivial) class parameters."""
    torch.manual_seed(seed)
    x = torch.rand(N, D)
    mods = _graph(x, K, mm, latent_dim=L, hidden=5, batch_size=4, likelihood=likelihood)
    jm = joint_model(mods, chunk_len=chunk_len, covariance=covariance, entropy=entropy)
    a = torch.randn(K, L, L, dtype=torch.float64) * 0.7
    cov = a @ a.transpose(-1, -2) + 0.3 * torch.eye(L, dtype=torch.float64)  # correlated classes
    w = torch.rand(K, dtype=torch.float64) + 0.2
    jm.set_gaussians(torch.randn(K, L, dtype=torch.float64), cov, w / w.sum())
    if mm:
        A = torch.rand(K, K, dtype=torch.float64) + 0.1
        jm.program.set_param(jm.mm, "trans_prob", A / A.sum(1, keepdim=True))
    return jm, x


def _gauss_log_pdf(z, mean, cov):
    """log N(z | mean, cov) written out (inverse and determinant), independent of torch.distributions."""
    d = (z - mean).double()
    cov = cov.double()
    return -0.5 * (len(d) * math.log(2 * math.pi) + torch.logdet(cov) + d @ torch.linalg.inv(cov) @ d)


def _emissions(jm, z):
    """(..., K) log N(z | mu_k, Sigma_k) with Sigma_k = scale_tril scale_tril^T of the parameters."""
    p = jm.params()
    t = p["scale_tril"].detach()
    cov = t @ t.transpose(-1, -2)
    flat = z.reshape(-1, jm.L)
    out = torch.stack([torch.stack([_gauss_log_pdf(flat[n], p["means"][k].detach(), cov[k]) for k in range(jm.K)])
                       for n in range(len(flat))])
    return out.reshape(*z.shape[:-1], jm.K)


def _brute_force_neg_elbo(jm, xb, eps, entropy="analytic"):
    """Negative ELBO per data point of a JointModel for one draw ``eps``, written out by hand.

    ``xb``: ``(N, D)`` data, or ``(B, T, D)`` chunks with a Markov model; ``eps``: standard normal
    noise of the latents' shape, ``z = loc + eps * scale``.  Returns
    ``-(log p(x | z) + log p(z) - log q(z | x)) / (number of points)`` with ``log p(z)`` a sum over
    every class (GMM) or every class sequence (Markov model, uniform first state), Gaussian
    densities from an explicit inverse and determinant, the likelihood from the Bernoulli or
    Normal formula and ``log q`` from the Normal formula (``entropy="sampled"``) or ``-E_q[log q]``
    its closed form ``sum(log scale) + L/2 log(2 pi e)`` (``"analytic"``).
    """
    vae = jm.vae
    with torch.no_grad():
        loc, scale = vae.encoder_(xb)
        loc, scale = loc.double(), scale.double()
        z = loc + eps * scale
        out = vae.decoder_(z.float())
        xd = xb.double()
        if vae.likelihood == "bernoulli":
            p = torch.sigmoid(out.double())
            log_px = (xd * p.log() + (1 - xd) * (1 - p).log()).sum()
        else:
            mean, s = out[0].double(), torch.as_tensor(out[1]).double()
            log_px = (-0.5 * ((xd - mean) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum()
        emit = _emissions(jm, z)  # (..., K)
        par = jm.params()
        if jm.mm is None:
            log_w = par["weights"].detach().log()
            log_pz = sum(math.log(sum(math.exp(log_w[k] + emit[n, k]) for k in range(jm.K)))
                         for n in range(z.shape[0]))
        else:
            log_A = par["trans_prob"].detach().log()
            T = z.shape[1]
            log_pz = 0.0
            for b in range(z.shape[0]):
                total = 0.0
                for seq in itertools.product(range(jm.K), repeat=T):
                    lp = -math.log(jm.K) + emit[b, 0, seq[0]] + sum(log_A[seq[t - 1], seq[t]] + emit[b, t, seq[t]]
                                                                    for t in range(1, T))
                    total += math.exp(lp)
                log_pz += math.log(total)
        if entropy == "sampled":
            log_q = (-0.5 * eps ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
        else:
            log_q = (-0.5 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
        return -float(log_px + log_pz - log_q) / (z.numel() // z.shape[-1])


@pytest.mark.parametrize("mm,likelihood,covariance,entropy",
                         [(False, "bernoulli", "full", "analytic"), (False, "bernoulli", "full", "sampled"),
                          (False, "gaussian", "diag", "analytic"), (True, "bernoulli", "full", "analytic"),
                          (True, "bernoulli", "full", "sampled")])
def test_joint_loss_equals_brute_force_elbo(mm, likelihood, covariance, entropy):
    """JointModel.loss (the objective its fit descends: the compiled program's negative ELBO) on a
    tiny model with random parameters equals the ELBO written out by hand for the same draw of z:
    classes (GMM: 2 points, 3 classes) or class sequences (Markov model: one chunk of 3 steps, 2
    classes) enumerated.  A flipped sign of log q or a dropped log p(z) (the KL's prior term)
    moves the loss far beyond the tolerance (checked below on the same draw).  ``entropy``: the
    guide's ``-log q`` as drawn, or its closed-form expectation."""
    K, N = (2, 3) if mm else (3, 2)
    jm, x = _tiny(mm=mm, N=N, D=5, K=K, L=2, chunk_len=N, covariance=covariance, likelihood=likelihood,
                  entropy=entropy)
    if likelihood == "gaussian":
        with torch.no_grad():
            jm.vae.decoder_.log_scale.fill_(-0.7)  # a scale far from 1: log s matters
    if covariance == "diag":  # only the variances are kept
        assert (jm.covariances() - torch.diag_embed(jm.covariances().diagonal(dim1=-2, dim2=-1))).abs().max() == 0
    else:
        assert (jm.covariances() - torch.diag_embed(jm.covariances().diagonal(dim1=-2, dim2=-1))).abs().max() > 0.1
    xb = x.unsqueeze(0) if mm else x
    torch.manual_seed(3)
    got = float(jm.loss().detach())
    torch.manual_seed(3)
    eps = torch.empty(*xb.shape[:-1], 2, dtype=torch.float64).normal_()
    want = _brute_force_neg_elbo(jm, xb, eps, entropy)
    assert got == pytest.approx(want, abs=1e-6 * abs(want) + 1e-6), (got, want)
    # the loss is the compiled program's, drawn the same way
    torch.manual_seed(3)
    program_loss = jm.program.loss_fn().differentiable_loss(jm.program.model, jm.program.guide, None, None)
    assert float(program_loss.detach()) == pytest.approx(got, rel=1e-12)
    # the tolerance is far below what wrong objectives change: a flipped log q, a missing log p(z)
    with torch.no_grad():
        loc, scale = jm.vae.encoder_(xb)
        z = loc.double() + eps * scale.double()
        log_q = float((-0.5 * eps ** 2 - scale.double().log() - 0.5 * math.log(2 * math.pi)).sum()) / N
        emit = _emissions(jm, z)
    assert abs(2 * log_q) > 0.1
    assert float(emit.logsumexp(-1).sum().abs()) / N > 0.1
    # a wrong marginalisation (max over classes instead of log-sum-exp) is visibly different
    assert float((emit.logsumexp(-1) - emit.max(-1).values).sum()) / N > 1e-2


def test_joint_model_holds_probabilities_as_softmax_logits():
    """JointModel's class weights and chain rows are K logits each (VaDE's parametrisation), not
    torch's K - 1 stick-breaking coordinates, and map back to the probabilities they were set to."""
    from torch.distributions import transform_to

    from serket_pyro.joint.constraints import softmax_simplex

    jm, _ = _tiny(K=3)
    assert jm.program._params[jm.gmm.name]["weights"].shape == (3,)
    jm, _ = _tiny(mm=True, K=3)  # under a chain the GMM has no weights: the chain's rows
    raw = jm.program._params
    assert raw[jm.mm.name]["trans_prob"].shape == (3, 3)
    A = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.05, 0.9, 0.05]], dtype=torch.float64)
    jm.program.set_param(jm.mm, "trans_prob", A)
    assert torch.allclose(jm.program.params(jm.mm)["trans_prob"], A, atol=1e-12)
    u = raw[jm.mm.name]["trans_prob"].detach()
    assert torch.allclose(u.sum(-1), torch.zeros(3, dtype=torch.float64), atol=1e-12)  # centred logits
    assert torch.allclose(transform_to(softmax_simplex)(u), u.softmax(-1))


def test_joint_log_likelihood_is_sum_of_module_terms():
    """With c and z fixed, log p(x, z, c) of the joint program = VAE term + GMM term, computed
    from the modules' parameters after ``to_modules()``."""
    import torch.nn.functional as F

    jm, x = _tiny()
    jm.to_modules()
    N = x.shape[0]
    c = torch.randint(jm.K, (N,))
    z = torch.randn(N, jm.L, dtype=torch.float64)
    vae, gmm = jm.vae, jm.gmm
    tr = poutine.trace(poutine.condition(jm.program.model, data={gmm.joint_site(): c, vae.joint_site(): z})).get_trace()
    joint = tr.log_prob_sum() * N  # the program is scaled to a per-point mean
    with torch.no_grad():
        vae_term = -F.binary_cross_entropy_with_logits(vae.decoder_(z.float()).double(), x.double(),
                                                       reduction="sum")
    gmm_ll = class_log_likelihood(z, gmm.means_, torch.linalg.cholesky(gmm.covariances_))
    gmm_term = (gmm.weights_.log()[c] + gmm_ll[torch.arange(N), c]).sum()
    assert torch.allclose(joint.double(), vae_term + gmm_term, rtol=1e-5)


@pytest.mark.parametrize("system", ["vae_gmm", "vae_gmm_mm"])
def test_joint_fit_runs_and_hands_back(system, tmp_path):
    d = load_mnist_subset()
    x, y = d.as_float()[:200], d.category[:200]
    build = vae_gmm.build if system == "vae_gmm" else vae_gmm_mm.build
    pyro.set_rng_seed(0)
    s = build(x, y, epochs=1, batch_size=50, gmm_itr=2, output_root=str(tmp_path))
    jm = joint_model(s, chunk_len=25)
    losses = jm.fit(2, pretrain_epochs=1, batch_size=50, eval_every=1)
    # the joint epochs descend the objective: measured epoch 2 / epoch 1 = 0.74-0.76 for all four cases
    assert len(losses) == 2 and losses[1] < 0.9 * losses[0], losses
    assert jm.loss_history_ == losses
    assert len(jm.accuracy_history_) == 2
    logp = jm.predict()
    assert logp.shape == (200, 10)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(200, dtype=logp.dtype))
    # new data: the training rows given again classify as the training data; 8-bit images too
    assert torch.allclose(jm.predict(x[50:90]) if system == "vae_gmm" else jm.predict(x), logp[50:90]
                          if system == "vae_gmm" else logp, atol=1e-6)
    new = d.images[200:260] if hasattr(d, "images") else (d.as_float()[200:260] * 255).round()
    assert jm.predict(new).shape == (60, 10)
    with pytest.raises(ValueError, match="D=16, the model was fitted on D=784"):
        jm.predict(np.zeros((3, 16)))
    jm.to_modules()
    # the modules recognise with the handed-back parameters
    for m in ("vae", "gmm", "mm"):
        if m in s.modules:
            s[m].mode = "recog"
    for m in ("vae", "gmm", "mm"):
        if m in s.modules:
            s[m].update()
    assert torch.allclose(s["vae"].forward_msg.loc.float(), jm.encode(), atol=1e-5)
    if system == "vae_gmm":  # the GMM module's class posterior is the joint model's (measured to 2e-4)
        lp = s["gmm"].forward_msg.log_probs
        assert torch.allclose(lp.cpu().double(), logp.cpu().double(), atol=1e-3)


def test_joint_model_rejects_other_graphs():
    obs = srk.Observation(torch.rand(5, 4))
    v = VAE(2)
    v.connect(obs)
    with pytest.raises(ValueError, match="joint_model"):
        joint_model([obs, v], compiled=False)
    # any other graph is compiled (serket_pyro.joint.compiler)
    assert isinstance(joint_model([obs, v]), srk.joint.JointProgram)
    g = GMM(2)
    g.connect(v)
    with pytest.raises(ValueError, match="covariance must be 'full' or 'diag'"):
        joint_model([obs, v, g], covariance="spherical")


def test_init_from_message_passing_modules(tmp_path):
    d = load_mnist_subset()
    x, y = d.as_float()[:200], d.category[:200]
    pyro.set_rng_seed(0)
    s = vae_gmm_mm.build(x, y, epochs=2, batch_size=50, gmm_itr=3, output_root=str(tmp_path))
    jm0 = joint_model(s, chunk_len=25)
    with pytest.raises(ValueError, match="message-passing system first"):
        jm0.fit(1, init="modules")
    s.fit(n_iter=1, progress=False)
    jm = joint_model(s, chunk_len=25, covariance="full")
    jm.init_clusters("modules")
    g, m = s["gmm"], s["mm"]
    assert torch.allclose(jm.params()["means"].detach(), g.means_, atol=1e-5)
    assert torch.allclose(jm.covariances().detach(), g.covariances_, rtol=1e-4, atol=1e-7)
    assert torch.allclose(jm.params()["trans_prob"].detach(), m.trans_prob_, atol=1e-5)
    # with the message-passing GMM's parameters and networks the joint model classifies as the GMM
    # does (full covariances are taken over; VaDE's diagonal ones lose some points)
    pred = jm.predict().argmax(-1).numpy()
    own = g.class_log_posterior(torch.as_tensor(s["vae"].forward_msg.loc)).argmax(-1).numpy()
    agree = {}
    for cov in ("full", "diag"):
        jm_gmm = joint_model([s["obs"], s["vae"], g], covariance=cov)
        jm_gmm.init_clusters("modules")
        agree[cov] = (jm_gmm.predict().argmax(-1).numpy() == own).mean()
        # exactly the class posterior of the GMM's parameters, with the diagonal of its covariances
        # for "diag" (written out with an explicit inverse and determinant)
        z = jm_gmm.encode().double()
        covs = g.covariances_ if cov == "full" else torch.diag_embed(g.covariances_.diagonal(dim1=-2, dim2=-1))
        d = z.unsqueeze(1) - g.means_  # (N, K, L)
        quad = torch.einsum("nki,kij,nkj->nk", d, torch.linalg.inv(covs), d)
        lj = -0.5 * (quad + torch.logdet(covs) + z.shape[1] * math.log(2 * math.pi)) + g.weights_.log()
        want = lj - lj.logsumexp(-1, keepdim=True)
        assert torch.allclose(jm_gmm.predict(), want, atol=1e-3), cov
    assert agree["full"] > 0.99, agree
    assert pred.shape == (200,)
    with torch.no_grad():  # the negative ELBO at the start, mean of 10 draws
        start = float(np.mean([float(jm.loss()) for _ in range(10)]))
    losses = jm.fit(1, init="modules", batch_size=50)
    # one joint epoch from the modules' start lowers it (measured 4094 against 4323 at the start)
    assert len(losses) == 1 and losses[0] < start, (losses, start)


def test_joint_model_deskews_like_the_vae(tmp_path):
    """With VAE(deskew=True) the joint model fits the deskewed images, and the modules it hands
    back encode exactly as the joint model does (the VAE deskews in recognition too)."""
    from serket_pyro.features.deskew import deskew

    d = load_mnist_subset()
    x, y = d.as_float()[:100], d.category[:100]
    pyro.set_rng_seed(0)
    s = vae_gmm.build(x, y, epochs=1, batch_size=50, gmm_itr=2, deskew=True, output_root=str(tmp_path))
    jm = joint_model(s)
    assert torch.allclose(jm.x, torch.from_numpy(deskew(x)))
    jm.fit(1, batch_size=50)
    x8 = joint_model(s, x=(np.asarray(x) * 255).round().astype(np.uint8)).x  # 8-bit data: scaled, deskewed
    assert (x8 - jm.x).abs().max() <= 1.0 / 255
    jm.to_modules()
    s["vae"].mode = "recog"
    s["vae"].update()
    assert torch.allclose(s["vae"].forward_msg.loc.float(), jm.encode(), atol=1e-5)


def test_gmm_start_with_the_neighbour_prior(tmp_path, monkeypatch):
    """init_clusters("gmm", gmm_prior="neighbours") runs the GMM module with nu0 = L + 100 and
    E[Sigma] = 4 v I, v = half the mean squared per-dimension gap to the 10 nearest latents."""
    import serket_pyro.joint.model as joint_mod

    made, made_gmm = [], []

    class Recording(GMM):
        def __init__(self, *a, **k):
            made.append(k)
            made_gmm.append(self)
            super().__init__(*a, **k)

    jm, _ = _tiny(N=40, K=2, L=3)
    monkeypatch.setattr(joint_mod, "GMM", Recording)
    jm.init_clusters("gmm", gmm_itr=2, gmm_prior="neighbours")
    z = jm.encode().double()
    d2 = torch.cdist(z, z).pow(2)
    d2.fill_diagonal_(float("inf"))
    v = d2.topk(10, largest=False).values.mean() / (2 * 3)
    k = made[-1]
    assert k["nu0"] == 103 and k["prior_scale"] == "absolute"
    assert k["psi0"] == pytest.approx(float((103 - 3 - 1) * 4 * v), rel=1e-6)
    assert torch.isfinite(jm.covariances()).all()
    assert torch.allclose(jm.covariances(), made_gmm[-1].covariances_.double(), rtol=1e-6)
    with pytest.raises(ValueError, match="gmm_prior"):
        jm.init_clusters("gmm", gmm_prior="wide")


def test_diagonal_start_from_modules_keeps_the_class_variances():
    """init_clusters("modules") with covariance="diag": the class Gaussians are N(mu_k, diag(S_k))
    with S_k the GMM's (correlated) covariances, i.e. scales sqrt(S_k,ll) (not the Cholesky
    diagonal, not the variances); the full start takes S_k itself."""
    jm, _ = _tiny(N=12, K=3, L=2, covariance="diag")
    v, g = jm.vae, jm.gmm
    v.loss_history_ = [0.0]  # as after training (init="modules" refuses an untrained VAE)
    cov = torch.tensor([[[2.0, 1.2], [1.2, 1.0]], [[0.3, -0.2], [-0.2, 0.5]], [[4.0, 0.0], [0.0, 0.09]]],
                       dtype=torch.float64)
    g.means_ = torch.tensor([[1.0, -1.0], [0.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    g.covariances_ = cov
    g.weights_ = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    jm.init_clusters("modules")
    var = torch.stack([cov[k].diagonal() for k in range(3)])
    assert torch.allclose(jm.covariances().double(), torch.diag_embed(var), rtol=1e-5, atol=1e-7)
    p = jm.params()
    assert torch.allclose(p["scale_tril"].detach(), torch.diag_embed(var.sqrt()), rtol=1e-5)
    assert torch.allclose(p["means"].detach(), g.means_, atol=1e-6)
    assert torch.allclose(p["weights"].detach(), g.weights_, atol=1e-6)
    full = joint_model([jm.vae.children[0], v, g], covariance="full")
    full.init_clusters("modules")
    assert torch.allclose(full.covariances().double(), cov, rtol=1e-5, atol=1e-6)


def test_pretrain_logs_every_epoch_and_takes_zero_epochs(caplog):
    jm, _ = _tiny(N=12)
    with caplog.at_level("INFO", logger="serket_pyro"):
        losses = jm.pretrain(3, batch_size=4, progress=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pretrain epoch")]
    assert [line.split(":")[0] for line in lines] == ["pretrain epoch 1", "pretrain epoch 2", "pretrain epoch 3"]
    assert [float(line.split()[-1]) for line in lines] == pytest.approx(losses, abs=0.006)
    assert jm.pretrain(0) == [] and jm.pretrain_history_ == losses


def _linear_gaussian_vae_gmm(N=400, D=8, L=3, s=0.5, tau=(0.3, 0.6, 1.2), seed=0, rows=slice(None)):
    """JointModel of x = W z + s eps (a linear decoder with fixed noise ``s``) under one class
    ``N(0, diag tau^2)``, the encoder's log-variance weights zero (a common variance per
    dimension), on ``rows`` of ``N`` random points; returns it and the ELBO-optimal scales
    ``1 / sqrt((W^T W)_dd / s^2 + 1 / tau_d^2)`` (whatever the data)."""
    from torch import nn

    from serket_pyro.modules.vae import Encoder, FixedScaleDecoder

    torch.manual_seed(seed)
    W = torch.randn(D, L) * 0.4
    lin = nn.Linear(L, D)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.zero_()
    obs = srk.Observation(torch.randn(N, D)[rows])
    v = VAE(latent_dim=L, encoder=Encoder(D, L, 16), decoder=FixedScaleDecoder(lin, s), likelihood="gaussian",
            batch_size=200)
    g = GMM(1)
    v.connect(obs)
    g.connect(v)
    jm = joint_model([obs, v, g], covariance="diag")
    tau = torch.tensor(tau, dtype=torch.float64)
    jm.set_gaussians(torch.zeros(1, L, dtype=torch.float64), torch.diag_embed(tau ** 2)[None],
                     torch.ones(1, dtype=torch.float64))
    with torch.no_grad():
        jm.vae.encoder_.fc_logvar.weight.zero_()
    best = 1.0 / ((W * W).sum(0).double() / s ** 2 + 1.0 / tau ** 2).sqrt()
    return jm, best


def test_encoder_scale_start_finds_the_elbo_optimal_scale():
    """For a linear-Gaussian decoder under one Gaussian class, the ELBO of q = N(mu(x), diag
    sigma^2) is maximised at 1 / sigma_d^2 = (W^T W)_dd / s^2 + 1 / tau_d^2 whatever mu(x):
    start_encoder_scale must find it (without the entropy sigma goes to 0; without the prior
    term it is 1.07-1.9 times larger), and leave every other parameter as it was."""
    jm, best = _linear_gaussian_vae_gmm()
    bias = jm.vae.encoder_scale_bias()
    others = {n: p.detach().clone() for n, p in jm.program.named_parameters() if p is not bias}
    losses = jm.start_encoder_scale(batch_size=200)
    sigma = (0.5 * bias.detach().double()).exp()
    assert len(losses) == 400 and np.mean(losses[-20:]) < losses[0]
    assert torch.allclose(sigma, best, rtol=0.03), (sigma, best)
    assert all(torch.equal(p, others[n]) for n, p in jm.program.named_parameters() if p is not bias)
    assert all(p.requires_grad for p in jm.program.parameters())


def test_fit_starts_the_encoder_scale_after_an_autoencoder_pretraining(monkeypatch, caplog):
    from torch import nn

    from serket_pyro.joint.model import JointModel
    from serket_pyro.modules.vae import LogVarEncoder

    calls = []
    real = JointModel.start_encoder_scale
    monkeypatch.setattr(JointModel, "start_encoder_scale", lambda self, *a, **k: calls.append(k) or real(self, *a, **k))
    jm, _ = _tiny(N=12)
    jm.fit(0, pretrain_epochs=1, pretrain_kl_weight=1.0, init="kmeans", batch_size=4)
    assert calls == []  # a VAE's pretraining trains the scale too
    jm.fit(0, pretrain_epochs=1, pretrain_kl_weight=0.0, init="kmeans", batch_size=4)
    assert calls == [{"batch_size": 4}]
    jm.fit(1, init=None, batch_size=4)
    assert len(calls) == 1  # once after each autoencoder pretraining

    class Net(nn.Module):  # a user's (mu, log_var) network: its scale layer is not reachable
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 4)

        def forward(self, x):
            return self.lin(x).chunk(2, -1)

    torch.manual_seed(0)
    mods = _graph(torch.rand(12, 6), 3, False, latent_dim=2, hidden=5, batch_size=4, encoder=LogVarEncoder(Net()))
    jm = joint_model(mods)
    with caplog.at_level("WARNING", logger="serket_pyro"):
        jm.fit(0, pretrain_epochs=1, pretrain_kl_weight=0.0, init="kmeans", batch_size=4)
    assert "has no log-variance layer" in caplog.text and calls[-1] == {"batch_size": 4}
