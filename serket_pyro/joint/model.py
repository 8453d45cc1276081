"""Joint mode: the VAE, GMM (and Markov model) submodels composed into ONE Pyro program.

In message-passing mode (:func:`serket_pyro.fit`) each module is fitted on its own; here the
connected graph is one generative model whose latent sites are shared (the VAE's ``z`` is the
GMM's data, the GMM's class ``c`` the Markov chain's state), fitted all at once.  VAE+GMM
(:meth:`JointModel.model`) is VaDE [1]_::

    c_n ~ Categorical(softmax(weight_logits))                       class, K values (enumerated)
    z_n ~ Normal(means[c_n], scales[c_n])                           (L,) diagonal, or
          MultivariateNormal(means[c_n], scale_tril[c_n])           covariance="full"
    x_n ~ Bernoulli(logits=decoder(z_n))                            (D,) pixels in [0, 1]
    guide:  z_n ~ Normal(encoder(x_n))                              amortised q(z | x)

VAE+GMM+MM replaces the independent classes by a first-order Markov chain over the rows in time
order, ``c_t | c_{t-1} ~ Categorical(softmax(trans_logits[c_{t-1}]))``: an HMM whose Gaussian
emissions are decoded into images.

Inference is stochastic variational inference on the ELBO with the VAE's encoder as the guide.
The class is summed out exactly (``logsumexp`` over ``k``; the number
:class:`pyro.infer.TraceEnum_ELBO` computes), the chain by the forward algorithm of
:class:`pyro.distributions.DiscreteHMM` [2]_ over minibatches of contiguous chunks (links between
chunks dropped in training, of order ``1 / chunk_len``).  Class and transition parameters are
point estimates (``pyro.param``); ``elbo="analytic"`` (default) uses one reparameterised draw and
the closed-form entropy of ``q(z | x)``, ``elbo="pyro"`` runs :class:`pyro.infer.SVI`.
Pretraining and the class initialisation (``init=``) are in the README's design notes.

References
----------
.. [1] Z. Jiang, Y. Zheng, H. Tan, B. Tang, H. Zhou, "Variational deep embedding: an unsupervised
   and generative approach to clustering", IJCAI 2017.
.. [2] S. Sarkka, A. F. Garcia-Fernandez, "Temporal parallelization of Bayesian smoothers", IEEE
   Trans. Automatic Control 66(1), 2021.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.nn import PyroModule
from pyro.ops.indexing import Vindex

from ..features.deskew import deskew as deskew_images
from ..ops.forward_backward import forward_backward
from ..modules.gmm import GMM, _kmeanspp
from ..modules.mm import MarkovModel
from .neighbour_embedding import knn_graph, neighbour_embedding_loss
from ..module import Module, Observation, connected_modules
from ..modules.vae import VAE, Decoder, Encoder, GaussianDecoder
from ..validation import check_device, check_positive_float, check_positive_int

_log = logging.getLogger(__name__)

__all__ = ["JointModel", "joint_model"]

_LOG_2PI = math.log(2 * math.pi)


def _find_modules(graph):
    """``(vae, gmm, mm or None)`` from a :class:`~serket_pyro.system.System`, a module of a
    connected graph, or an iterable of modules."""
    if hasattr(graph, "modules") and isinstance(getattr(graph, "modules"), dict):
        mods = list(graph.modules.values())
    elif isinstance(graph, Module):
        mods = connected_modules(graph)
    else:
        mods = list(graph)
    vaes = [m for m in mods if isinstance(m, VAE)]
    gmms = [m for m in mods if isinstance(m, GMM)]
    mms = [m for m in mods if isinstance(m, MarkovModel)]
    other = [m.name for m in mods if not isinstance(m, (VAE, GMM, MarkovModel, Observation))]
    if len(vaes) != 1 or len(gmms) != 1 or len(mms) > 1 or other:
        raise ValueError(
            "joint_model supports the graphs VAE -> GMM and VAE -> GMM -> MarkovModel; got "
            f"{len(vaes)} VAE, {len(gmms)} GMM, {len(mms)} MarkovModel and other modules {other}")
    vae, gmm = vaes[0], gmms[0]
    if vae not in gmm.children:
        raise ValueError(f"joint_model: {gmm.name} must be connected to {vae.name}")
    mm = mms[0] if mms else None
    if mm is not None and gmm not in mm.children:
        raise ValueError(f"joint_model: {mm.name} must be connected to {gmm.name}")
    return vae, gmm, mm


class JointModel(PyroModule):
    """VAE+GMM (VaDE) or VAE+GMM+MM as one Pyro model with an amortised guide.

    Args:
        vae: the :class:`~serket_pyro.modules.vae.VAE` module (its networks, trained or not, its
            ``latent_dim``, ``hidden``, ``likelihood``, ``lr``, ``batch_size``, ``device``).
        gmm: the :class:`~serket_pyro.modules.gmm.GMM` module (``K``, ``category`` for scores).
        mm: optional :class:`~serket_pyro.modules.mm.MarkovModel` (rows of the data are a sequence).
        x: ``(N, D)`` data (numpy or torch; uint8 0..255 is divided by 255 per minibatch, so the
            full data set is kept in 1 byte per pixel).  Default: the VAE's observation.  With
            ``VAE(deskew=True)`` the images are deskewed once here (8-bit images stay 8-bit:
            the deskewed intensities are rounded to the nearest of the 256 levels).
        chunk_len: ``T``, length of the contiguous chunks of the sequence (Markov model only).
        covariance: ``"diag"`` (default, VaDE's diagonal Gaussians) or ``"full"`` (as the GMM
            module, so a message-passing GMM is taken over without loss).  Measured with
            neighbour-embedding pretraining (``benchmarks/joint.py``): on the 3,000 tutorial
            images full covariances keep what the GMM start found (seed 0: 0.939 against 0.909
            with diagonal ones); on full MNIST they collapse in the joint epochs (0.977 at the
            start, 0.880 after 2 epochs) while diagonal ones improve (0.967 to 0.972).
        device: torch device (default: the VAE's).

    Learned parameters (``pyro.param`` sites, prefix ``joint``): ``weight_logits (K,)``,
    ``means (K, L)``, ``log_scales (K, L)`` (log of the diagonal of the Cholesky factor),
    ``tril (K, L, L)`` (its strictly lower part divided by the row's diagonal entry,
    ``covariance="full"`` only; see :meth:`_cholesky`),
    ``trans_logits (K, K)`` (with a Markov model), and the ``encoder`` / ``decoder`` networks.
    """

    def __init__(self, vae: VAE, gmm: GMM, mm: MarkovModel | None = None, x=None, *, chunk_len: int = 100,
                 covariance: str = "diag", device=None):
        super().__init__("joint")
        self.vae, self.gmm, self.mm = vae, gmm, mm
        self.device = check_device(device if device is not None else vae.device)
        self.K = gmm.K
        self.L = vae.latent_dim
        self.likelihood = vae.likelihood
        self.chunk_len = check_positive_int(chunk_len, "chunk_len", "joint")
        if covariance not in ("full", "diag"):
            raise ValueError(f"joint: covariance must be 'full' or 'diag', got {covariance!r}")
        self.covariance = covariance
        if x is None:
            x = vae.children[0].data if vae.children else None
            if x is None:
                raise ValueError("joint: no data: connect the VAE to an Observation or pass x")
        self.x = self._prepare(x)
        N, D = self.x.shape
        self.N, self.D = N, D
        if mm is not None and N < 2:
            raise ValueError("joint: a Markov model needs at least 2 data points")
        # networks: copies of the VAE's (trained or not), or the VAE's built-in architecture
        if vae.encoder_ is not None:
            enc, dec = copy.deepcopy(vae.encoder_), copy.deepcopy(vae.decoder_)
        else:
            enc = copy.deepcopy(vae.encoder) if vae.encoder is not None else Encoder(D, self.L, vae.hidden)
            if vae.decoder is not None:
                dec = copy.deepcopy(vae.decoder)
            elif self.likelihood == "bernoulli":
                dec = Decoder(self.L, D, vae.hidden)
            else:
                dec = GaussianDecoder(self.L, D, vae.hidden)
        for net in (enc, dec):  # a trained VAE's networks have run on their own: new Pyro contexts
            for sub in net.modules():
                if isinstance(sub, PyroModule):
                    sub._pyro_context = type(sub._pyro_context)()
        self.encoder, self.decoder = enc.to(self.device), dec.to(self.device)
        K, L = self.K, self.L
        f = dict(device=self.device)
        self.weight_logits = nn.Parameter(torch.zeros(K, **f))
        self.means = nn.Parameter(torch.randn(K, L, **f))
        self.log_scales = nn.Parameter(torch.zeros(K, L, **f))
        self.tril = nn.Parameter(torch.zeros(K, L, L, **f)) if covariance == "full" else None
        self.trans_logits = nn.Parameter(torch.zeros(K, K, **f)) if mm is not None else None
        self.loss_history_: list[float] = []
        self.pretrain_history_: list[float] = []
        self.neighbours_: torch.Tensor | None = None

    # ------------------------------------------------------------------ data
    def _prepare(self, x) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        if t.dim() != 2:
            t = t.reshape(t.shape[0], -1)
        if t.dtype != torch.uint8:
            t = t.detach().to(torch.float32)
            if self.likelihood == "bernoulli" and float(t.max()) > 1.0:
                if not (float(t.min()) >= 0 and float(t.max()) <= 255 and bool((t == t.round()).all())):
                    raise ValueError("joint: likelihood='bernoulli' needs data in [0, 1] or 8-bit integers")
                t = t.to(torch.uint8)
        if self.vae.deskew:
            out = torch.empty_like(t)
            for s in range(0, t.shape[0], 10000):  # bounded float32 buffers for 8-bit data
                d = torch.from_numpy(deskew_images(t[s:s + 10000], self.vae.image_shape))
                out[s:s + 10000] = d.round_().clamp_(0, 255).to(torch.uint8) if t.dtype == torch.uint8 else d
            t = out
        return t  # 8-bit data stay bytes on the CPU, scaled per minibatch

    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (any shape) of the data as float32 on the device, ``idx.shape + (D,)``."""
        xb = self.x[idx.cpu() if self.x.device.type == "cpu" else idx]
        xb = xb.to(self.device, non_blocking=True)
        return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb

    def _chunk_starts(self) -> torch.Tensor:
        """Start rows of the contiguous training chunks (Markov model): a grid of step ``T``; the
        last chunk ends at row ``N`` (it may overlap the previous one)."""
        T = min(self.chunk_len, self.N)
        starts = torch.arange(0, self.N - T + 1, T)
        if int(starts[-1]) + T < self.N:
            starts = torch.cat([starts, torch.tensor([self.N - T])])
        return starts

    # ------------------------------------------------------------------ distributions
    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors of the class covariances, ``(K, L, L)`` lower triangular (diagonal
        with ``covariance="diag"``)."""
        return self._cholesky(self.log_scales, self.tril)

    @staticmethod
    def _cholesky(log_scales, tril):
        """``diag(exp(log_scales)) @ (I + strictly_lower(tril))``: lower triangular with a positive
        diagonal; the off-diagonal parameters are relative to their row's scale (scale-free, like
        ``log_scales``)."""
        s = log_scales.exp()
        if tril is None:
            return torch.diag_embed(s)
        eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device)
        return s.unsqueeze(-1) * (eye + tril.tril(-1))

    def covariances(self) -> torch.Tensor:
        """Class covariances ``scale_tril @ scale_tril.T``, ``(K, L, L)``."""
        t = self.scale_tril()
        return t @ t.transpose(-1, -2)

    def _component(self, means, log_scales, tril):
        """The class-conditional Gaussian of ``z`` with parameters indexed to any batch shape."""
        if tril is None:
            return dist.Normal(means, log_scales.exp()).to_event(1)
        return dist.MultivariateNormal(means, scale_tril=self._cholesky(log_scales, tril))

    def _components(self):
        return self._component(self.means, self.log_scales, self.tril)

    def _hmm(self, T: int):
        return dist.DiscreteHMM(self.weight_logits, self.trans_logits.log_softmax(-1), self._components(),
                                duration=T)

    def _lik_dist(self, out):
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out, validate_args=False)
        loc, scale = out
        return dist.Normal(loc, scale)

    def _neg_log_lik(self, out, x):
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        loc, scale = out
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        return (((x - loc) / scale).pow(2) / 2 + scale.log() + 0.5 * _LOG_2PI).sum(-1)

    def class_log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(z_n | mu_k, Sigma_k)``, ``z: (..., L)`` -> ``(..., K)``."""
        lp = self._components().log_prob(z.unsqueeze(-2))
        return lp + self.weight_logits.log_softmax(-1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the latents with the discrete classes summed out exactly.

        GMM: ``z: (B, L)`` -> ``(B,)`` ``logsumexp_k``; Markov model: ``z: (B, T, L)`` chunks ->
        ``(B,)`` forward algorithm."""
        if self.mm is None:
            return self.class_log_joint(z).logsumexp(-1)
        return self._hmm(z.shape[-2]).log_prob(z)

    # ------------------------------------------------------------------ Pyro program
    def model(self, idx: torch.Tensor | None = None, batch_size: int | None = None):
        """The joint generative model.  ``idx``: subsample (points, or chunk numbers with a
        Markov model) or ``None`` for all; the loss is the mean per data point (scaled by
        ``1 / N``).  Enumerate ``c`` with ``TraceEnum_ELBO(max_plate_nesting=1)``."""
        pyro.module("joint", self)
        if self.mm is None:
            with pyro.plate("data", self.N, subsample=idx, subsample_size=batch_size) as ind, \
                    poutine.scale(scale=1.0 / self.N):
                xb = self._batch(ind)
                c = pyro.sample("c", dist.Categorical(logits=self.weight_logits),
                                infer={"enumerate": "parallel"})
                tril = None if self.tril is None else Vindex(self.tril)[..., c, :, :]
                z = pyro.sample("z", self._component(Vindex(self.means)[..., c, :],
                                                     Vindex(self.log_scales)[..., c, :], tril))
                pyro.sample("x", self._lik_dist(self.decoder(z)).to_event(1), obs=xb)
        else:
            starts = self._chunk_starts()
            T = min(self.chunk_len, self.N)
            with pyro.plate("chunks", len(starts), subsample=idx, subsample_size=batch_size) as ind, \
                    poutine.scale(scale=1.0 / (len(starts) * T)):
                xb = self._batch(starts[ind.cpu()].unsqueeze(-1) + torch.arange(T))
                z = pyro.sample("z", self._hmm(T))
                pyro.sample("x", self._lik_dist(self.decoder(z)).to_event(2), obs=xb)

    def guide(self, idx: torch.Tensor | None = None, batch_size: int | None = None):
        """Amortised guide ``q(z | x) = Normal(encoder(x))`` (same arguments as :meth:`model`)."""
        pyro.module("joint", self)
        if self.mm is None:
            with pyro.plate("data", self.N, subsample=idx, subsample_size=batch_size) as ind, \
                    poutine.scale(scale=1.0 / self.N):
                loc, scale = self.encoder(self._batch(ind))
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        else:
            starts = self._chunk_starts()
            T = min(self.chunk_len, self.N)
            with pyro.plate("chunks", len(starts), subsample=idx, subsample_size=batch_size) as ind, \
                    poutine.scale(scale=1.0 / (len(starts) * T)):
                loc, scale = self.encoder(self._batch(starts[ind.cpu()].unsqueeze(-1) + torch.arange(T)))
                pyro.sample("z", dist.Normal(loc, scale).to_event(2))

    # ------------------------------------------------------------------ hand-written ELBO
    def elbo_terms(self, xb: torch.Tensor, eps: torch.Tensor | None = None):
        """Per-point terms of the ELBO for a minibatch ``xb`` ((B, D), or (B, T, D) chunks).

        Returns ``(log p(x | z), log p(z), log q(z | x), entropy of q)``; the first is per point
        ``(B,)`` / ``(B, T)``, ``log p(z)`` per point (GMM) or per chunk (Markov model), ``log q``
        and the entropy per point.  ``z = loc + eps * scale`` with ``eps`` standard normal drawn
        from torch's global RNG as Pyro's guide draws it (the same seed gives the same ``z``)."""
        loc, scale = self.encoder(xb)
        if eps is None:
            eps = torch.empty_like(loc).normal_()
        z = loc + eps * scale
        log_px = -self._neg_log_lik(self.decoder(z), xb)
        log_pz = self.log_prior(z)
        log_q = (-0.5 * eps.pow(2) - scale.log() - 0.5 * _LOG_2PI).sum(-1)
        entropy = (scale.log() + 0.5 * (1 + _LOG_2PI)).sum(-1)
        return log_px, log_pz, log_q, entropy

    def loss(self, xb: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per data point, averaged over the minibatch (closed-form entropy)."""
        log_px, log_pz, _, entropy = self.elbo_terms(xb)
        n = log_px.numel()
        return -(log_px.sum() + log_pz.sum() + entropy.sum()) / n

    # ------------------------------------------------------------------ training
    def _epoch_batches(self, batch_size):
        """Index tensors of one shuffled epoch: points (GMM) or chunk starts expanded to rows."""
        if self.mm is None:
            return [(i, None) for i in torch.randperm(self.N).split(batch_size)]
        starts = self._chunk_starts()
        T = min(self.chunk_len, self.N)
        per = max(1, batch_size // T)
        return [(starts[c].unsqueeze(-1) + torch.arange(T), c) for c in torch.randperm(len(starts)).split(per)]

    def neighbours(self, k: int = 10, progress: bool = False) -> torch.Tensor:
        """The ``k``-nearest-neighbour graph of the (deskewed) data, ``(N, k)`` int64, computed
        once on the model's device (:func:`~serket_pyro.joint.neighbour_embedding.knn_graph`) and kept
        in ``neighbours_``."""
        if self.neighbours_ is None or self.neighbours_.shape[1] != k:
            self.neighbours_ = knn_graph(self.x, k, device=self.device, progress=progress)
        return self.neighbours_

    def pretrain(self, epochs: int = 50, batch_size: int | None = None, lr: float | None = None,
                 progress: bool = False, kl_weight: float = 1.0, neighbour_weight: float = 0.0,
                 n_neighbours: int = 10, negative_weight: float = 5.0) -> list[float]:
        """Train the VAE alone (standard Normal prior) for ``epochs`` epochs: the usual first
        stage of VaDE.  ``kl_weight=0`` trains a deterministic autoencoder on the encoder mean
        instead (VaDE's pretraining).

        ``neighbour_weight > 0`` adds ``neighbour_weight`` times the UMAP cross-entropy of the
        encoder means (:func:`~serket_pyro.joint.neighbour_embedding.neighbour_embedding_loss`, one
        random graph neighbour per point from the ``n_neighbours``-nearest-neighbour graph of the
        data, the minibatch as negatives with ``negative_weight``): latents a mixture can separate
        (see :mod:`serket_pyro.joint.neighbour_embedding`).  Returns the epoch losses (mean per point)."""
        epochs = check_positive_int(epochs, "epochs", "joint", minimum=0)
        bs = check_positive_int(self.vae.batch_size if batch_size is None else batch_size, "batch_size", "joint")
        lr = check_positive_float(self.vae.lr if lr is None else lr, "lr", "joint")
        check_positive_float(kl_weight, "kl_weight", "joint", allow_zero=True)
        check_positive_float(neighbour_weight, "neighbour_weight", "joint", allow_zero=True)
        if neighbour_weight > 0:
            if bs < 2:
                raise ValueError("joint: neighbour_weight > 0 needs batch_size >= 2 "
                                 "(the minibatch gives the negatives)")
            nb = self.neighbours(n_neighbours, progress)
        opt = torch.optim.Adam(list(self.encoder.parameters()) + list(self.decoder.parameters()),
                               lr=lr)
        losses = []
        for _ in range(epochs):
            total = 0.0
            for i in torch.randperm(self.N).split(bs):
                xb = self._batch(i)
                loc, scale = self.encoder(xb)
                if kl_weight > 0:
                    z = loc + torch.empty_like(loc).normal_() * scale
                    kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1 - 2 * scale.log()).sum(-1)
                    loss = (self._neg_log_lik(self.decoder(z), xb) + kl_weight * kl).mean()
                else:
                    loss = self._neg_log_lik(self.decoder(loc), xb).mean()
                if neighbour_weight > 0 and len(i) >= 2:
                    j = nb[i, torch.randint(nb.shape[1], (len(i),))]
                    loc_j = self.encoder(self._batch(j))[0]
                    loss = loss + neighbour_weight * neighbour_embedding_loss(loc, loc_j, negative_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(i)
            losses.append(total / self.N)
            _log.log(logging.INFO if progress else logging.DEBUG, "pretrain epoch %d: loss %.2f",
                     len(losses), losses[-1])
        self.pretrain_history_.extend(losses)
        return losses

    @torch.no_grad()
    def encode(self, batch_size: int = 2000, x=None) -> torch.Tensor:
        """Posterior means ``E q(z | x)``, ``(N, L)`` on the device: of the training data, or of new
        data ``x`` (``(M, D)`` or images, prepared as the training data: scaled, deskewed)."""
        if x is None:
            rows, get = self.N, self._batch
        else:
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            if t.reshape(t.shape[0], -1).shape[1] != self.x.shape[1]:
                raise ValueError(f"joint: new data have D={t.reshape(t.shape[0], -1).shape[1]}, the model was "
                                 f"fitted on D={self.x.shape[1]}")
            t = self._prepare(t)
            if t.shape[1] != self.x.shape[1]:
                raise ValueError(f"joint: new data have D={t.shape[1]}, the model was fitted on D={self.x.shape[1]}")
            rows = t.shape[0]

            def get(i):
                xb = t[i].to(self.device)
                return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb
        self.encoder.eval()
        out = [self.encoder(get(i))[0] for i in torch.arange(rows).split(batch_size)]
        self.encoder.train()
        return torch.cat(out)

    @torch.no_grad()
    def init_clusters(self, method: str = "kmeans", gmm_itr: int = 30, gmm_prior: str = "module") -> None:
        """Initialise the class parameters from the latents ``E q(z | x)``.

        ``"kmeans"``: k-means (:func:`serket_pyro.ops.kmeans`: greedy k-means++ seeding, best of 10
        starts); means, covariances (the data's for a class of at most ``L`` points) and weights
        come from the assignment.  ``"gmm"``: a :class:`~serket_pyro.modules.gmm.GMM` module with
        this GMM's hyperparameters (``n_init`` chains, the most probable kept) run for ``gmm_itr``
        Gibbs sweeps on the latents (files go to a temporary folder); its ``weights_``, ``means_``
        and ``covariances_`` are taken over.  With a Markov model the transitions come from the
        counts of consecutive classes (plus 1). ``"modules"``: the GMM's learned ``weights_``,
        ``means_``, ``covariances_`` and the Markov model's ``trans_prob_`` (message passing as
        pre-training: ``system.fit(...)`` first, then :func:`joint_model` copies the trained VAE
        networks).  ``covariance="diag"`` keeps the diagonal of the covariances.

        ``gmm_prior`` (``"gmm"`` only): ``"module"`` uses the GMM module's covariance prior;
        ``"neighbours"`` a strong one set by the latents' local scale, ``nu0 = L + 100`` and
        ``E[Sigma_k] = 4 v I`` with ``v`` the mean squared distance per dimension between each
        latent and its 10 nearest latents, halved.  The module's prior is centred on the
        latents' total variance, which after neighbour-embedding pretraining is mostly the
        distance between classes, so a broad class of scattered points is cheap and the most
        probable partition can merge two digits; the local prior makes such a class pay."""
        K = self.K
        if method == "modules":
            self._init_from_modules()
            return
        z = self.encode().double()
        if method == "kmeans":
            lab = _kmeanspp(z, K)
            self._init_from_labels(z, lab)
        elif method == "gmm":
            if gmm_prior == "module":
                prior = dict(nu0=self.gmm.nu0, psi0=self.gmm.psi0, prior_scale=self.gmm.prior_scale)
            elif gmm_prior == "neighbours":
                nb = knn_graph(z, min(10, self.N - 1))
                v = float((z.unsqueeze(1) - z[nb]).pow(2).sum(-1).mean()) / (2 * self.L)
                nu0 = self.L + 100
                prior = dict(nu0=nu0, psi0=(nu0 - self.L - 1) * 4.0 * v, prior_scale="absolute")
            else:
                raise ValueError(f"joint: gmm_prior must be 'module' or 'neighbours', got {gmm_prior!r}")
            with tempfile.TemporaryDirectory() as tmp:
                g = GMM(K, itr=gmm_itr, alpha=self.gmm.alpha, kappa0=self.gmm.kappa0, device=z.device,
                        output_root=tmp, **prior)
                g.connect(Observation(z.cpu()))
                g.update()
                if self.mm is not None:  # the transitions are counted from the labels
                    lab = g.class_log_posterior(z).argmax(-1).to(z.device)
                self._set_gaussians(g.means_, g.covariances_)
                self.weight_logits.copy_(g.weights_.clamp_min(1e-12).log().float())
        else:
            raise ValueError(f"joint: init must be 'kmeans', 'gmm' or 'modules', got {method!r}")
        if self.mm is not None:
            c = torch.bincount(lab[:-1] * K + lab[1:], minlength=K * K).reshape(K, K).double() + 1.0
            self.trans_logits.copy_((c / c.sum(1, keepdim=True)).log().float())

    def _init_from_labels(self, z: torch.Tensor, lab: torch.Tensor) -> None:
        K = self.K
        counts = torch.bincount(lab, minlength=K).double()
        sums = z.new_zeros(K, self.L).index_add_(0, lab, z)
        mean = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], z.mean(0))
        dev = z - mean[lab]
        scatter = z.new_zeros(K, self.L, self.L).index_add_(0, lab, dev.unsqueeze(-1) * dev.unsqueeze(-2))
        cov = torch.where(counts[:, None, None] > self.L, scatter / counts.clamp_min(1)[:, None, None],
                          torch.cov(z.T).expand(K, self.L, self.L))  # too few points: the data's
        cov = cov + 1e-4 * torch.eye(self.L, dtype=z.dtype, device=z.device)
        self._set_gaussians(mean, cov)
        self.weight_logits.copy_(((counts + 1) / (counts.sum() + K)).log().float())

    @torch.no_grad()
    def _set_gaussians(self, means: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set the class Gaussians from ``means (K, L)`` and ``covariances (K, L, L)`` (only their
        diagonal with ``covariance="diag"``)."""
        f = dict(device=self.device, dtype=torch.float32)
        self.means.copy_(means.to(**f))
        cov = covariances.to(device=self.device, dtype=torch.float64)
        if self.tril is None:
            self.log_scales.copy_((0.5 * cov.diagonal(dim1=-2, dim2=-1).clamp_min(1e-8).log()).to(**f))
            return
        chol = torch.linalg.cholesky(cov)
        diag = chol.diagonal(dim1=-2, dim2=-1)
        self.log_scales.copy_(diag.log().to(**f))
        self.tril.copy_((chol / diag.unsqueeze(-1)).tril(-1).to(**f))

    def _init_from_modules(self) -> None:
        gmm, mm = self.gmm, self.mm
        if gmm.means_ is None or gmm.means_.shape != (self.K, self.L):
            raise ValueError("joint: init='modules' needs a GMM fitted on this VAE's latents "
                             f"(means_ of shape {(self.K, self.L)}); run the message-passing system first")
        if mm is not None and mm.trans_prob_ is None:
            raise ValueError("joint: init='modules' needs a fitted Markov model (trans_prob_); "
                             "run the message-passing system first")
        if self.vae.encoder_ is None:
            raise ValueError("joint: init='modules' needs a trained VAE; run the message-passing system first")
        f = dict(device=self.device, dtype=torch.float32)
        self._set_gaussians(gmm.means_, gmm.covariances_)
        self.weight_logits.copy_(gmm.weights_.clamp_min(1e-12).log().to(**f))
        if mm is not None:
            self.trans_logits.copy_(mm.trans_prob_.clamp_min(1e-12).log().to(**f))

    def fit(self, epochs: int = 100, *, pretrain_epochs: int = 0, init: str | None = "kmeans",
            batch_size: int | None = None, lr: float | None = None, lr_global: float | None = None,
            pretrain_kl_weight: float = 1.0, pretrain_neighbour_weight: float = 0.0, n_neighbours: int = 10,
            gmm_prior: str = "module",
            elbo: str = "analytic", category=None, eval_every: int = 0, progress: bool = False) -> list[float]:
        """Fit the joint model.

        Args:
            epochs: joint epochs (passes over the data).
            pretrain_epochs: epochs of the VAE alone first (:meth:`pretrain`, with
                ``pretrain_kl_weight``; 0 pretrains a plain autoencoder as VaDE).
            pretrain_neighbour_weight, n_neighbours: neighbour-embedding term of the pretraining
                (:meth:`pretrain`'s ``neighbour_weight``; 0, the default, is VaDE's pretraining).
            gmm_prior: covariance prior of the ``init="gmm"`` start (:meth:`init_clusters`).
            init: ``"kmeans"``/``"gmm"`` initialises the class parameters from the (pretrained)
                latents, ``"modules"`` from the fitted GMM / Markov model (:meth:`init_clusters`)
                before the joint epochs; ``None`` keeps them.
            batch_size: points per minibatch (default the VAE's; with a Markov model,
                ``batch_size // chunk_len`` chunks).
            lr: Adam learning rate of the networks (default the VAE's); ``lr_global`` of the class
                parameters (default ``lr``).
            elbo: ``"analytic"`` (hand-written, default) or ``"pyro"`` (SVI with TraceEnum_ELBO).
            category: true labels to record the accuracy every ``eval_every`` epochs in
                ``accuracy_history_`` and that of the initial clusters in ``init_accuracy_``
                (default the GMM's ``category``).
            progress: log each epoch's loss (and accuracy) at INFO on the ``serket_pyro`` logger
                (at DEBUG when False); ``logging.basicConfig(level=logging.INFO)`` shows them.
        Returns the epoch losses (mean negative ELBO per point).
        """
        from ..metrics import accuracy

        epochs = check_positive_int(epochs, "epochs", "joint", minimum=0)
        pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs", "joint", minimum=0)
        eval_every = check_positive_int(eval_every, "eval_every", "joint", minimum=0)
        n_neighbours = check_positive_int(n_neighbours, "n_neighbours", "joint")
        bs = check_positive_int(self.vae.batch_size if batch_size is None else batch_size, "batch_size", "joint")
        lr = check_positive_float(self.vae.lr if lr is None else lr, "lr", "joint")
        lr_g = check_positive_float(lr if lr_global is None else lr_global, "lr_global", "joint")
        if elbo not in ("analytic", "pyro"):
            raise ValueError(f"joint: elbo must be 'analytic' or 'pyro', got {elbo!r}")
        category = self.gmm.category if category is None else np.asarray(category)
        if pretrain_epochs:
            self.pretrain(pretrain_epochs, bs, lr, progress, pretrain_kl_weight,
                          neighbour_weight=pretrain_neighbour_weight, n_neighbours=n_neighbours)
        if init is not None:
            self.init_clusters(init, gmm_prior=gmm_prior)
        self.init_accuracy_ = (float(accuracy(category, self.predict().argmax(-1).cpu().numpy()))
                               if category is not None and eval_every else None)
        if self.init_accuracy_ is not None:
            _log.log(logging.INFO if progress else logging.DEBUG, "initial clusters: acc %.4f",
                     self.init_accuracy_)
        nets = list(self.encoder.parameters()) + list(self.decoder.parameters())
        glob = [p for p in (self.weight_logits, self.means, self.log_scales, self.tril, self.trans_logits)
                if p is not None]
        self.accuracy_history_ = []
        losses = []
        if elbo == "pyro":
            pyro.clear_param_store()
            svi = pyro.infer.SVI(self.model, self.guide,
                                 pyro.optim.Adam({"lr": lr}),
                                 loss=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1) if self.mm is None
                                 else pyro.infer.Trace_ELBO(max_plate_nesting=1))
        else:
            opt = torch.optim.Adam([{"params": nets, "lr": lr}, {"params": glob, "lr": lr_g}])
        for ep in range(epochs):
            total, count = 0.0, 0
            for rows, chunk in self._epoch_batches(bs):
                n = rows.numel()
                if elbo == "pyro":
                    val = svi.step(chunk if self.mm is not None else rows)  # per-point mean
                else:
                    loss = self.loss(self._batch(rows))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    val = float(loss.detach())
                total += val * n
                count += n
            losses.append(total / count)
            if category is not None and eval_every and (ep + 1) % eval_every == 0:
                self.accuracy_history_.append(float(accuracy(category, self.predict().argmax(-1).cpu().numpy())))
                _log.log(logging.INFO if progress else logging.DEBUG, "epoch %d: loss %.2f acc %.4f",
                         ep + 1, losses[-1], self.accuracy_history_[-1])
            else:
                _log.log(logging.INFO if progress else logging.DEBUG, "epoch %d: loss %.2f", ep + 1, losses[-1])
        self.loss_history_.extend(losses)
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, x=None) -> torch.Tensor:
        """``log p(c_n | x)``, ``(N, K)`` float64, with ``z_n = E q(z_n | x_n)``: GMM by Bayes'
        rule per point, Markov model by forward-backward over the whole sequence (CPU numpy).

        ``x``: new data ``(M, D)`` (in sequence order when there is a Markov model) to classify
        with the fitted parameters; default the training data."""
        z = self.encode(x=x)
        lj = self.class_log_joint(z).double()
        if self.mm is None:
            return lj - lj.logsumexp(-1, keepdim=True)
        log_w = self.weight_logits.log_softmax(-1).double()
        log_A = self.trans_logits.log_softmax(-1).double()
        log_init = (log_w.unsqueeze(-1) + log_A).logsumexp(0)  # p(c_0) = w @ A (DiscreteHMM convention)
        log_obs = lj - log_w  # emission log N(z_t | mu_k, s_k)
        res = forward_backward(log_init.cpu(), log_A.cpu(), log_obs.cpu())
        return torch.from_numpy(res.log_marginals).to(z.device)

    @torch.no_grad()
    def to_modules(self) -> None:
        """Hand the jointly learned parameters back to the modules: the VAE's ``encoder_`` /
        ``decoder_`` get these networks' weights (built if the VAE was never trained); the GMM's
        ``weights_``, ``means_``, ``covariances_`` and ``assignments_``; the Markov
        model's ``trans_prob_`` (uniform ``init_prob_``, ``evidence_noise_`` 0).  Running the
        modules afterwards (``mode="recog"``, or a warm-started ``"learn"``) starts from them."""
        vae, gmm, mm = self.vae, self.gmm, self.mm
        if vae.encoder_ is None:
            vae._build(self.D)
        vae.encoder_.load_state_dict(self.encoder.state_dict())
        vae.decoder_.load_state_dict(self.decoder.state_dict())
        if vae.data_scale_ is None:
            vae.data_scale_ = 1.0 / 255.0 if self.x.dtype == torch.uint8 else 1.0
        gdev, gdt = gmm.device, gmm.dtype
        gmm.weights_ = self.weight_logits.softmax(-1).to(gdev, gdt)
        gmm.means_ = self.means.detach().to(gdev, gdt).clone()
        gmm.covariances_ = self.covariances().detach().to(gdev, gdt)
        gmm.assignments_ = self.predict().argmax(-1).to(gdev)
        gmm.last_sample_ = None
        if mm is not None:
            mm.trans_prob_ = self.trans_logits.softmax(-1).detach().cpu().double()
            mm.init_prob_ = torch.full((self.K,), 1.0 / self.K, dtype=torch.float64)
            mm.evidence_noise_ = 0.0 if mm.evidence_noise == "learn" else float(mm.evidence_noise)
            mm.n_states_ = self.K
            mm.log_likelihood_ = float("nan")


def joint_model(graph, x=None, *, compiled: bool | None = None, **kwargs):
    """One Pyro program from a connected graph of modules.

    The graphs VAE -> GMM and VAE -> GMM -> MarkovModel give the VaDE recipe
    :class:`JointModel` (pretraining, cluster initialisation); every other graph, or
    ``compiled=True``, the compiled :class:`~serket_pyro.joint.compiler.JointProgram`.

    Args:
        graph: a :class:`~serket_pyro.system.System` (e.g. ``models.vae_gmm.build(...)``), any
            module of the connected graph, or a list of its modules.
        x: data (default: the VAE's observation; :class:`JointModel` only).
        compiled: ``True`` always compiles, ``False`` always builds a :class:`JointModel`,
            ``None`` (default) compiles the graphs a :class:`JointModel` does not take.
        **kwargs: :class:`JointModel` options (``chunk_len``, ``covariance``, ``device``) or
            :class:`~serket_pyro.joint.compiler.JointProgram` options (``chunk_len``, ``dtype``).
    """
    from .compiler import JointProgram

    if compiled:
        if x is not None:
            raise ValueError("joint_model: compiled=True reads the data from the graph's observations; drop x")
        return JointProgram(graph, **kwargs)
    try:
        vae, gmm, mm = _find_modules(graph)
    except ValueError:
        if compiled is False or x is not None:
            raise
        return JointProgram(graph, **kwargs)
    return JointModel(vae, gmm, mm, x, **kwargs)
