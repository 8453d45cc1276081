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
from serket_pyro.ops.forward_backward import forward_backward
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


def _tiny(mm=False, N=12, D=6, K=3, L=2, chunk_len=4, seed=0, covariance="full"):
    torch.manual_seed(seed)
    x = torch.rand(N, D)
    mods = _graph(x, K, mm, latent_dim=L, hidden=5, batch_size=4)
    jm = joint_model(mods, chunk_len=chunk_len, covariance=covariance)
    with torch.no_grad():  # non-trivial parameters
        jm.means.normal_()
        jm.log_scales.uniform_(-0.5, 0.5)
        if jm.tril is not None:
            jm.tril.uniform_(-0.7, 0.7)  # correlated classes (only the strictly lower part counts)
        jm.weight_logits.normal_()
        if mm:
            jm.trans_logits.normal_()
    return jm, x


def _gauss_log_pdf(z, mean, cov):
    """log N(z | mean, cov) written out (inverse and determinant), independent of torch.distributions."""
    d = (z - mean).double()
    cov = cov.double()
    return -0.5 * (len(d) * math.log(2 * math.pi) + torch.logdet(cov) + d @ torch.linalg.inv(cov) @ d)


def _emissions(jm, z):
    """(..., K) log N(z | mu_k, Sigma_k) with Sigma_k rebuilt from the raw parameters."""
    L = torch.diag_embed(jm.log_scales.exp())
    if jm.tril is not None:  # row i of the factor: s_i * (tril_i1, ..., tril_i,i-1, 1, 0, ...)
        L = L + jm.log_scales.exp().unsqueeze(-1) * torch.tril(jm.tril, -1)
    cov = L @ L.transpose(-1, -2)
    flat = z.reshape(-1, jm.L)
    out = torch.stack([torch.stack([_gauss_log_pdf(flat[n], jm.means[k], cov[k]) for k in range(jm.K)])
                       for n in range(len(flat))])
    return out.reshape(*z.shape[:-1], jm.K).float()


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_class_marginal_equals_brute_force_and_traceenum(covariance):
    jm, x = _tiny(covariance=covariance)
    if covariance == "full":
        assert (jm.covariances() - torch.diag_embed(jm.covariances().diagonal(dim1=-2, dim2=-1))).abs().max() > 0.1
    z = torch.randn(7, jm.L)
    w = jm.weight_logits.softmax(-1)
    emit = _emissions(jm, z)
    brute = torch.stack([sum(w[k] * emit[n, k].exp() for k in range(jm.K)).log() for n in range(7)])
    assert torch.allclose(jm.log_prior(z), brute, atol=1e-5)
    # TraceEnum_ELBO on the Pyro program (c enumerated) == the hand-written estimator (same z draw)
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    pyro_loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(jm.model, jm.guide)
    pyro.set_rng_seed(1)
    log_px, log_pz, log_q, _ = jm.elbo_terms(x)
    hand = -(log_px + log_pz - log_q).mean()
    assert torch.allclose(pyro_loss, hand, rtol=1e-5), (float(pyro_loss), float(hand))
    # a wrong marginalisation (max over classes instead of log-sum-exp) is visibly different
    pyro.set_rng_seed(1)
    loc, scale = jm.encoder(x)
    zz = loc + torch.randn_like(loc) * scale
    wrong = jm.class_log_joint(zz).max(-1).values
    assert (wrong - jm.log_prior(zz)).abs().mean() > 1e-2


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_hmm_forward_equals_brute_force_over_all_class_sequences(covariance):
    jm, x = _tiny(mm=True, K=2, chunk_len=3, covariance=covariance)
    T, K = 3, jm.K
    z = torch.randn(2, T, jm.L)
    log_w = jm.weight_logits.log_softmax(-1)
    log_A = jm.trans_logits.log_softmax(-1)
    emit = _emissions(jm, z)  # (2, T, K)
    for b in range(2):
        terms = []
        for seq in itertools.product(range(K), repeat=T + 1):  # c_{-1}, c_0, ..., c_{T-1}
            lp = log_w[seq[0]] + sum(log_A[seq[t], seq[t + 1]] + emit[b, t, seq[t + 1]] for t in range(T))
            terms.append(lp)
        brute = torch.stack(terms).logsumexp(0)
        assert torch.allclose(jm.log_prior(z)[b], brute, atol=1e-5)
        # the project's forward-backward with p(c_0) = w @ A gives the same likelihood
        log_init = (log_w.unsqueeze(-1) + log_A).logsumexp(0)
        fb = forward_backward(log_init.detach(), log_A.detach(), emit[b].detach())
        assert abs(fb.log_likelihood - float(brute.detach())) < 1e-5


def test_mm_pyro_program_equals_hand_written_loss():
    jm, x = _tiny(mm=True, N=12, chunk_len=4)
    pyro.clear_param_store()
    pyro.set_rng_seed(3)
    pyro_loss = pyro.infer.Trace_ELBO(max_plate_nesting=1).differentiable_loss(jm.model, jm.guide)
    pyro.set_rng_seed(3)
    xb = x[jm._chunk_starts().unsqueeze(-1) + torch.arange(4)]
    log_px, log_pz, log_q, _ = jm.elbo_terms(xb)
    hand = -(log_px.sum() + log_pz.sum() - log_q.sum()) / log_px.numel()
    assert torch.allclose(pyro_loss, hand, rtol=1e-5), (float(pyro_loss), float(hand))


def test_joint_log_likelihood_is_sum_of_module_terms():
    """With c and z fixed, log p(x, z, c) of the joint program = VAE term + GMM term, computed
    by the modules after ``to_modules()``."""
    jm, x = _tiny()
    jm.to_modules()
    N = x.shape[0]
    c = torch.randint(jm.K, (N,))
    z = torch.randn(N, jm.L)
    tr = poutine.trace(poutine.condition(jm.model, data={"c": c, "z": z})).get_trace()
    joint = tr.log_prob_sum() * N  # the program is scaled to a per-point mean
    vae, gmm = jm.vae, jm.gmm
    vae_term = -vae._neg_log_lik(vae.decoder_(z), x).sum()
    gmm_ll = class_log_likelihood(z.double(), gmm.means_, torch.linalg.cholesky(gmm.covariances_))
    gmm_term = (gmm.weights_.log()[c] + gmm_ll[torch.arange(N), c]).sum()
    assert torch.allclose(joint.double(), vae_term.double() + gmm_term, rtol=1e-5)


@pytest.mark.parametrize("system", ["vae_gmm", "vae_gmm_mm"])
@pytest.mark.parametrize("elbo", ["analytic", "pyro"])
def test_joint_fit_runs_and_hands_back(system, elbo, tmp_path):
    d = load_mnist_subset()
    x, y = d.as_float()[:200], d.category[:200]
    build = vae_gmm.build if system == "vae_gmm" else vae_gmm_mm.build
    pyro.set_rng_seed(0)
    s = build(x, y, epochs=1, batch_size=50, gmm_itr=2, output_root=str(tmp_path))
    jm = joint_model(s, chunk_len=25)
    losses = jm.fit(2, pretrain_epochs=1, batch_size=50, elbo=elbo, eval_every=1)
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
    assert torch.allclose(jm.means.double(), g.means_, atol=1e-5)
    assert torch.allclose(jm.covariances().double(), g.covariances_, rtol=1e-4, atol=1e-7)
    assert torch.allclose(jm.trans_logits.softmax(-1).double(), m.trans_prob_, atol=1e-5)
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
    with torch.no_grad():  # the negative ELBO at the start, mean of 10 draws (sd of one draw about 140)
        chunks = jm._batch(jm._chunk_starts().unsqueeze(-1) + torch.arange(25))
        start = float(np.mean([float(jm.loss(chunks)) for _ in range(10)]))
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
    x8 = joint_model(s, x=(np.asarray(x) * 255).round().astype(np.uint8)).x  # 8-bit data stay 8-bit
    assert x8.dtype == torch.uint8 and (x8.float() - jm.x * 255).abs().max() <= 1.0
    jm.to_modules()
    s["vae"].mode = "recog"
    s["vae"].update()
    assert torch.allclose(s["vae"].forward_msg.loc.float(), jm.encode(), atol=1e-5)


def test_gmm_start_with_the_neighbour_prior(tmp_path, monkeypatch):
    """init_clusters("gmm", gmm_prior="neighbours") runs the GMM module with nu0 = L + 100 and
    E[Sigma] = 4 v I, v = half the mean squared per-dimension gap to the 10 nearest latents."""
    import serket_pyro.joint.model as joint_mod

    made = []

    class Recording(GMM):
        def __init__(self, *a, **k):
            made.append(k)
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
    with pytest.raises(ValueError, match="gmm_prior"):
        jm.init_clusters("gmm", gmm_prior="wide")


def _brute_force_neg_elbo(jm, xb, eps):
    """Negative ELBO per data point of the joint model for one draw ``eps``, written out by hand.

    Parameters
    ----------
    jm : JointModel
        The model (its networks and class parameters are used as they are).
    xb : torch.Tensor
        ``(N, D)`` data points, or ``(B, T, D)`` chunks with a Markov model.
    eps : torch.Tensor
        Standard normal noise of the shape of the latents: ``z = loc + eps * scale``.

    Returns
    -------
    float
        ``-(log p(x | z) + log p(z) + H[q(z | x)]) / (number of points)``, with ``log p(z)`` a
        sum over every class (GMM) or every class sequence (Markov model: ``c_{-1}, c_0, ...``),
        Gaussian densities from an explicit inverse and determinant, the likelihood from the
        Bernoulli or Normal formula and the entropy ``sum_l log(s_l sqrt(2 pi e))``.
    """
    with torch.no_grad():
        loc, scale = jm.encoder(xb)
        z = loc + eps * scale
        out = jm.decoder(z)
        if jm.likelihood == "bernoulli":
            p = torch.sigmoid(out.double())
            log_px = (xb * p.log() + (1 - xb) * (1 - p).log()).sum()
        else:
            mean, s = out[0].double(), torch.as_tensor(out[1]).double()
            log_px = (-0.5 * ((xb - mean) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum()
        emit = _emissions(jm, z).double()  # (..., K)
        log_w = jm.weight_logits.log_softmax(-1).double()
        if jm.mm is None:
            log_pz = sum(math.log(sum(math.exp(log_w[k] + emit[n, k]) for k in range(jm.K)))
                         for n in range(z.shape[0]))
        else:
            log_A = jm.trans_logits.log_softmax(-1).double()
            T = z.shape[1]
            log_pz = 0.0
            for b in range(z.shape[0]):
                total = 0.0
                for seq in itertools.product(range(jm.K), repeat=T + 1):
                    lp = log_w[seq[0]] + sum(log_A[seq[t], seq[t + 1]] + emit[b, t, seq[t + 1]] for t in range(T))
                    total += math.exp(lp)
                log_pz += math.log(total)
        entropy = (scale.double().log() + 0.5 * math.log(2 * math.pi * math.e)).sum()
        return -float(log_px + log_pz + entropy) / (z.numel() // z.shape[-1])


@pytest.mark.parametrize("mm,likelihood", [(False, "bernoulli"), (False, "gaussian"), (True, "bernoulli")])
def test_joint_loss_equals_brute_force_elbo(mm, likelihood):
    """JointModel.loss (the training objective) on a tiny model with fixed networks equals the ELBO
    written out by hand for the same draw: classes (GMM: 2 points, 3 classes) or class sequences
    (Markov model: one chunk of 3 steps, 2 classes) enumerated.  A flipped entropy sign moves the
    loss by 2 H / N, a Gaussian likelihood without its log-scale term by D log s: both far
    beyond the tolerance (checked below on the same draw)."""
    torch.manual_seed(0)
    K, N = (2, 3) if mm else (3, 2)
    x = torch.rand(N, 5)
    mods = _graph(x, K, mm, latent_dim=2, hidden=4, likelihood=likelihood)
    jm = joint_model(mods, chunk_len=N, covariance="diag")
    with torch.no_grad():
        jm.means.normal_()
        jm.log_scales.uniform_(-0.5, 0.5)
        jm.weight_logits.normal_()
        if mm:
            jm.trans_logits.normal_()
        if likelihood == "gaussian":
            jm.decoder.log_scale.fill_(-0.7)  # a scale far from 1: log s matters
    xb = x.unsqueeze(0) if mm else x
    torch.manual_seed(3)
    got = float(jm.loss(xb).detach())
    torch.manual_seed(3)
    eps = torch.empty(*xb.shape[:-1], 2).normal_()
    want = _brute_force_neg_elbo(jm, xb, eps)
    assert got == pytest.approx(want, abs=1e-4), (got, want)
    # the tolerance is far below what the wrong objectives change
    with torch.no_grad():
        entropy = float((jm.encoder(xb)[1].log() + 0.5 * math.log(2 * math.pi * math.e)).sum()) / N
    assert abs(2 * entropy) > 0.1  # a flipped entropy; dropping log s moves it by 5 * 0.7 per point


def test_diagonal_start_from_modules_keeps_the_class_variances():
    """init_clusters("modules") with covariance="diag": the class Gaussians are N(mu_k, diag(S_k))
    with S_k the GMM's (correlated) covariances, i.e. scales sqrt(S_k,ll) (not the Cholesky
    diagonal, not the variances); the full start takes S_k itself."""
    jm, _ = _tiny(N=12, K=3, L=2, covariance="diag")
    v, g = jm.vae, jm.gmm
    v._build(jm.D)
    cov = torch.tensor([[[2.0, 1.2], [1.2, 1.0]], [[0.3, -0.2], [-0.2, 0.5]], [[4.0, 0.0], [0.0, 0.09]]],
                       dtype=torch.float64)
    g.means_ = torch.tensor([[1.0, -1.0], [0.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)
    g.covariances_ = cov
    g.weights_ = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    jm.init_clusters("modules")
    var = torch.stack([cov[k].diagonal() for k in range(3)])
    assert torch.allclose(jm.covariances().double(), torch.diag_embed(var), rtol=1e-5, atol=1e-7)
    assert torch.allclose(jm.log_scales.double().exp(), var.sqrt(), rtol=1e-5)
    assert torch.allclose(jm.means.double(), g.means_, atol=1e-6)
    assert torch.allclose(jm.weight_logits.softmax(-1).double(), g.weights_, atol=1e-6)
    full = joint_model([jm.vae.children[0], v, g], covariance="full")
    full.init_clusters("modules")
    assert torch.allclose(full.covariances().double(), cov, rtol=1e-5, atol=1e-6)
