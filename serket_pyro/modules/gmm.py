"""Bayesian Gaussian mixture model: the Serket ``gmm`` module.

A GMM with ``K`` classes over ``N`` points of dimension ``D``, learned by blocked Gibbs sampling,
that receives class potentials from a parent and sends class probabilities up and Gaussian
priors down to its children.  Generative model (:meth:`GMM.model`)::

    weights            ~ Dirichlet(alpha, ..., alpha)                       (K,)
    Lambda_k           ~ Wishart(nu0, Psi0^-1)          k = 1..K           precision (D, D)
    mu_k | Lambda_k    ~ Normal(m0, (kappa0 Lambda_k)^-1)                   (D,)
    z_n                ~ Categorical(weights)           n = 1..N           the class site "z"
    factor  log b[n, z_n]                               the parent's backward message (bias)
    x_n | z_n          ~ Normal(mu_{z_n}, Sigma_{z_n} = Lambda_{z_n}^-1)

i.e. ``(mu_k, Sigma_k) ~ NIW(m0, kappa0, nu0, Psi0)``.  The parent's message is a potential on
``z_n`` without per-point renormalisation, the product the original used; uniform without a parent.

Inference (:meth:`GMM.update`) is an uncollapsed blocked Gibbs sampler vectorised over points
[2]_: ``z`` for all points by exact enumeration over the K classes, then ``weights`` from their
Dirichlet and all ``(mu_k, Sigma_k)`` from their NIW conditionals at once.  The first update runs
``n_init`` chains from k-means++ starts (:func:`serket_pyro.ops.kmeans`) and keeps the most
probable; later updates warm-start from the last draw.  Reported parameters are Rao-Blackwellised
posterior means over the last ``n_average`` sweeps; every message follows from them in closed
form.  The README's design notes give the prior defaults, the messages and the outputs.

References
----------
.. [1] T. Nakamura, T. Nagai, T. Taniguchi, "SERKET: An architecture for connecting stochastic
   models to realize a large-scale cognitive model", Frontiers in Neurorobotics 12:25, 2018.
.. [2] J. Diebolt, C. P. Robert, "Estimation of finite mixture distributions through Bayesian
   sampling", JRSS-B 56, 1994.
.. [3] K. P. Murphy, "Conjugate Bayesian analysis of the Gaussian distribution", 2007, section 9.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from .. import distributed as _dist
from ..messages import ClassProbs, GaussianMessage, PointMessage
from ..module import Module
from ..original_api import GMM_API
from ..validation import check_category, check_device, check_memory, check_positive_float, check_positive_int, check_real

__all__ = ["GMM", "NIWPrior", "class_log_likelihood", "sample_inverse_wishart"]

_LOG_2PI = math.log(2 * math.pi)
#: default covariance prior: weight in pseudo-observations (nu0 - D - 1) and E[Sigma_k] / var(x)
_DEFAULT_PRIOR_WEIGHT = 20
_DEFAULT_COV_FRACTION = 0.3
#: largest spread ``max |x - m0|`` of the data (the covariances are its square: 1e200 overflows
#: float64) and, when the data are not constant, the smallest; rescale data outside the range
_MAX_SPREAD = 1e100
_MIN_SPREAD = 1e-100
#: per-dimension variances are floored at this fraction of the largest one (for a constant column;
#: relative, so that the floor scales with the data, and small enough never to touch real columns)
_VAR_FLOOR = 1e-24


# ----------------------------------------------------------------------------------- kernels
class NIWPrior(NamedTuple):
    """Normal-inverse-Wishart hyperparameters.

    Attributes:
        loc: ``(D,)`` prior mean m0.
        kappa: ``()`` pseudo-count of the mean, kappa0 > 0.
        df: ``()`` degrees of freedom nu0 > D + 1 (so that ``E[Sigma]`` exists).
        scale: ``(D, D)`` inverse-Wishart scale matrix Psi0 (symmetric positive definite).
    """

    loc: torch.Tensor
    kappa: torch.Tensor
    df: torch.Tensor
    scale: torch.Tensor


class _Stats(NamedTuple):
    counts: torch.Tensor  # (..., K)
    sums: torch.Tensor  # (..., K, D)
    outer: torch.Tensor  # (..., K, D, D)


def class_log_likelihood(x: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """``log N(x_n | mu_k, Sigma_k)`` for every point and class.

    Args:
        x: ``(N, D)`` points.
        means: ``(..., K, D)`` class means.
        scale_tril: ``(..., K, D, D)`` lower Cholesky factors of the class covariances.

    Returns:
        ``(..., N, K)`` log-densities (nats).
    """
    N, D = x.shape
    K = means.shape[-2]
    batch = means.shape[:-2]
    eye = torch.eye(D, dtype=scale_tril.dtype, device=scale_tril.device)
    inv = torch.linalg.solve_triangular(scale_tril, eye.expand_as(scale_tril), upper=False)  # L_k^-1
    b = torch.matmul(inv, means.unsqueeze(-1)).reshape(*batch, 1, K * D)  # L_k^-1 mu_k
    # all classes in one GEMM: (N, D) @ (..., D, K*D) -> (..., N, K*D) holding L_k^-1 x_n
    w = inv.transpose(-1, -2).transpose(-3, -2).reshape(*batch, D, K * D)
    y = torch.matmul(x, w).sub_(b).square_()  # in place: one (..., N, K*D) buffer
    maha = y.view(*batch, N, K, D).sum(-1)  # (..., N, K)
    half_logdet = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (..., K)
    return -0.5 * (D * _LOG_2PI + maha) - half_logdet.unsqueeze(-2)


def sample_inverse_wishart(df: torch.Tensor, scale: torch.Tensor):
    """Draw ``Sigma ~ InverseWishart(df, scale)`` by the Bartlett decomposition.

    ``Sigma^-1 ~ Wishart(df, scale^-1)``; with ``scale = C C^T`` (Cholesky) and ``A`` lower
    triangular, ``A_ii^2 ~ chi2(df - i)`` (i = 0..D-1), ``A_ij ~ N(0, 1)`` below the diagonal,
    ``Sigma^-1 = C^-T A A^T C^-1`` (Bartlett, 1933; Anderson, "An Introduction to Multivariate
    Statistical Analysis", 3rd ed., theorem 7.2.1), so ``Sigma = (C A^-T)(C A^-T)^T``.

    Args:
        df: ``(...)`` degrees of freedom > D - 1.
        scale: ``(..., D, D)`` symmetric positive definite.

    Returns:
        ``(Sigma, scale_tril)``: ``(..., D, D)`` the draw and its lower Cholesky factor.
    """
    D = scale.shape[-1]
    C = torch.linalg.cholesky(scale)
    shift = torch.arange(D, dtype=scale.dtype, device=scale.device)
    diag = torch.distributions.Chi2(df.unsqueeze(-1) - shift).sample().sqrt()  # (..., D)
    A = torch.randn(scale.shape, dtype=scale.dtype, device=scale.device).tril(-1) + torch.diag_embed(diag)
    eye = torch.eye(D, dtype=scale.dtype, device=scale.device).expand_as(scale)
    A_inv = torch.linalg.solve_triangular(A, eye, upper=False)
    B = torch.matmul(C, A_inv.transpose(-1, -2))
    sigma = torch.matmul(B, B.transpose(-1, -2))
    sigma = 0.5 * (sigma + sigma.transpose(-1, -2))
    return sigma, torch.linalg.cholesky(sigma)


def _suff_stats(x: torch.Tensor, xx: torch.Tensor, z: torch.Tensor, K: int) -> _Stats:
    """Per-class counts, sums and sums of outer products of ``x: (N, D)`` (``xx: (N, D*D)``) for
    assignments ``z: (..., N)``."""
    D = x.shape[-1]
    onehot = torch.nn.functional.one_hot(z, K).to(x.dtype)  # (..., N, K)
    counts = onehot.sum(-2)
    if z.dim() == 1:  # scatter is faster than a one-hot product for a single chain
        sums = x.new_zeros(K, D).index_add_(0, z, x)
        outer = x.new_zeros(K, D * D).index_add_(0, z, xx).view(K, D, D)
    else:
        oh_t = onehot.transpose(-1, -2)
        sums = torch.matmul(oh_t, x)
        outer = torch.matmul(oh_t, xx).view(*z.shape[:-1], K, D, D)
    if _dist.is_sharded():  # data-parallel: the statistics of every rank's shard, summed
        counts, sums, outer = _dist.all_reduce_tensors([counts, sums, outer])
    return _Stats(counts, sums, outer)


def _niw_posterior(prior: NIWPrior, stats: _Stats):
    """NIW posterior for data already centred at ``prior.loc`` (so the prior mean is 0).

    Returns ``(m_N (..., K, D), kappa_N (..., K), nu_N (..., K), Psi_N (..., K, D, D))`` with
    ``m_N`` relative to ``prior.loc``.
    """
    kappa_n = prior.kappa + stats.counts
    nu_n = prior.df + stats.counts
    m_n = stats.sums / kappa_n.unsqueeze(-1)
    psi_n = prior.scale + stats.outer - stats.sums.unsqueeze(-1) * m_n.unsqueeze(-2)
    psi_n = 0.5 * (psi_n + psi_n.transpose(-1, -2))
    return m_n, kappa_n, nu_n, psi_n


def _sample_weights(alpha: float, counts: torch.Tensor) -> torch.Tensor:
    """``weights | z ~ Dirichlet(alpha + counts)``, ``(..., K)``."""
    return torch.distributions.Dirichlet(alpha + counts).sample()


def _sample_params(prior: NIWPrior, alpha: float, stats: _Stats):
    """One draw of ``(weights, means, covariances, scale_tril) | z`` (means centred at prior.loc)."""
    m_n, kappa_n, nu_n, psi_n = _niw_posterior(prior, stats)
    sigma, tril = sample_inverse_wishart(nu_n, psi_n)
    eps = torch.randn_like(m_n).unsqueeze(-1)
    means = m_n + torch.matmul(tril, eps).squeeze(-1) / kappa_n.sqrt().unsqueeze(-1)
    weights = _sample_weights(alpha, stats.counts)
    return weights, means, sigma, tril


def _posterior_means(prior: NIWPrior, alpha: float, stats: _Stats):
    """``E[weights, mu, Sigma | z, x]`` (means centred at prior.loc)."""
    m_n, kappa_n, nu_n, psi_n = _niw_posterior(prior, stats)
    D = psi_n.shape[-1]
    K = stats.counts.shape[-1]
    weights = (alpha + stats.counts) / (stats.counts.sum(-1, keepdim=True) + K * alpha)
    cov = psi_n / (nu_n - D - 1).unsqueeze(-1).unsqueeze(-1)
    return weights, m_n, cov


def _log_collapsed_joint(prior: NIWPrior, alpha: float, stats: _Stats, z: torch.Tensor,
                         bias_log_probs=None) -> float:
    """``log p(x, z)`` (+ ``sum_n log bias[n, z_n]``) with weights, means and covariances integrated
    out: Dirichlet-multinomial times the NIW marginal likelihood of every class (Murphy 2007,
    "Conjugate Bayesian analysis of the Gaussian distribution", eq. 266).  Compares chains."""
    m_n, kappa_n, nu_n, psi_n = _niw_posterior(prior, stats)
    D = psi_n.shape[-1]
    K = stats.counts.shape[-1]
    n = stats.counts
    nu0 = torch.as_tensor(prior.df, dtype=n.dtype)
    kappa0 = torch.as_tensor(prior.kappa, dtype=n.dtype)
    psi0 = torch.as_tensor(prior.scale, dtype=n.dtype).expand(D, D)
    lml = (-0.5 * n * D * math.log(math.pi) + torch.mvlgamma(nu_n / 2, D) - torch.mvlgamma(nu0 / 2, D)
           + 0.5 * nu0 * torch.logdet(psi0) - 0.5 * nu_n * torch.logdet(psi_n)
           + 0.5 * D * (torch.log(kappa0) - torch.log(kappa_n)))
    ldm = (math.lgamma(K * alpha) - torch.lgamma(n.sum() + K * alpha)
           + (torch.lgamma(n + alpha) - math.lgamma(alpha)).sum())
    total = lml.sum() + ldm
    if bias_log_probs is not None:
        total = total + _dist.all_reduce_scalar(float(bias_log_probs.gather(-1, z.unsqueeze(-1)).sum()))
    return float(total)


def _log_weights(weights: torch.Tensor) -> torch.Tensor:
    return weights.clamp_min(torch.finfo(weights.dtype).tiny).log()


def _sample_assignments(x, weights, means, scale_tril, bias_log_probs=None) -> torch.Tensor:
    """``z_n | params, bias`` for all points at once: ``(..., N)``."""
    logits = class_log_likelihood(x, means, scale_tril) + _log_weights(weights).unsqueeze(-2)
    if bias_log_probs is not None:
        logits = logits + bias_log_probs
    # inverse-CDF sampling (3x faster than Categorical(...).sample() here): z = #{k: F_k < u} with
    # u ~ U(0, 1]; a class of probability 0 can never be drawn.
    cdf = torch.softmax(logits, -1).cumsum(-1)
    with _dist.local_rng():  # the shard's own stream (a sharded fit)
        u = (1.0 - torch.rand(logits.shape[:-1], dtype=logits.dtype, device=logits.device)) * cdf[..., -1]
    return (cdf < u.unsqueeze(-1)).sum(-1).clamp_max(logits.shape[-1] - 1)


def _gibbs_sweep(x, xx, weights, means, scale_tril, prior: NIWPrior, alpha: float, bias_log_probs=None):
    """One blocked Gibbs sweep on centred data ``x: (N, D)`` (``xx: (N, D*D)`` outer products).

    Parameters may carry leading batch dimensions (independent chains).  Returns
    ``(z, stats, weights, means, covariances, scale_tril)`` after the sweep.
    """
    K = weights.shape[-1]
    z = _sample_assignments(x, weights, means, scale_tril, bias_log_probs)
    stats = _suff_stats(x, xx, z, K)
    weights, means, sigma, tril = _sample_params(prior, alpha, stats)
    return z, stats, weights, means, sigma, tril


def _kmeanspp(x: torch.Tensor, K: int, n_init: int = 10, n_lloyd: int = 20) -> torch.Tensor:
    """k-means assignments ``(N,)`` of ``x``: :func:`serket_pyro.ops.kmeans` with greedy k-means++
    seeding, at most ``n_lloyd`` Lloyd iterations, best of ``n_init`` restarts.

    The generator is seeded from torch's global RNG (one draw), so :func:`serket_pyro.set_seed`
    fixes the result.  Scale-free: the points are rescaled by a power of two first."""
    from ..ops.kmeans import kmeans

    if _dist.is_sharded():
        return _kmeanspp_sharded(x, K, n_init, n_lloyd)
    return kmeans(x, K, n_init=n_init, max_iter=n_lloyd).labels


#: points per rank that a sharded fit's k-means start is computed on
_SHARDED_KMEANS_POINTS = 2000


def _kmeanspp_sharded(x: torch.Tensor, K: int, n_init: int, n_lloyd: int) -> torch.Tensor:
    """The k-means start of a sharded fit: k-means on a random sample of every rank's shard
    (drawn from the rank's own stream, gathered, so identical on every rank; k-means with the
    global stream), then each local point assigned to its nearest centre.  (An evenly spaced
    sample aliases with ordered data: every second point of a cyclic 0..9 sequence holds only the
    even digits.)"""
    from ..ops.kmeans import kmeans

    if x.shape[0] > _SHARDED_KMEANS_POINTS:
        with _dist.local_rng():
            pick = torch.randperm(x.shape[0], device=x.device)[:_SHARDED_KMEANS_POINTS].sort().values
        x_s = x.index_select(0, pick)
    else:
        x_s = x
    sample = _dist.gather_rows(x_s.contiguous())
    labels = kmeans(sample, K, n_init=n_init, max_iter=n_lloyd).labels
    centres = x.new_zeros(K, x.shape[1]).index_add_(0, labels, sample)
    centres /= torch.bincount(labels, minlength=K).clamp_min(1).unsqueeze(1).to(x.dtype)
    return torch.cdist(x, centres).argmin(1)


def _class_start(x: torch.Tensor, K: int):
    """The joint program's class start from the rows ``x`` ``(n, D)``: a k-means start (the sharded
    one in a sharded fit, so every rank's classes mean the same), then the classes' counts, means
    and scatter summed over the ranks (no-ops in one process).  Returns ``(weights (K,), means
    (K, D), covariances (K, D, D))``, the same on every rank."""
    D = x.shape[1]
    lab = _kmeanspp_sharded(x, K, 10, 20) if _dist.is_sharded() else _kmeanspp(x, K)
    counts, sums, xsum = _dist.all_reduce_tensors([torch.bincount(lab, minlength=K).double(),
                                                   x.new_zeros(K, D).index_add_(0, lab, x), x.sum(0)])
    n = float(counts.sum())
    mean_all = xsum / n
    means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], mean_all)
    dev, dev_all = x - means[lab], x - mean_all
    scatter, total = _dist.all_reduce_tensors([
        x.new_zeros(K, D, D).index_add_(0, lab, dev.unsqueeze(-1) * dev.unsqueeze(-2)), dev_all.T @ dev_all])
    total = total / (n - 1) if n > 1 else torch.eye(D, dtype=x.dtype)
    cov = torch.where(counts[:, None, None] > D, scatter / counts.clamp_min(1)[:, None, None], total)
    cov = cov + 1e-4 * float(total.diagonal().mean().clamp_min(1e-12)) * torch.eye(D, dtype=x.dtype)
    return (counts + 1) / (n + K), means, cov


# ------------------------------------------------------------------------------------ module
class GMM(Module):
    """Bayesian Gaussian mixture with K classes, learned by blocked Gibbs sampling.

    Parameters
    ----------
    K : int
        Number of classes (integer >= 1).  Learning needs ``K <= N`` (``update()`` refuses more classes
        than data points, before any file is written).
    itr : int, default 100
        Gibbs sweeps per :meth:`update` (>= 1; original 100).
    category : array_like of int, shape (N,), optional
        ``(N,)`` true labels, used only to score (``acc_learn.txt``, ``metrics_``).
    input : {'mean', 'sample'}, default 'mean'
        For a child sending a :class:`~serket_pyro.messages.GaussianMessage` (a VAE's q(z | x)):
        ``"mean"`` clusters its ``loc``; ``"sample"`` one draw ``loc + scale * eps`` per update.  Point
        messages are used as they are.
    alpha : float, default 1.0
        Symmetric Dirichlet pseudo-count on the class weights (> 0).
    mean_prior : array_like, shape (D,), optional
        ``(D,)`` NIW prior mean m0; ``None``: the data mean (original).
    kappa0 : float, default 1.0
        NIW mean pseudo-count (original 1).
    nu0 : float, optional
        NIW degrees of freedom, ``> D + 1``; ``None``: ``D + 21`` (original: ``D + 2``).
    psi0 : float or array_like, optional
        NIW inverse-Wishart scale Psi0: a number (times the identity), a ``(D,)`` diagonal or a
        ``(D, D)`` SPD matrix; ``None``: ``0.3 (nu0 - D - 1)``, so that ``E[Sigma_k] = 0.3 I`` before
        ``prior_scale`` (original: 0.1 with ``"absolute"``).
    prior_scale : {'data', 'absolute'}, default 'data'
        ``"data"`` (default: Psi0 scaled by the per-dimension data variance, ``S^1/2 Psi0 S^1/2``,
        ``S = diag(var x)``; the classes do not change when the data are rescaled, e.g. the HMM toy from
        1e-12 to 1e12) or ``"absolute"`` (Psi0 as given, in the data's units, original; not invariant:
        data at 1e-6 fall into one class).
    backward : {'soft', 'original'}, default 'soft'
        ``"soft"`` (moment-matched mixture per point) or ``"original"`` (hard-assigned class mean, scale
        1); see the module docstring.
    init : {'kmeans++', 'random'}, default 'kmeans++'
        First update's start, ``"kmeans++"`` or ``"random"`` (uniform assignment, original).
    n_average : int, default 10
        Number of final sweeps whose Rao-Blackwellised parameter estimates are averaged (clipped to
        ``itr``; 1: last sweep only).
    n_init : int, default 4
        At a cold start (the first update), the number of chains started from independent k-means++ (or
        random) initialisations; the chain whose final assignment has the highest collapsed posterior
        density (:func:`_log_collapsed_joint`) is kept.  Guards against a chain stuck with two clusters
        merged and another split (costs ``n_init`` times the first update's sweeps; later updates run
        one warm chain).  Every chain's score is kept in ``chain_log_joint_`` (list, one float per
        chain) and ``chain_log_joint_learn.txt``.
    message_init : bool, default True
        With a parent's message, also run a chain started from the message's most probable classes and
        keep the chain whose last assignment has the higher collapsed posterior density
        (:func:`_log_collapsed_joint`); lets a confident parent (a Markov chain locked onto the data's
        order) move whole classes, which single-point Gibbs moves cannot.
    screen_sweeps : int, default 0
        At a cold start with ``n_init > 1``, every chain runs this many sweeps and only the one of
        highest collapsed log joint runs on to ``itr`` (the others keep their score at this sweep in
        ``chain_log_joint_``; the kept chain is still the one of highest score).  Why: chains that
        start in different basins stay apart by far more than a chain moves later, and a few sweeps
        usually show it; 40 with ``kmeans_restarts=1`` is the fast setting of the README section
        "Speed against the peers".  0 (the default, or ``itr - screen_sweeps`` below ``n_average``):
        every chain runs ``itr`` sweeps.
    kmeans_restarts : int, default 10
        k-means++ restarts (best inertia) behind each cold chain's start.  The best of several
        restarts tends to give every chain the same k-means partition, hence the same basin; 1 gives
        the ``n_init`` chains different starts (a wider search, which is not always a more accurate
        one: see the README).
    device : str or torch.device, optional
        Torch device (default CPU).  Computation is in float64.
    output_root : str or os.PathLike, optional
        Folder for this module's output folder (default the global output root).
    mode : {'learn', 'recog'}, default 'learn'
        ``"learn"`` (sample; files ``*_learn``) or ``"recog"`` (parameters frozen, classes by
        enumeration only; files ``*_recog``; needs learned or loaded parameters).
    name : str, default 'gmm'
        Short name (``module%03d_<name>``).

    Notes
    -----
    Learned state: ``weights_ (K,)``, ``means_ (K, D)``, ``covariances_ (K, D, D)`` (posterior
    means, see the module docstring), ``assignments_ (N,)`` (classes of the last sweep),
    ``last_sample_`` (dict ``weights``, ``means``, ``covariances``: the chain's last draw, where the
    next update starts; without it, e.g. after loading only the three estimates, the next update
    starts from the estimates).

    Files per update (``writer()``): ``Pdz_learn.txt`` (N x K, full posterior),
    ``class_learn.txt``, ``acc_learn.txt`` and ``metrics_learn.json`` (with ``category``),
    ``mu_learn.txt`` (N x D, loc of the backward message), ``means_learn.txt`` (K x D),
    ``weights_learn.txt`` (K,), ``covariances_learn.npz`` (array ``covariances``, K x D x D).
    """

    input_kinds = (PointMessage, GaussianMessage)
    _fitted = ("weights_", "means_", "covariances_", "assignments_", "last_sample_")
    _row_state = ("assignments_",)
    test_args = {"K": 2, "itr": 3, "n_init": 1}
    _original_api = GMM_API  # also GMM(K, itr, name, category, load_dir | mode), the original's order
    _model_params = ("K",)

    def __init__(self, K, itr=100, category=None, *, input: str = "mean", alpha: float = 1.0,
                 mean_prior=None, kappa0: float = 1.0, nu0: float | None = None, psi0=None,
                 prior_scale: str = "data", backward: str = "soft", init: str = "kmeans++",
                 n_average: int = 10, n_init: int = 4, message_init: bool = True, device=None,
                 output_root=None, mode: str = "learn", name: str = "gmm", screen_sweeps: int = 0,
                 kmeans_restarts: int = 10):
        super().__init__(name, output_root=output_root)
        self.K = check_positive_int(K, "K (number of classes)", self.name)
        self.itr = check_positive_int(itr, "itr", self.name)
        self.category = check_category(category, None, self.name)
        self.input = self._check_choice(input, "input", ("mean", "sample"))
        self.alpha = check_positive_float(alpha, "alpha", self.name)
        self.mean_prior = None if mean_prior is None else self._check_array(mean_prior, "mean_prior", 1)
        self.kappa0 = check_positive_float(kappa0, "kappa0", self.name)
        self.nu0 = None if nu0 is None else check_positive_float(nu0, "nu0", self.name)
        if psi0 is None:
            self.psi0 = None
        elif isinstance(psi0, (int, float)) and not isinstance(psi0, bool):
            self.psi0 = check_positive_float(psi0, "psi0", self.name)
        else:
            self.psi0 = self._check_array(psi0, "psi0", None)
        self.prior_scale = self._check_choice(prior_scale, "prior_scale", ("absolute", "data"))
        self.backward = self._check_choice(backward, "backward", ("soft", "original"))
        self.init = self._check_choice(init, "init", ("kmeans++", "random"))
        self.n_average = check_positive_int(n_average, "n_average", self.name)
        self.n_init = check_positive_int(n_init, "n_init", self.name)
        self.message_init = bool(message_init)
        self.screen_sweeps = check_positive_int(screen_sweeps, "screen_sweeps", self.name, minimum=0)
        self.kmeans_restarts = check_positive_int(kmeans_restarts, "kmeans_restarts", self.name)
        self.device = check_device(device)
        self.mode = mode
        self.dtype = torch.float64

        self.weights_: torch.Tensor | None = None
        self.means_: torch.Tensor | None = None
        self.covariances_: torch.Tensor | None = None
        self.assignments_: torch.Tensor | None = None
        self.last_sample_: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ checks
    def _check_array(self, value, what, ndim):
        check_real(value, what, self.name)
        try:
            a = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: {what} must be numeric, got {value!r}") from None
        if (ndim is not None and a.ndim != ndim) or a.ndim not in (1, 2) or a.size == 0:
            raise ValueError(f"{self.name}: {what} has an invalid shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: {what} contains NaN or infinite values")
        return a

    def _tensor(self, a):
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def _read_inputs(self):
        """Validated children's data, concatenated: ``(x (N, D), splits)``."""
        parts, splits = [], []
        for child, msg in zip(self.children, self.get_observations()):
            if isinstance(msg, GaussianMessage):
                loc, scale = self._tensor(msg.loc), self._tensor(msg.scale)
                with _dist.local_rng():
                    v = loc if self.input == "mean" else loc + scale * torch.randn_like(loc)
            else:  # a point message (input_kinds)
                v = self._tensor(msg.value)
            if v.dim() != 2:
                raise ValueError(f"{self.name}: the message from {child.name} must be 2-D (N, D), "
                                 f"got shape {tuple(v.shape)}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{self.name}: the message from {child.name} contains NaN or infinite values")
            parts.append(v)
            splits.append(v.shape[1])
        N = {p.shape[0] for p in parts}
        if len(N) != 1:
            raise ValueError(f"{self.name}: children send different numbers of data points {sorted(N)}")
        return torch.cat(parts, dim=1), splits

    def _read_backward(self, inputs):
        """Parent message as ``(N, K)`` normalised log-probabilities, or None."""
        msg = self.get_class_backward_msg(inputs[0].shape[0], self.K)
        return None if msg is None else self._tensor(msg.log_probs)

    def _check_sizes(self, N: int, D: int) -> None:
        """Refuse ``K > N`` and sizes whose arrays would not fit in memory (learning)."""
        if self.K > N:
            raise ValueError(f"{self.name}: K={self.K} classes for N={N} data points: learning needs K <= N")
        check_memory(N * D * D + N * self.K * D + self.K * D * D,
                     f"N x D^2 = {N} x {D}^2 outer products and N x K x D = {N} x {self.K} x {D} distances",
                     self.name)

    def _prior(self, x: torch.Tensor) -> NIWPrior:
        """NIW hyperparameters for data ``x (N, D)`` from this module's options.

        Under ``prior_scale="data"`` Psi0 is scaled by the per-dimension data variance, floored at
        ``_VAR_FLOOR`` times the largest one (not at an absolute value), so that rescaling the
        data by any factor rescales the prior with them and leaves the classes unchanged.
        Raises ``ValueError`` for data whose spread around m0 lies outside ``_MIN_SPREAD ..
        _MAX_SPREAD`` (their covariances over- or underflow float64).
        """
        N, D = x.shape
        if self.mean_prior is None:
            loc = _dist.global_mean(x)
        else:
            if self.mean_prior.shape != (D,):
                raise ValueError(f"{self.name}: mean_prior has shape {self.mean_prior.shape}, the data have D={D}")
            loc = self._tensor(self.mean_prior)
        spread = float((x - loc).abs().max())
        if not (spread <= _MAX_SPREAD and (spread == 0 or spread >= _MIN_SPREAD)):
            raise ValueError(f"{self.name}: the data spread {spread:.3g} around the prior mean lies outside "
                             f"{_MIN_SPREAD:g} .. {_MAX_SPREAD:g}: the covariances (its square) would over- or "
                             "underflow float64; rescale the data")
        nu0 = float(D + 1 + _DEFAULT_PRIOR_WEIGHT) if self.nu0 is None else self.nu0
        if nu0 <= D + 1:
            raise ValueError(f"{self.name}: nu0 must be > D + 1 = {D + 1} (so that E[Sigma] exists), got {nu0}")
        if self.psi0 is None or isinstance(self.psi0, float):
            s0 = _DEFAULT_COV_FRACTION * (nu0 - D - 1) if self.psi0 is None else self.psi0
            psi = s0 * torch.eye(D, dtype=self.dtype, device=self.device)
        else:
            p = self._tensor(self.psi0)
            if p.dim() == 1:
                if p.shape != (D,) or bool((p <= 0).any()):
                    raise ValueError(f"{self.name}: psi0 as a diagonal must be ({D},) positive, got {tuple(p.shape)}")
                psi = torch.diag(p)
            else:
                if p.shape != (D, D) or not torch.allclose(p, p.T) or torch.linalg.cholesky_ex(p).info != 0:
                    raise ValueError(f"{self.name}: psi0 must be a symmetric positive definite ({D}, {D}) matrix")
                psi = p
        if self.prior_scale == "data":
            if N > 1:
                if _dist.is_sharded():  # every rank's points
                    var = _dist.global_mean((x - _dist.global_mean(x)).square())
                else:
                    var = x.var(0, unbiased=False)
                top = float(var.max())
                s = var.clamp_min(top * _VAR_FLOOR).sqrt() if top > 0 else torch.full_like(var, 1e-6)  # constant
            else:
                s = torch.ones(D, dtype=self.dtype, device=self.device)
            psi = s.unsqueeze(-1) * psi * s
        return NIWPrior(loc, torch.tensor(self.kappa0, dtype=self.dtype, device=self.device),
                        torch.tensor(nu0, dtype=self.dtype, device=self.device), psi)

    # --------------------------------------------------------------- the model
    def model(self, x: torch.Tensor, bias_log_probs: torch.Tensor | None = None, prior: NIWPrior | None = None):
        """The generative model as a Pyro submodel (see the module docstring).

        Sites: ``weights`` (K,), ``precisions`` (K, D, D) and ``means`` (K, D) in plate
        ``classes``; ``z`` (the class, shared with neighbouring modules), factor ``bias`` and
        observed ``x`` in plate ``data``.  Wrap in ``pyro.contrib.autoname.scope`` to prefix the
        names when composing several modules.  Enumeration-friendly (``Vindex``).

        Args:
            x: ``(N, D)`` data.
            bias_log_probs: ``(N, K)`` parent message (log), or None (uniform).
            prior: NIW hyperparameters; default from ``x`` and this module's options.
        """
        x = self._tensor(x)
        N, D = x.shape
        prior = self._prior(x) if prior is None else prior
        weights = pyro.sample("weights", dist.Dirichlet(torch.full((self.K,), self.alpha, dtype=x.dtype,
                                                                   device=x.device)))
        with pyro.plate("classes", self.K):
            precisions = pyro.sample("precisions", dist.Wishart(prior.df, precision_matrix=prior.scale))
            means = pyro.sample("means", dist.MultivariateNormal(prior.loc, precision_matrix=prior.kappa * precisions))
        with pyro.plate("data", N):
            z = pyro.sample("z", self.joint_prior({"weights": weights}))
            if bias_log_probs is not None:
                pyro.factor("bias", Vindex(bias_log_probs)[torch.arange(N, device=x.device), z])
            pyro.sample("x", dist.MultivariateNormal(Vindex(means)[..., z, :],
                                                     precision_matrix=Vindex(precisions)[..., z, :, :]), obs=x)
        return z

    # ------------------------------------------------------------ joint hooks
    joint_role = "class"

    def joint_size(self) -> int:
        """``K`` classes."""
        return self.K

    def joint_params(self, child_sizes, child_values, parent_states) -> dict:
        """``weights (K,)`` (without a parent), ``means (K, D)``, ``scale_tril (K, D, D)``: the
        fitted estimates when there are (message passing as pretraining), else from k-means++ on
        the child's initial values, else random means and unit covariances."""
        from torch.distributions import constraints

        if len(child_sizes) != 1:
            raise ValueError(f"{self.name}: the joint program needs exactly one child of a GMM, "
                             f"got {len(child_sizes)}")
        if getattr(self.children[0], "joint_role", None) not in (None, "latent"):
            raise ValueError(f"{self.name}: in the joint program a GMM's child must be an observation or a "
                             f"module with a continuous site, got {self.children[0].name} (a Gaussian has no density "
                             "on a class; see 'Graphs refused' in serket_pyro.joint.compiler)")
        K, D = self.K, int(child_sizes[0])
        x = child_values[0]
        if self.means_ is not None and tuple(self.means_.shape) == (K, D):
            w, means, cov = self.weights_.double().cpu(), self.means_.double().cpu(), self.covariances_.double().cpu()
        elif x is not None and _dist.global_rows(x.shape[0]) >= K:
            w, means, cov = _class_start(torch.as_tensor(x, dtype=torch.float64).cpu(), K)
        else:
            means = torch.randn(K, D, dtype=torch.float64)
            cov = torch.eye(D, dtype=torch.float64).expand(K, D, D)
            w = torch.full((K,), 1.0 / K, dtype=torch.float64)
        out = {"means": (means, constraints.real),
               "scale_tril": (torch.linalg.cholesky(cov), constraints.lower_cholesky)}
        if parent_states is None:
            out["weights"] = (w / w.sum(), constraints.simplex)
        return out

    def joint_prior(self, params):
        """``Categorical(weights)``: the class without a parent (the site ``z`` of :meth:`model`)."""
        return dist.Categorical(params["weights"])

    def joint_child_dist(self, params, value, i: int):
        """``MultivariateNormal(means[c], scale_tril[c])`` on the child's site given classes ``c``."""
        return dist.MultivariateNormal(Vindex(params["means"])[..., value, :],
                                       scale_tril=Vindex(params["scale_tril"])[..., value, :, :])

    def joint_observed(self, i: int, data: torch.Tensor) -> torch.Tensor:
        return data.to(torch.float64)

    def joint_to_module(self, params, posterior) -> None:
        """``weights_`` (the parameter, or the classes' posterior frequencies under a parent),
        ``means_``, ``covariances_``, ``assignments_`` (most probable classes)."""
        f = dict(device=self.device, dtype=self.dtype)
        tril = params["scale_tril"].detach().to(**f)
        self.means_ = params["means"].detach().to(**f).clone()
        self.covariances_ = tril @ tril.transpose(-1, -2)
        if "weights" in params:
            self.weights_ = params["weights"].detach().to(**f).clone()
        else:
            self.weights_ = _dist.global_mean(posterior.exp()).to(**f)  # every rank's points
        self.assignments_ = posterior.argmax(-1).to(self.device)
        self.last_sample_ = None

    # -------------------------------------------------------------- inference
    def class_log_posterior(self, x, bias_log_probs=None) -> torch.Tensor:
        """Exact ``log p(z_n = k | x_n, params, bias)`` with the learned parameters, ``(N, K)``:
        ``log w_k + log N(x_n | mu_k, Sigma_k) + log b_nk - logsumexp_k``."""
        self._require_params()
        x = self._tensor(x)
        tril = torch.linalg.cholesky(self.covariances_)
        lp = class_log_likelihood(x, self.means_, tril) + _log_weights(self.weights_)
        if bias_log_probs is not None:
            lp = lp + self._tensor(bias_log_probs)
        return lp - lp.logsumexp(-1, keepdim=True)

    def _require_params(self):
        if self.weights_ is None:
            raise ValueError(f"{self.name} has no parameters yet: run update() in learn mode or load_state_dict()")

    def _warm_state(self, D: int, prior):
        """Start of a warm chain: the previous update's last draw, else the loaded estimates;
        ``None`` when there is neither (of this shape): a cold start."""
        for p in (self.last_sample_, None if self.weights_ is None else
                  {"weights": self.weights_, "means": self.means_, "covariances": self.covariances_}):
            if p is not None and p["means"].shape == (self.K, D):
                return p["weights"], p["means"] - prior.loc, torch.linalg.cholesky(p["covariances"])
        return None

    def _cold_state(self, xc, xx, prior):
        """Start of a cold chain: k-means++ (or random) assignments and one parameter draw."""
        N = xc.shape[0]
        if self.init == "kmeans++":
            z = _kmeanspp(xc, self.K, n_init=self.kmeans_restarts)
        else:
            with _dist.local_rng():
                z = torch.randint(self.K, (N,), device=self.device)
        weights, means, _, tril = _sample_params(prior, self.alpha, _suff_stats(xc, xx, z, self.K))
        return weights, means, tril

    def _run_chain(self, xc, xx, state, prior, bias, sweeps=None) -> dict:
        """``sweeps`` (default ``itr``) Gibbs sweeps from ``state = (weights, means, scale_tril)``.
        Returns averaged estimates, the last sample and the collapsed log joint of the last
        assignment."""
        weights, means, tril = state
        D = xc.shape[1]
        sweeps = self.itr if sweeps is None else sweeps
        n_avg = min(self.n_average, sweeps)
        acc = [torch.zeros_like(weights), torch.zeros_like(means),
               torch.zeros(self.K, D, D, dtype=xc.dtype, device=xc.device)]
        for s in range(sweeps):
            z, stats, weights, means, sigma, tril = _gibbs_sweep(xc, xx, weights, means, tril, prior,
                                                                 self.alpha, bias)
            if s >= sweeps - n_avg:
                for a, v in zip(acc, _posterior_means(prior, self.alpha, stats)):
                    a.add_(v)
        return {"weights": acc[0] / n_avg, "means": acc[1] / n_avg, "covariances": acc[2] / n_avg, "z": z,
                "last": {"weights": weights, "means": means, "covariances": sigma}, "last_tril": tril,
                "log_joint": _log_collapsed_joint(prior, self.alpha, stats, z, bias),
                "own_log_joint": _log_collapsed_joint(prior, self.alpha, stats, z)}

    def _infer(self, inputs, bias) -> None:
        """``itr`` Gibbs sweeps (``n_init`` cold chains at the first update, one warm chain later)."""
        x = inputs[0]
        N, D = x.shape
        self._check_sizes(N, D)
        prior = self._prior(x)
        xc = x - prior.loc
        xx = (xc.unsqueeze(-1) * xc.unsqueeze(-2)).reshape(N, D * D)
        warm = self._warm_state(D, prior)
        if warm is not None:
            chains = [self._run_chain(xc, xx, warm, prior, bias)]
        else:  # each chain draws its start just before it runs (the RNG order of the benchmarks)
            S, n_avg = self.screen_sweeps, min(self.n_average, self.itr)
            screen = self.n_init > 1 and 0 < S and self.itr - S >= n_avg
            chains = [self._run_chain(xc, xx, self._cold_state(xc, xx, prior), prior, bias,
                                      sweeps=S if screen else None)
                      for _ in range(self.n_init)]
            if screen:  # the most probable screened chain runs on to itr sweeps
                i = max(range(self.n_init), key=lambda c: chains[c]["log_joint"])
                last = chains[i]
                chains[i] = self._run_chain(xc, xx, (last["last"]["weights"], last["last"]["means"],
                                                     last["last_tril"]), prior, bias, sweeps=self.itr - S)
        if bias is not None and self.message_init:
            # a second chain started from the parent's message: Gibbs moves single points, so
            # it cannot move a whole class that the parent assigns elsewhere (e.g. a chain that
            # has locked onto the digits' order); keep the chain whose final assignment has
            # the higher collapsed posterior density
            w0, m0, _, tril0 = _sample_params(prior, self.alpha, _suff_stats(xc, xx, bias.argmax(-1), self.K))
            chains.append(self._run_chain(xc, xx, (w0, m0, tril0), prior, bias))
        best = max(chains, key=lambda c: c["log_joint"])
        self.weights_ = best["weights"]
        self.means_ = best["means"] + prior.loc
        self.covariances_ = best["covariances"]
        self.assignments_ = best["z"]
        self.last_sample_ = {k: (v + prior.loc if k == "means" else v) for k, v in best["last"].items()}
        self.chain_log_joint_ = [c["log_joint"] for c in chains]
        self.own_log_joint_ = best["own_log_joint"]

    def _recognise(self, inputs, bias) -> None:
        self._require_params()
        if self.means_.shape[1] != inputs[0].shape[1]:
            raise ValueError(f"{self.name}: the learned means have D={self.means_.shape[1]}, "
                             f"the data D={inputs[0].shape[1]}")

    def _forward_message(self, inputs, bias) -> ClassProbs:
        """The GMM's own evidence ``log w_k + log N(x_n | mu_k, Sigma_k)`` (without the parent's
        message); keeps the full posterior ``responsibilities_`` (with it) for the other hooks."""
        x = inputs[0]
        self._loglik = class_log_likelihood(x, self.means_, torch.linalg.cholesky(self.covariances_))
        self._own = self._loglik + _log_weights(self.weights_)
        forward = ClassProbs(self._own)
        self.responsibilities_ = (forward if bias is None else ClassProbs(self._own + bias)).probs
        return forward

    def _backward_messages(self, inputs, bias) -> list:
        """The moment-matched mixture (``"soft"``) or the assigned class mean (``"original"``)
        per point, each child its own columns."""
        x, splits = inputs
        r = self.responsibilities_
        if self.backward == "soft":
            # law of total variance, without the cancellation of E[x^2] - E[x]^2
            loc = r @ self.means_
            spread = (r.unsqueeze(-1) * (self.means_ - loc.unsqueeze(-2)).pow(2)).sum(-2)
            var = r @ self.covariances_.diagonal(dim1=-2, dim2=-1) + spread
            scale = var.clamp_min(torch.finfo(x.dtype).tiny).sqrt()
        else:
            hard = self.assignments_ if (self.mode == "learn" and self.assignments_ is not None
                                         and self.assignments_.shape[0] == x.shape[0]) else r.argmax(-1)
            loc = self.means_[hard]
            scale = torch.ones_like(loc)
        self._mu = loc
        return [GaussianMessage(l, s) for l, s in zip(loc.split(splits, dim=1), scale.split(splits, dim=1))]

    def _class_probs(self, inputs, bias):
        return self.responsibilities_

    def _write_outputs(self, w, inputs, bias) -> None:
        m = self.mode
        w.savetxt(f"mu_{m}.txt", self._mu)
        w.savetxt(f"means_{m}.txt", self.means_)
        w.savetxt(f"weights_{m}.txt", self.weights_)
        w.savez(f"covariances_{m}.npz", covariances=self.covariances_)
        if m == "learn":  # every chain's final log p(x, z | parent), the kept one the largest
            w.savetxt("chain_log_joint_learn.txt", np.asarray(self.chain_log_joint_, dtype=np.float64))

    def _metrics(self, inputs, bias) -> dict:
        metrics = {"log_likelihood": float((self._loglik + _log_weights(self.weights_)).logsumexp(-1).mean())}
        if self.mode == "learn":
            metrics["n_active_classes"] = float(torch.unique(self.assignments_).numel())
            metrics["n_chains"] = float(len(self.chain_log_joint_))  # scores: chain_log_joint_
            # log p(x, z) of the kept chain without the parent's factor: a parent that pulls points
            # into classes their data do not support lowers it
            metrics["objective"] = self.own_log_joint_
        else:
            metrics["objective"] = float(self._own.logsumexp(-1).sum())  # log p(x) under the frozen parameters
        return metrics

    # ------------------------------------------------------------ persistence
    def _check_state(self, values: dict) -> dict:
        w, mu, cov = self._check_params(values, "_")
        a = values.get("assignments_")
        last = values.get("last_sample_")
        if last is not None:
            last = dict(zip(("weights", "means", "covariances"), self._check_params(last, "")))
        return {"weights_": w, "means_": mu, "covariances_": cov, "last_sample_": last,
                "assignments_": None if a is None else torch.as_tensor(a, dtype=torch.long, device=self.device)}

    def _check_params(self, state, suffix):
        """Validated ``(weights, means, covariances)`` from ``state[name + suffix]``."""
        missing = {k for k in ("weights", "means", "covariances") if state.get(k + suffix) is None}
        if missing:
            raise ValueError(f"{self.name}: state dict lacks {sorted(missing)}")
        w, mu, cov = (self._tensor(state[k + suffix]) for k in ("weights", "means", "covariances"))
        K = self.K
        if w.shape != (K,) or mu.dim() != 2 or mu.shape[0] != K or cov.shape != (K, mu.shape[1], mu.shape[1]):
            raise ValueError(f"{self.name}: state dict shapes weights {tuple(w.shape)}, means {tuple(mu.shape)}, "
                             f"covariances {tuple(cov.shape)} do not fit K={K}")
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
            raise ValueError(f"{self.name}: state dict weights must be non-negative and finite")
        if bool((torch.linalg.cholesky_ex(cov).info != 0).any()) or not bool(torch.isfinite(mu).all()):
            raise ValueError(f"{self.name}: state dict covariances must be positive definite, means finite")
        total = float(w.sum())  # weights that sum to 1 up to rounding are kept bit for bit
        return (w if abs(total - 1.0) <= 1e-12 else w / total), mu, cov
