"""Joint mode, the VaDE recipe: VAE+GMM (and VAE+GMM+MM) fitted as ONE Pyro program.

The program is the compiled one (:class:`~serket_pyro.joint.compiler.JointProgram`, composed from
the modules' joint hooks): for VAE+GMM it is VaDE [1]_::

    c_n ~ Categorical(weights)                                      class, K values (enumerated)
    z_n ~ MultivariateNormal(means[c_n], scale_tril[c_n])           (L,); diagonal with covariance="diag"
    x_n ~ the VAE's likelihood given decoder(z_n)                   (D,) pixels in [0, 1]
    guide:  z_n ~ Normal(encoder(x_n))                              amortised q(z | x)

VAE+GMM+MM replaces the independent classes by the Markov chain over the rows in time order
(summed by the forward algorithm over contiguous chunks).  :class:`JointModel` adds what is a
recipe rather than a model: pretraining of the VAE alone (:meth:`JointModel.pretrain`, with the
optional neighbour-embedding term of :mod:`serket_pyro.joint.neighbour_embedding`), the start of
the classes from the latents or from message passing (:meth:`JointModel.init_clusters`), and
accuracy records during the joint epochs.  The ELBO, its parameters and the training loop are the
program's (:meth:`JointProgram.loss`, :meth:`JointProgram.fit`); the networks are the VAE's own.

References
----------
.. [1] Z. Jiang, Y. Zheng, H. Tan, B. Tang, H. Zhou, "Variational deep embedding: an unsupervised
   and generative approach to clustering", IJCAI 2017.
"""

from __future__ import annotations

import logging
import tempfile

import numpy as np
import torch

from torch.distributions import kl_divergence

from .. import distributed as _dist
from ..modules.gmm import GMM
from ..modules.mm import MarkovModel
from ..module import Module, Observation, connected_modules
from ..modules.vae import VAE
from ..ops.kmeans import kmeans
from ..validation import check_device, check_positive_float, check_positive_int
from .compiler import JointProgram
from .constraints import diagonal_cholesky, softmax_simplex
from .neighbour_embedding import knn_graph, neighbour_embedding_loss

_log = logging.getLogger(__name__)

__all__ = ["JointModel", "joint_model"]


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


def _as_2d(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.reshape(t.shape[0], -1) if t.dim() != 2 else t


class JointModel:
    """VAE+GMM (VaDE) or VAE+GMM+MM: the compiled program plus VaDE's recipe.

    Args:
        vae: the :class:`~serket_pyro.modules.vae.VAE` module; the program trains its networks
            (``encoder_`` / ``decoder_``, built from its settings if it was never trained).
        gmm: the :class:`~serket_pyro.modules.gmm.GMM` module (``K``, ``category`` for scores).
        mm: optional :class:`~serket_pyro.modules.mm.MarkovModel` (rows of the data are a sequence).
        x: ``(N, D)`` data read instead of the VAE's observation (numpy or torch; 8-bit 0..255
            images are divided by 255, deskewed with ``VAE(deskew=True)``, as the VAE reads them).
        chunk_len: ``T``, length of the contiguous chunks of the sequence (Markov model only).
        covariance: ``"diag"`` (default, VaDE's diagonal Gaussians) or ``"full"`` (as the GMM
            module, so a message-passing GMM is taken over without loss).
        entropy: ``"analytic"`` (default) or ``"sampled"``: how the ELBO takes ``q(z | x)``'s
            entropy (:class:`~serket_pyro.joint.compiler.JointProgram`).
        device: torch device; must be the VAE's (default).

    Attributes:
        program: the :class:`~serket_pyro.joint.compiler.JointProgram` (its parameters:
            ``program.params(gmm)``: ``weights``, ``means``, ``scale_tril``; ``program.params(mm)``:
            ``trans_prob``).
        loss_history_, pretrain_history_, accuracy_history_, init_accuracy_, neighbours_.
    """

    def __init__(self, vae: VAE, gmm: GMM, mm: MarkovModel | None = None, x=None, *, chunk_len: int = 100,
                 covariance: str = "diag", entropy: str = "analytic", device=None):
        self.vae, self.gmm, self.mm = vae, gmm, mm
        if device is not None and check_device(device) != check_device(vae.device):
            raise ValueError(f"joint: device must be the VAE's ({vae.device}), got {device}")
        self.device = check_device(vae.device)
        self.chunk_len = check_positive_int(chunk_len, "chunk_len", "joint")
        if covariance not in ("full", "diag"):
            raise ValueError(f"joint: covariance must be 'full' or 'diag', got {covariance!r}")
        self.covariance = covariance
        obs = next((c for c in vae.children if isinstance(c, Observation)), None)
        if obs is None:
            raise ValueError(f"joint: connect {vae.name} to an Observation (x= replaces its data)")
        if x is None and obs.missing:
            raise ValueError("joint: no data: give the VAE's Observation data or pass x")
        if x is not None:
            x = _as_2d(x)
        self._obs = obs
        # VaDE's parametrisation: class weights (and the chain's rows) as softmax logits
        cons = {(gmm, "weights"): softmax_simplex}
        if mm is not None:
            cons[(mm, "trans_prob")] = softmax_simplex
        if covariance == "diag":
            cons[(gmm, "scale_tril")] = diagonal_cholesky
        self.program = JointProgram([vae, gmm] + ([mm] if mm is not None else []), chunk_len=chunk_len,
                                    subgraph=[vae, gmm] + ([mm] if mm is not None else []),
                                    observations={obs: x} if x is not None else None, constraints=cons,
                                    entropy=entropy)
        self.N = self.program.N              # this process's rows (all N outside a sharded fit)
        self.N_global = self.program.N_global
        self.D = self.x.shape[1]
        self.K, self.L = gmm.K, vae.latent_dim
        data = obs.data if x is None else x
        self._eight_bit = vae.likelihood == "bernoulli" and float(torch.as_tensor(data).max()) > 1.0
        self.loss_history_: list[float] = []
        self.pretrain_history_: list[float] = []
        self.accuracy_history_: list[float] = []
        self.init_accuracy_: float | None = None
        self.neighbours_: torch.Tensor | None = None
        self._scale_untrained = False  # after an autoencoder pretraining: start_encoder_scale() is due

    # ------------------------------------------------------------------ data and parameters
    @property
    def x(self) -> torch.Tensor:
        """The data as the VAE reads them (scaled, deskewed), ``(N, D)``."""
        return self.program.observed(self.vae).float()

    def params(self) -> dict:
        """The program's class parameters: ``weights (K,)`` (GMM alone), ``means (K, L)``,
        ``scale_tril (K, L, L)`` and, with a Markov model, ``trans_prob (K, K)``."""
        out = dict(self.program.params(self.gmm))
        if self.mm is not None:
            out.update(self.program.params(self.mm))
        return out

    def covariances(self) -> torch.Tensor:
        """Class covariances ``scale_tril @ scale_tril.T``, ``(K, L, L)``."""
        t = self.program.params(self.gmm)["scale_tril"]
        return t @ t.transpose(-1, -2)

    @torch.no_grad()
    def set_gaussians(self, means, covariances, weights=None) -> None:
        """Set the class Gaussians (``(K, L)``, ``(K, L, L)``; only the variances count with
        ``covariance="diag"``) and, without a Markov model, the class weights ``(K,)``."""
        g = self.gmm
        cov = torch.as_tensor(covariances, dtype=torch.float64).cpu()
        self.program.set_param(g, "means", torch.as_tensor(means, dtype=torch.float64).cpu())
        self.program.set_param(g, "scale_tril", torch.linalg.cholesky(cov))
        if weights is not None and self.mm is None:
            w = torch.as_tensor(weights, dtype=torch.float64).cpu().clamp_min(1e-12)
            self.program.set_param(g, "weights", w / w.sum())

    def loss(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per data point of the points (chunks with a Markov model) ``idx``
        (default all): the program's (:meth:`JointProgram.loss`), one draw of ``z``."""
        return self.program.loss(idx)

    # ------------------------------------------------------------------ recipe: pretraining
    def neighbours(self, k: int = 10, progress: bool = False) -> torch.Tensor:
        """The ``k``-nearest-neighbour graph of the data as the VAE reads them, ``(N, k)`` int64
        (:func:`~serket_pyro.joint.neighbour_embedding.knn_graph`), kept in ``neighbours_``."""
        if self.neighbours_ is None or self.neighbours_.shape[1] != k:
            self.neighbours_ = knn_graph(self.program.observed(self.vae).float(), k, device=self.device,
                                         progress=progress)
        return self.neighbours_

    def pretrain(self, epochs: int = 50, batch_size: int | None = None, lr: float | None = None,
                 progress: bool = False, kl_weight: float = 1.0, neighbour_weight: float = 0.0,
                 n_neighbours: int = 10, negative_weight: float = 5.0) -> list[float]:
        """Recipe step: train the VAE alone (its own prior, likelihood and guide: the joint hooks
        ``joint_prior``, ``joint_child_dist``, ``joint_guide``) for ``epochs`` epochs, VaDE's
        first stage.  Loss per point ``-log p(x | z) + kl_weight KL(q(z | x) || N(0, I))`` with one
        draw ``z ~ q``; ``kl_weight=0`` trains a deterministic autoencoder on the encoder mean
        (VaDE's pretraining).

        ``neighbour_weight > 0`` adds ``neighbour_weight`` times the UMAP cross-entropy of the
        encoder means (:func:`~serket_pyro.joint.neighbour_embedding.neighbour_embedding_loss`,
        one random graph neighbour per point from the ``n_neighbours``-nearest-neighbour graph
        of the data, the minibatch as negatives with ``negative_weight``).  Returns the epoch
        losses (mean per point).

        In a sharded fit (the program holds this process's rows, see
        :mod:`serket_pyro.joint.data_parallel`) the minibatches are global, drawn alike on every
        process; each process takes its members (weighted by their share, noise from its own
        stream) and the networks' gradients are summed over the processes.  The neighbour graph
        is then the ``n_neighbours``-nearest-neighbour graph within the process's shard."""
        vae = self.vae
        epochs = check_positive_int(epochs, "epochs", "joint", minimum=0)
        bs = check_positive_int(vae.batch_size if batch_size is None else batch_size, "batch_size", "joint")
        lr = check_positive_float(vae.lr if lr is None else lr, "lr", "joint")
        check_positive_float(kl_weight, "kl_weight", "joint", allow_zero=True)
        check_positive_float(neighbour_weight, "neighbour_weight", "joint", allow_zero=True)
        if neighbour_weight > 0:
            if bs < 2:
                raise ValueError("joint: neighbour_weight > 0 needs batch_size >= 2 "
                                 "(the minibatch gives the negatives)")
            nb = self.neighbours(n_neighbours, progress)
        prior = vae.joint_prior({})
        nets = [p for net in vae.joint_networks([self.D]) for p in net.parameters()]
        opt = torch.optim.Adam(nets, lr=lr)
        losses = []
        with self.program._shard_context():
            # sharded (a shard-holding program): the global minibatches over all N points, alike on
            # every rank; each rank its members (weighted by their share), gradients summed
            sharded = _dist.is_sharded()
            n, first, stop, shift = self.program._ownership(self.N) if sharded else (self.N, 0, self.N, 0)
            if sharded:
                _dist.broadcast_(nets)
            for _ in range(epochs):
                total = 0.0
                for b in torch.randperm(n).split(bs):
                    i = b[(b >= first) & (b < stop)] - shift
                    opt.zero_grad(set_to_none=True)
                    value = 0.0
                    if len(i):
                        with _dist.local_rng():  # draws shaped by the shard: the rank's own stream
                            loss = self._pretrain_loss(i, prior, kl_weight, neighbour_weight, nb if
                                                       neighbour_weight > 0 else None, negative_weight)
                        (loss * (len(i) / len(b))).backward()
                        value = float(loss.detach()) * len(i)
                    if sharded:
                        value = _dist.sum_gradients(nets, value)
                    opt.step()
                    total += value
                losses.append(total / n)
                _log.log(logging.INFO if progress else logging.DEBUG, "pretrain epoch %d: loss %.2f",
                         len(losses), losses[-1])
        self.pretrain_history_.extend(losses)
        if epochs:
            self._scale_untrained = kl_weight == 0  # the mean alone was trained
        return losses

    def start_encoder_scale(self, steps: int = 400, batch_size: int | None = None, lr: float = 0.1) -> list[float]:
        """Recipe step: fit the bias of the encoder's log-variance layer
        (:meth:`~serket_pyro.modules.vae.VAE.encoder_scale_bias`) to the ELBO, everything else
        fixed (:meth:`JointProgram.fit_parameters`, ``steps`` minibatches, Adam ``lr``).

        An autoencoder pretraining (``kl_weight=0``) trains the encoder's mean only, so its scale
        is still its initial value (about 1) whatever the latents' scale; after the
        neighbour-embedding pretraining the classes are several times narrower than that, and
        draws of ``z`` from such a ``q`` blur them: the first joint steps then merge classes.  The
        optimal common shift of ``log q``'s variances, given the start, removes that blur before
        the joint epochs.  :meth:`fit` runs this after the class start when the pretraining was an
        autoencoder's.  With an encoder whose scale layer is unknown (a user's network) nothing is
        fitted and a warning says so.  Returns the minibatch losses (mean negative ELBO per point)."""
        bias = self.vae.encoder_scale_bias()
        self._scale_untrained = False
        if bias is None:
            _log.warning("joint: %s's encoder (%s) has no log-variance layer that serket_pyro knows; its scale "
                         "starts as the pretraining left it", self.vae.name, type(self.vae.encoder_).__name__)
            return []
        bs = check_positive_int(self.vae.batch_size if batch_size is None else batch_size, "batch_size", "joint")
        losses = self.program.fit_parameters([bias], steps, batch_size=bs, lr=lr)
        _log.debug("joint: encoder scale start exp(bias / 2) = %s", (0.5 * bias.detach()).exp().tolist())
        return losses

    def _pretrain_loss(self, i, prior, kl_weight, neighbour_weight, nb, negative_weight) -> torch.Tensor:
        """Mean pretraining loss of this process's rows ``i`` ``(B,)`` (:meth:`pretrain`)."""
        vae = self.vae
        xb = self.program.observed(vae, 0, i)
        q = vae.joint_guide({}, {}, [xb])
        if kl_weight > 0:
            z = q.rsample()
            kl = kl_divergence(q, prior)
            loss = (-vae.joint_child_dist({}, z, 0).log_prob(xb) + kl_weight * kl).mean()
        else:
            loss = -vae.joint_child_dist({}, q.mean, 0).log_prob(xb).mean()
        if nb is not None and len(i) >= 2:
            j = nb[i, torch.randint(nb.shape[1], (len(i),))]
            loc_j = vae.joint_guide({}, {}, [self.program.observed(vae, 0, j)]).mean
            loss = loss + neighbour_weight * neighbour_embedding_loss(q.mean, loc_j, negative_weight)
        return loss

    # ------------------------------------------------------------------ recipe: class start
    def _like_training(self, x) -> torch.Tensor:
        """New data on the training data's scale (8-bit or [0, 1]), so the VAE reads them alike."""
        t = _as_2d(x)
        if t.shape[1] != self.D:
            raise ValueError(f"joint: new data have D={t.shape[1]}, the model was fitted on D={self.D}")
        if self.vae.likelihood != "bernoulli":
            return t
        t = t.double()
        eight = float(t.max()) > 1.0
        if eight and not self._eight_bit:
            return t / 255.0
        if self._eight_bit and not eight:
            return (t * 255.0).round()
        return t

    @torch.no_grad()
    def encode(self, batch_size: int = 2000, x=None) -> torch.Tensor:
        """Posterior means ``E q(z | x)``, ``(N, L)`` float32: of the training data, or of new data
        ``x`` (``(M, D)`` or images, read as the training data: scaled, deskewed)."""
        if x is None:
            return self.program.latent_means()[self.vae.name].float()
        with self.program.on_data({self._obs: self._like_training(x)}):
            return self.program.latent_means()[self.vae.name].float()

    @torch.no_grad()
    def predict(self, x=None) -> torch.Tensor:
        """``log p(c_n | x)``, ``(N, K)`` float64, with ``z_n = E q(z_n | x_n)``: GMM by Bayes'
        rule per point, Markov model by forward-backward over the whole sequence
        (:meth:`JointProgram.class_log_posterior`).  ``x``: new data ``(M, D)`` (in sequence
        order with a Markov model) classified with the fitted parameters; default the training data."""
        key = self.gmm.name if self.mm is None else self.mm.name
        if x is None:
            return self.program.class_log_posterior()[key]
        with self.program.on_data({self._obs: self._like_training(x)}):
            return self.program.class_log_posterior()[key]

    @torch.no_grad()
    def init_clusters(self, method: str = "kmeans", gmm_itr: int = 30, gmm_prior: str = "module") -> None:
        """Recipe step: start the class parameters from the latents ``E q(z | x)``.

        ``"kmeans"``: :func:`serket_pyro.ops.kmeans.kmeans` (greedy k-means++ seeding, best of 10
        starts); means, covariances (the data's for a class of at most ``L`` points) and
        weights come from the assignment.  ``"gmm"``: a :class:`~serket_pyro.modules.gmm.GMM`
        module with this GMM's hyperparameters run for ``gmm_itr`` Gibbs sweeps on the latents
        (files go to a temporary folder); its ``weights_``, ``means_`` and ``covariances_`` are
        taken over.  With a Markov model the transitions come from the counts of consecutive
        classes (plus 1).  ``"modules"``: the GMM's learned ``weights_``, ``means_``,
        ``covariances_`` and the Markov model's ``trans_prob_`` (message passing as
        pre-training: ``system.fit(...)`` first).  ``covariance="diag"`` keeps the variances.

        ``gmm_prior`` (``"gmm"`` only): ``"module"`` uses the GMM module's covariance prior;
        ``"neighbours"`` a strong one set by the latents' local scale, ``nu0 = L + 100`` and
        ``E[Sigma_k] = 4 v I`` with ``v`` the mean squared distance per dimension between each
        latent and its 10 nearest latents, halved (the module's prior is centred on the
        latents' total variance, which after neighbour-embedding pretraining is mostly the
        distance between classes: a broad class of scattered points is cheap).

        In a sharded fit (a program holding this process's rows) the start runs alike on every
        process on the latents of every point, gathered in row order."""
        K = self.K
        if method == "modules":
            self._init_from_modules()
            return
        if method not in ("kmeans", "gmm"):
            raise ValueError(f"joint: init must be 'kmeans', 'gmm' or 'modules', got {method!r}")
        if method == "gmm" and gmm_prior not in ("module", "neighbours"):
            raise ValueError(f"joint: gmm_prior must be 'module' or 'neighbours', got {gmm_prior!r}")
        with self.program._shard_context():  # sharded: every rank's latents, gathered in row order
            z = _dist.gather_rows(self.encode().double())
        with _dist.suspended():  # every rank runs the same start on the same latents
            lab = self._start_classes(z, method, gmm_prior, gmm_itr)
        if self.mm is not None:
            c = torch.bincount(lab[:-1] * K + lab[1:], minlength=K * K).reshape(K, K).double() + 1.0
            self.program.set_param(self.mm, "trans_prob", c / c.sum(1, keepdim=True))

    def _start_classes(self, z: torch.Tensor, method: str, gmm_prior: str, gmm_itr: int) -> torch.Tensor:
        """:meth:`init_clusters` on the latents ``z`` ``(N, L)`` of every point: sets the class
        Gaussians, returns the classes ``(N,)``."""
        K, L = self.K, self.L
        if method == "kmeans":
            lab = kmeans(z, K, n_init=10, max_iter=20).labels
            counts = torch.bincount(lab, minlength=K).double()
            mean = z.new_zeros(K, L).index_add_(0, lab, z) / counts.clamp_min(1)[:, None]
            mean = torch.where(counts[:, None] > 0, mean, z.mean(0))
            dev = z - mean[lab]
            scatter = z.new_zeros(K, L, L).index_add_(0, lab, dev.unsqueeze(-1) * dev.unsqueeze(-2))
            cov = torch.where(counts[:, None, None] > L, scatter / counts.clamp_min(1)[:, None, None],
                              torch.cov(z.T).reshape(L, L).expand(K, L, L))  # too few points: the data's
            self.set_gaussians(mean, cov + 1e-4 * torch.eye(L, dtype=z.dtype), (counts + 1) / (counts.sum() + K))
        else:
            g0 = self.gmm
            if gmm_prior == "module":
                prior = dict(nu0=g0.nu0, psi0=g0.psi0, prior_scale=g0.prior_scale)
            else:
                nb = knn_graph(z, min(10, z.shape[0] - 1))
                v = float((z.unsqueeze(1) - z[nb]).pow(2).sum(-1).mean()) / (2 * L)
                nu0 = L + 100
                prior = dict(nu0=nu0, psi0=(nu0 - L - 1) * 4.0 * v, prior_scale="absolute")
            with tempfile.TemporaryDirectory() as tmp:
                g = GMM(K, itr=gmm_itr, alpha=g0.alpha, kappa0=g0.kappa0, device=z.device, output_root=tmp, **prior)
                g.connect(Observation(z.cpu()))
                g.update()
                lab = g.class_log_posterior(z).argmax(-1).cpu()
                self.set_gaussians(g.means_, g.covariances_, g.weights_)
        return lab

    def _init_from_modules(self) -> None:
        gmm, mm = self.gmm, self.mm
        if gmm.means_ is None or tuple(gmm.means_.shape) != (self.K, self.L):
            raise ValueError("joint: init='modules' needs a GMM fitted on this VAE's latents "
                             f"(means_ of shape {(self.K, self.L)}); run the message-passing system first")
        if mm is not None and mm.trans_prob_ is None:
            raise ValueError("joint: init='modules' needs a fitted Markov model (trans_prob_); "
                             "run the message-passing system first")
        if self.vae.encoder_ is None or not self.vae.loss_history_:
            raise ValueError("joint: init='modules' needs a trained VAE; run the message-passing system first")
        self.set_gaussians(gmm.means_.cpu(), gmm.covariances_.cpu(), gmm.weights_.cpu())
        if mm is not None:
            A = mm.trans_prob_.double().cpu().clamp_min(1e-12)
            self.program.set_param(mm, "trans_prob", A / A.sum(-1, keepdim=True))

    # ------------------------------------------------------------------ fitting
    def fit(self, epochs: int = 100, *, pretrain_epochs: int = 0, init: str | None = "kmeans",
            batch_size: int | None = None, lr: float | None = None, lr_global: float | None = None,
            pretrain_kl_weight: float = 1.0, pretrain_neighbour_weight: float = 0.0, n_neighbours: int = 10,
            gmm_prior: str = "module", category=None, eval_every: int = 0, progress: bool = False) -> list[float]:
        """The recipe: pretraining, class start (and the encoder's scale after an autoencoder's
        pretraining), then the program's joint epochs.

        Args:
            epochs: joint epochs (passes over the data) of :meth:`JointProgram.fit`.
            pretrain_epochs: epochs of the VAE alone first (:meth:`pretrain`, with
                ``pretrain_kl_weight``; 0 pretrains a plain autoencoder as VaDE, and the encoder's
                scale is then fitted after the class start: :meth:`start_encoder_scale`).
            pretrain_neighbour_weight, n_neighbours: neighbour-embedding term of the pretraining
                (:meth:`pretrain`'s ``neighbour_weight``; 0, the default, is VaDE's pretraining).
            gmm_prior: covariance prior of the ``init="gmm"`` start (:meth:`init_clusters`).
            init: ``"kmeans"``/``"gmm"`` starts the class parameters from the (pretrained)
                latents, ``"modules"`` from the fitted GMM / Markov model (:meth:`init_clusters`);
                ``None`` keeps them.
            batch_size: points per minibatch (default the VAE's; with a Markov model,
                ``batch_size // chunk_len`` chunks).
            lr: Adam learning rate of the networks (default the VAE's); ``lr_global`` of the class
                parameters (default ``lr``).
            category: true labels to record the accuracy every ``eval_every`` epochs in
                ``accuracy_history_`` and that of the start in ``init_accuracy_`` (default the
                GMM's ``category``).
            progress: log each epoch's loss (and accuracy) at INFO on the ``serket_pyro`` logger.
        Returns the epoch losses (mean negative ELBO per point)."""
        from ..metrics import accuracy

        epochs = check_positive_int(epochs, "epochs", "joint", minimum=0)
        pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs", "joint", minimum=0)
        eval_every = check_positive_int(eval_every, "eval_every", "joint", minimum=0)
        n_neighbours = check_positive_int(n_neighbours, "n_neighbours", "joint")
        bs = check_positive_int(self.vae.batch_size if batch_size is None else batch_size, "batch_size", "joint")
        lr = check_positive_float(self.vae.lr if lr is None else lr, "lr", "joint")
        lr_g = check_positive_float(lr if lr_global is None else lr_global, "lr_global", "joint")
        category = self.gmm.category if category is None else np.asarray(category)
        level = logging.INFO if progress else logging.DEBUG
        if pretrain_epochs:
            self.pretrain(pretrain_epochs, bs, lr, progress, pretrain_kl_weight,
                          neighbour_weight=pretrain_neighbour_weight, n_neighbours=n_neighbours)
        if init is not None:
            self.init_clusters(init, gmm_prior=gmm_prior)
        if self._scale_untrained:  # an autoencoder's pretraining left the encoder's scale untrained
            self.start_encoder_scale(batch_size=bs)

        def score():  # sharded: every rank's points (labels and classes gathered in row order)
            with self.program._shard_context():
                pred = _dist.gather_rows(self.predict().argmax(-1).cpu().numpy())
                return float(accuracy(_dist.gather_rows(np.asarray(category)), pred))

        self.init_accuracy_ = score() if category is not None and eval_every else None
        if self.init_accuracy_ is not None:
            _log.log(level, "initial clusters: acc %.4f", self.init_accuracy_)
        self.accuracy_history_ = []

        def record(ep, loss):
            if category is not None and eval_every and ep % eval_every == 0:
                self.accuracy_history_.append(score())
                _log.log(level, "epoch %d: loss %.2f acc %.4f", ep, loss, self.accuracy_history_[-1])

        losses = self.program.fit(epochs, batch_size=bs, lr=lr_g, lr_networks=lr, progress=progress, callback=record)
        self.loss_history_.extend(losses)
        return losses

    @torch.no_grad()
    def to_modules(self) -> None:
        """Hand the jointly learned parameters back to the modules (:meth:`JointProgram.to_modules`):
        the GMM's ``weights_``, ``means_``, ``covariances_`` and ``assignments_``; the Markov
        model's ``trans_prob_`` (uniform ``init_prob_``, ``evidence_noise_`` 0); the VAE's networks
        are the ones trained.  Running the modules afterwards (``mode="recog"``, or a warm-started
        ``"learn"``) starts from them."""
        self.program.to_modules()


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
