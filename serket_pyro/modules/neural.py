"""A supervised network between two modules: the original Serket's ``nn.NN`` and ``torch_nn.TorchNN``.

``nn1.connect(gmm1, obs2)``: the first child sends class probabilities ``p_n`` (``(N, K)``, e.g.
the GMM's classes of images), the second an observation ``y_n`` (``(N, D)``, e.g. speech
features of the same data points).  The module learns a network ``f`` from classes to the
observation and sends the first child what ``y_n`` says about its class.  Generative model
(``backward="likelihood"``, default)::

    z_n ~ Categorical(p_n)                          # the first child's classes (its own evidence)
    y_n | z_n = k ~ Normal(f(e_k), diag(sigma^2))   # e_k: one-hot of class k, f: the network
    (likelihood="poisson": y_nd | z_n = k ~ Poisson(exp(f(e_k)_d)), counts)

Learning (one :meth:`NN.update`) is EM for ``f`` and ``sigma`` with ``p_n`` as the prior of
``z_n``: E-step, the posterior ``r_nk`` proportional to ``p_nk N(y_n | f(e_k), diag(sigma^2))`` (``r = p``
before the first fit); M-step, Adam over minibatches of ``batch_size1`` on the expected squared
error ``sum_k r_nk ||y_n - f(e_k)||^2`` (the original's squared-error loss), then the
maximum-likelihood ``sigma_d^2 = sum_nk r_nk (y_nd - f(e_k)_d)^2 / N`` per dimension (``noise="diagonal"``,
default; ``"isotropic"``: their mean, ``sum_nk r_nk ||y_n - f(e_k)||^2 / (N D)``); ``min(10, itr1)`` E-steps
share the ``itr1`` epochs.  Learning from ``r`` rather than ``p`` matters: ``p`` (the parent's own
evidence, without this module's message) may be a poor labelling, and class means learned from it
alone stay blurred.

Backward message to the first child, for every data point, the likelihood of its observation
under each class, normalised over classes::

    m_n(k) = p(y_n | z_n = k) / sum_j p(y_n | z_n = j) = softmax_k(-sum_d (y_nd - f(e_k)_d)^2 / (2 sigma_d^2))

(Poisson: ``softmax_k(y_n . f(e_k) - sum_d exp(f(e_k)_d))``, and the M-step's loss is the Poisson
negative log-likelihood), so that the parent's posterior over ``z_n`` combining both pieces of
evidence is ``P(z_n = k | x_n, y_n)`` proportional to ``P(z_n = k | x_n) m_n(k)`` (the product rule the GMM
applies to a parent's message).  The forward message (to a parent, if any) is the same ``m_n``.
The message is sent only when the class model explains ``y`` better than one distribution for
all points (marginal likelihood with ``p_n`` as the class prior, metric ``log_evidence_ratio``);
otherwise it is flat (no information, the parent's update is the one without it), so that an
untrained or unsuitable network cannot mislead the parent.

``backward="original"`` runs the original's algorithm instead: ``f`` is a regression
``f(p_n) ~ y_n`` (squared error), then, with ``f`` frozen, weights ``w (N, K)`` are learned for
``itr2`` epochs (minibatches of ``batch_size2``) so that ``f(softmax(w_n) * p_n) ~ y_n``, and the
message is ``softmax(w_n)`` (a heuristic with no probabilistic reading; kept for comparison).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..messages import ClassProbs, PointMessage
from ..module import Module
from ..safe_files import check_loaded_finite
from ..validation import check_device, check_positive_float, check_positive_int

__all__ = ["NN", "TorchNN", "StandardisedMLP"]

_BACKWARDS = ("likelihood", "original")
_LIKELIHOODS = ("gaussian", "poisson")


class StandardisedMLP(nn.Module):
    """The built-in network: ``input_dim - hidden (relu) - output_dim`` (the original examples'
    ``h_dim = 64``), whose output is ``loc + scale * mlp(x)`` with the observation's per-dimension
    mean and standard deviation (buffers), so that training starts at the data's scale; the last
    layer starts near zero, so that every class starts near ``loc`` (a nearly flat message before
    training).

    ``forward(x)``: ``x: (B, input_dim)`` -> ``(B, output_dim)``.
    """

    def __init__(self, input_dim: int, output_dim: int, hidden: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Linear(hidden, output_dim))
        with torch.no_grad():  # every class starts near loc: little class information before training
            self.mlp[2].weight.mul_(0.01)
            self.mlp[2].bias.zero_()
        self.register_buffer("loc", torch.zeros(output_dim))
        self.register_buffer("scale", torch.ones(output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.loc + self.scale * self.mlp(x)


class NN(Module):
    """The original's ``nn.NN``: a network from the first child's classes to the second child's
    observation, sending the first child the observation's class likelihood.

    Parameters
    ----------
    itr1 : int, default 5000
        Epochs of training the network per update.
    itr2 : int, default 5000
        Epochs of learning the message weights per update (``backward="original"`` only; the
        default message is exact and needs no optimisation).
    name : str, default 'nn'
        Short name (``module%03d_<name>``).
    batch_size1, batch_size2 : int or None, default None
        Minibatch sizes of the two optimisations; ``None``: all points in one batch.
    mode : {'learn', 'recog'}, default 'learn'
        ``"recog"``: the network and ``sigma`` are frozen (learned or loaded).
    lr : float, default 0.001
        Adam learning rate (the original's Adam default); with ``backward="likelihood"`` it is
        cosine-annealed to 0 over each update's ``itr1`` epochs, so the fit ends at the optimum.
    hidden : int, default 64
        Hidden width of the built-in network (:class:`StandardisedMLP`).
    backward : {'likelihood', 'original'}, default 'likelihood'
        The message to the first child: the class likelihood (module docstring) or the original's
        learned weights.
    noise : {'diagonal', 'isotropic'}, default 'diagonal'
        Gaussian noise: one variance per dimension (``sigma_d``; dimensions with more noise count
        less) or one for all (the original's plain squared error).
    likelihood : {'gaussian', 'poisson'}, default 'gaussian'
        Observation model of ``y_n`` given the class: ``"gaussian"``, ``Normal(f(e_k), diag(sigma^2))``
        (``noise``: ``sigma`` per dimension or one; the squared error, the original's loss), or ``"poisson"``, independent counts with
        log-rates ``f(e_k)`` (for count features such as HAC histograms, where the squared error
        treats the sparse, correlated counts as equally informative Gaussian dimensions).
    device : str or torch.device, optional
        Torch device (CPU by default); messages are float64 on the CPU.
    output_root : str or os.PathLike, optional
        Folder for this module's output folder.

    Notes
    -----
    Subclass hook: :meth:`build_model` ``(self, input_dim, output_dim)`` returning a
    ``torch.nn.Module`` from ``(B, input_dim)`` class vectors to ``(B, output_dim)`` observations.
    The original's TensorFlow hook ``model(self, x, y, input_dim, output_dim)`` cannot run here
    and is refused at construction, naming the torch hook to write.

    Messages: children ``(classes, observation)``; the first child's message is class
    probabilities (a :class:`~serket_pyro.messages.ClassProbs`, or a point message of
    non-negative rows, normalised), the second a point message ``(N, D)``.  Backward: ``[ClassProbs (N, K), None]``; forward: the same ClassProbs.

    Files (``<output_root>/module%03d_nn/[iteration/]``): ``message_<mode>.txt`` (N x K, the
    backward message, as the original), ``class_means_<mode>.txt`` (K x D, ``f(e_k)``;
    likelihood mode), in learning mode ``loss_learn.txt`` (the mean loss of each epoch) and
    ``model.pt`` / ``model.json`` (:meth:`state_dict`, plain tensors; :meth:`load_model`).

    Learned state: ``network_`` (module), ``noise_scale_`` (sigma ``(D,)``; 1 for Poisson), ``input_dim_`` (K),
    ``output_dim_`` (D), ``loss_history_``.
    """

    input_kinds = (ClassProbs, PointMessage)
    _fitted = ("network_", "noise_scale_", "input_dim_", "output_dim_", "loss_history_")
    #: the contract test's inputs: one child sending each kind, in order
    test_input_kinds = (ClassProbs, PointMessage)
    test_args = {"itr1": 3, "itr2": 3, "batch_size1": 8}

    def __init__(self, itr1=5000, itr2=5000, name="nn", batch_size1=None, batch_size2=None, mode="learn", *,
                 lr=1e-3, hidden=64, backward="likelihood", likelihood="gaussian", noise="diagonal", device=None,
                 output_root=None):
        super().__init__(name, output_root=output_root)
        self.itr1 = check_positive_int(itr1, "itr1", self.name)
        self.itr2 = check_positive_int(itr2, "itr2", self.name)
        self.batch_size1 = None if batch_size1 is None else check_positive_int(batch_size1, "batch_size1", self.name)
        self.batch_size2 = None if batch_size2 is None else check_positive_int(batch_size2, "batch_size2", self.name)
        self.mode = mode
        self.lr = check_positive_float(lr, "lr", self.name)
        self.hidden = check_positive_int(hidden, "hidden", self.name)
        self.backward = self._check_choice(backward, "backward", _BACKWARDS)
        self.likelihood = self._check_choice(likelihood, "likelihood", _LIKELIHOODS)
        self.noise = self._check_choice(noise, "noise", ("diagonal", "isotropic"))
        if self.backward == "original" and self.likelihood != "gaussian":
            raise ValueError(f"{self.name}: backward='original' (the original's message) uses the squared error: "
                             "it needs likelihood='gaussian'")
        self.device = check_device(device)
        if callable(getattr(type(self), "model", None)):
            raise ValueError(
                f"{self.name}: {type(self).__name__}.model(self, x, y, input_dim, output_dim) is the original's "
                "TensorFlow form, which cannot run in serket-pyro (torch). Override build_model(self, input_dim, "
                "output_dim) returning a torch.nn.Module that maps (B, input_dim) class vectors to (B, output_dim) "
                "observations (the loss is the squared error, as the original's)")

        self.network_: nn.Module | None = None
        self.noise_scale_: torch.Tensor | None = None  # (D,)
        self.input_dim_: int | None = None
        self.output_dim_: int | None = None
        self.loss_history_: list[float] = []

    # ------------------------------------------------------------------ the user's network
    def build_model(self, input_dim, output_dim):
        """Override to use your own network (the original's ``TorchNN.build_model``).

        Returns a ``torch.nn.Module`` mapping ``(B, input_dim)`` class vectors (one-hot in the
        likelihood mode, the class probabilities in the original mode) to ``(B, output_dim)``
        predictions of the observation; ``None`` (this base method): :class:`StandardisedMLP`.
        """
        return None

    def _build(self, K: int, D: int, y: torch.Tensor | None) -> None:
        call = f"{type(self).__name__}.build_model(input_dim={K}, output_dim={D})"
        try:
            net = self.build_model(K, D)
        except Exception as e:  # the user's code: say which hook failed and what it must return
            raise ValueError(f"{self.name}: {call} failed ({type(e).__name__}: {e}); it must return a "
                             f"torch.nn.Module mapping (B, {K}) to (B, {D})") from e
        if net is None:
            net = StandardisedMLP(K, D, self.hidden)
            if y is not None and self.likelihood == "poisson":  # log-rates around the log of the mean counts
                net.loc.copy_(y.mean(0).clamp_min(1e-3).log())
            elif y is not None:
                net.loc.copy_(y.mean(0))
                net.scale.copy_(y.std(0, unbiased=False).clamp_min(1e-6) if y.shape[0] > 1 else torch.ones(D))
        elif not isinstance(net, nn.Module):
            raise ValueError(f"{self.name}: {call} returned a {type(net).__name__}; it must return a torch.nn.Module "
                             f"mapping (B, {K}) to (B, {D})")
        net = net.to(self.device)
        p = next(net.parameters(), None)
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out = net(torch.eye(K, dtype=dtype, device=self.device))
        except Exception as e:
            raise ValueError(f"{self.name}: the network of {call} fails on a batch of shape ({K}, {K}) "
                             f"({type(e).__name__}: {e})") from e
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (K, D):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.name}: the network of {call} returns {got} for a batch of {K}; "
                             f"it must return a tensor of shape (B, {D})")
        self.network_, self.input_dim_, self.output_dim_ = net, K, D
        self._dtype = dtype

    # ------------------------------------------------------------------ inputs
    def _read_inputs(self):
        """``(p (N, K), y (N, D))`` float64 on the CPU, validated."""
        obs = self.get_observations()
        if len(obs) != 2:
            raise ValueError(f"{self.name} takes two children (the classes, then the observation), got {len(obs)}")
        (c0, c1), (m0, m1) = self.children, obs
        if isinstance(m0, ClassProbs):
            p = m0.probs.detach().to(torch.float64).cpu()
        elif isinstance(m0, PointMessage):
            p = m0.value.detach().to(torch.float64).cpu()
            if p.dim() != 2 or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or \
                    bool((p.sum(-1) <= 0).any()):
                raise ValueError(f"{self.name}: the first child {c0.name} must send class probabilities (N, K), "
                                 "non-negative rows with a positive sum")
            p = p / p.sum(-1, keepdim=True)
        else:
            raise ValueError(f"{self.name}: the first child {c0.name} must send class probabilities, "
                             f"got a {m0.kind} message")
        if isinstance(m1, PointMessage):
            y = m1.value
        else:
            raise ValueError(f"{self.name}: the second child {c1.name} must send an observation (N, D), "
                             f"got a {m1.kind} message")
        y = y.detach().to(torch.float64).cpu()
        if y.dim() != 2:
            raise ValueError(f"{self.name}: the observation from {c1.name} must be N x D, got shape {tuple(y.shape)}")
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{self.name}: the observation from {c1.name} contains NaN or infinite values")
        if self.likelihood == "poisson" and bool((y < 0).any()):
            raise ValueError(f"{self.name}: likelihood='poisson' needs non-negative counts, but the observation from "
                             f"{c1.name} has negative values; use likelihood='gaussian'")
        if p.shape[0] != y.shape[0]:
            raise ValueError(f"{self.name}: {c0.name} sends {p.shape[0]} data points, {c1.name} {y.shape[0]}")
        if self.network_ is not None and (p.shape[1], y.shape[1]) != (self.input_dim_, self.output_dim_):
            raise ValueError(f"{self.name}: the network was built for K={self.input_dim_} classes and "
                             f"D={self.output_dim_} dimensions, the children send K={p.shape[1]}, D={y.shape[1]}")
        return p, y

    # ------------------------------------------------------------------ learning
    def _batches(self, N: int, size: int | None):
        return torch.randperm(N, device=self.device).split(N if size is None else size)

    def _expected_loss(self, r, y, F) -> torch.Tensor:
        """``sum_k r_nk loss(y_n, F_k)`` per point ``(B,)`` (``F = f(I_K)``, ``(K, D)``): the squared
        error ``||y_n - F_k||^2`` (Gaussian) or the Poisson negative log-likelihood with log-rates
        ``F_k``, ``sum_d exp(F_kd) - y_nd F_kd`` (without ``log y_nd!``)."""
        if self.likelihood == "poisson":
            return r @ F.exp().sum(-1) - (r * (y @ F.T)).sum(-1)
        return (y.pow(2).sum(-1) - 2 * (r * (y @ F.T)).sum(-1) + r @ F.pow(2).sum(-1))

    def _class_means(self) -> torch.Tensor:
        K = self.input_dim_
        return self.network_(torch.eye(K, dtype=self._dtype, device=self.device))

    def _log_likelihood(self, y, F) -> torch.Tensor:
        """``log p(y_n | z_n = k)`` up to a constant per point, ``(N, K)``: ``-||y_n - F_k||^2 /
        (2 sigma^2)`` (Gaussian) or ``y_n . F_k - sum_d exp(F_kd)`` (Poisson, log-rates ``F_k``)."""
        if self.likelihood == "poisson":
            return y @ F.T - F.exp().sum(-1)
        w = 0.5 / self.noise_scale_.to(y).pow(2)  # (D,)
        sq = y.pow(2) @ w.unsqueeze(-1) - 2 * (y * w) @ F.T + F.pow(2) @ w  # (N, K): sum_d w_d (y - F)^2
        return -sq.clamp_min(0)

    def _responsibilities(self, p, y) -> torch.Tensor:
        """E-step: the posterior ``r_nk`` proportional to ``p_nk p(y_n | z_n = k)`` under the current
        network and sigma (``p`` itself before the first fit)."""
        if self.noise_scale_ is None:
            return p
        with torch.no_grad():
            return torch.softmax(p.clamp_min(torch.finfo(p.dtype).tiny).log()
                                 + self._log_likelihood(y, self._class_means()), -1)

    def _infer(self, inputs, backward) -> None:
        """``backward="likelihood"``: EM for ``f`` and sigma, the first child's ``p`` as the prior of
        the classes: ``rounds = min(10, itr1)`` E-steps (responsibilities ``r``), each followed by
        ``itr1 / rounds`` epochs of Adam (its rate cosine-annealed from ``lr`` to 0 over the ``itr1``
        epochs) on ``sum_k r_nk ||y_n - f(e_k)||^2`` and the maximum-likelihood
        sigma.  ``"original"``: ``itr1`` epochs of the regression ``f(p_n) ~ y_n``."""
        p64, y64 = inputs
        N, K = p64.shape
        D = y64.shape[1]
        if self.network_ is None:
            self._build(K, D, y64.to(self.device))
        p = p64.to(device=self.device, dtype=self._dtype)
        y = y64.to(device=self.device, dtype=self._dtype)
        net = self.network_
        net.train()
        opt = torch.optim.Adam([q for q in net.parameters() if q.requires_grad], lr=self.lr)
        likelihood = self.backward == "likelihood"
        losses = []
        rounds = np.array_split(np.arange(self.itr1), min(10, self.itr1) if likelihood else 1)
        for epochs in rounds:
            r = self._responsibilities(p, y) if likelihood else None
            for epoch in epochs:
                if likelihood:  # cosine-annealed to 0: Adam at a constant rate jitters around the optimum
                    opt.param_groups[0]["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.itr1))
                total = 0.0
                for idx in self._batches(N, self.batch_size1):
                    if likelihood:
                        loss = self._expected_loss(r[idx], y[idx], self._class_means()).mean() / D
                    else:
                        loss = (net(p[idx]) - y[idx]).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * idx.shape[0]
                losses.append(total / N)
            with torch.no_grad():
                if self.likelihood == "poisson":
                    var = torch.ones(D, dtype=self._dtype)  # no noise parameter: 1 by convention
                elif likelihood:
                    F = self._class_means()
                    var = ((r.T @ y.pow(2)) - 2 * F * (r.T @ y) + F.pow(2) * r.sum(0).unsqueeze(-1)).sum(0) / N
                else:
                    var = (net(p) - y).pow(2).mean(0)
            self.noise_scale_ = self._noise(var).sqrt().detach().cpu().double()
        net.eval()
        self._losses = losses
        self.loss_history_.extend(losses)

    def _noise(self, var: torch.Tensor) -> torch.Tensor:
        """Per-dimension variances ``(D,)``: as estimated (``noise="diagonal"``) or their mean
        (``"isotropic"``), floored at 1e-3 of their mean (constant dimensions)."""
        var = var.clamp_min(0)
        floor = (var.mean() * 1e-3).clamp_min(torch.finfo(var.dtype).tiny)
        if self.noise == "isotropic":
            return var.mean().clamp_min(floor).expand(var.shape).clone()
        return var.clamp_min(floor)

    def _recognise(self, inputs, backward) -> None:
        if self.network_ is None:
            raise ValueError(f"{self.name}: mode='recog' needs a trained network: update() in mode='learn' first, "
                             "or load_state_dict() / load_graph()")

    def _original_message(self, p, y) -> torch.Tensor:
        """The original's message: ``softmax(w)`` with ``f(softmax(w_n) * p_n) ~ y_n``, ``(N, K)``."""
        N, K = p.shape
        net = self.network_
        for q in net.parameters():
            q.requires_grad_(False)
        w = torch.zeros(N, K, dtype=self._dtype, device=self.device, requires_grad=True)
        opt = torch.optim.Adam([w], lr=self.lr)
        try:
            for _ in range(self.itr2):
                for idx in self._batches(N, self.batch_size2):
                    loss = (net(torch.softmax(w[idx], -1) * p[idx]) - y[idx]).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        finally:
            for q in net.parameters():
                q.requires_grad_(True)
        return torch.log_softmax(w.detach(), -1)

    def _forward_message(self, inputs, backward) -> ClassProbs:
        """The class likelihood of the observation ``m_n(k)`` (module docstring), ``(N, K)``."""
        p64, y64 = inputs
        p = p64.to(device=self.device, dtype=self._dtype)
        y = y64.to(device=self.device, dtype=self._dtype)
        self._means = None
        self._evidence = {}
        if self.backward == "likelihood":
            with torch.no_grad():
                F = self._class_means()
                log_m = self._log_likelihood(y, F).double()
                self._evidence = self._model_evidence(p.double(), y.double(), F.double(), log_m)
            self._means = F.detach().cpu().double()
            if self._evidence["log_evidence_ratio"] <= 0:
                log_m = torch.zeros_like(log_m)  # the classes do not explain y: no information
        else:
            log_m = self._original_message(p, y).double()
        log_m = log_m.cpu()
        if not bool(torch.isfinite(log_m).all()):
            raise ValueError(f"{self.name}: the network gives NaN or infinite predictions (training diverged?); "
                             "standardise the observation or lower lr")
        self._message = ClassProbs(log_m)
        return self._message

    def _model_evidence(self, p, y, F, log_m) -> dict:
        """``log p(y | class model) - log p(y | no class)`` (nats, summed over points): the
        marginal likelihood of the observation with the parent's class probabilities as the prior,
        ``sum_n log sum_k p_nk p(y_n | z_n = k)``, against the model without classes (one mean /
        rate vector for all points, fitted by maximum likelihood).  A class model that does not beat
        it (e.g. an untrained network) would send a confident message without a basis."""
        N, D = y.shape
        if self.likelihood == "poisson":
            mu = y.mean(0).clamp_min(torch.finfo(y.dtype).tiny)
            null = float((y @ mu.log() - mu.sum()).sum())
            full = log_m  # y . log rate - sum rate (the log y! terms cancel)
        else:
            s0 = self._noise((y - y.mean(0)).pow(2).mean(0))
            null = float(-0.5 * ((y - y.mean(0)).pow(2) / s0).sum() - 0.5 * N * (2 * math.pi * s0).log().sum())
            full = log_m - 0.5 * float((2 * math.pi * self.noise_scale_.pow(2)).log().sum())
        marginal = float(torch.logsumexp(p.clamp_min(torch.finfo(p.dtype).tiny).log() + full, -1).sum())
        return {"log_evidence_ratio": marginal - null}

    def _backward_messages(self, inputs, backward) -> list:
        return [self._message, None]

    def _write_outputs(self, w, inputs, backward) -> None:
        m = self.mode
        w.savetxt(f"message_{m}.txt", self._message.probs)
        if self._means is not None:
            w.savetxt(f"class_means_{m}.txt", self._means, fmt="%.6g")
        if m == "learn":
            w.savetxt("loss_learn.txt", np.asarray(self._losses, dtype=np.float64))

    def _metrics(self, inputs, backward) -> dict:
        if self.mode != "learn":
            return dict(self._evidence)
        return {"loss": float(self._losses[-1]), "noise_scale": float(self.noise_scale_.mean()),
                **self._evidence}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """``input_dim``, ``output_dim``, ``noise_scale``, ``loss_history`` and ``network.<name>``
        (parameters and buffers) as CPU tensors; empty before learning."""
        if self.network_ is None:
            return {}
        out = {"input_dim": torch.tensor([self.input_dim_]), "output_dim": torch.tensor([self.output_dim_]),
               "noise_scale": self.noise_scale_.clone(),
               "loss_history": torch.tensor(self.loss_history_, dtype=torch.float64)}
        out.update({f"network.{k}": v.detach().cpu().clone() for k, v in self.network_.state_dict().items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (the network is built by :meth:`build_model` first)."""
        if not state:
            return
        try:
            K = int(state["input_dim"].reshape(-1)[0])
            D = int(state["output_dim"].reshape(-1)[0])
            sigma = state["noise_scale"].detach().cpu().double().reshape(-1)
        except KeyError as e:
            raise ValueError(f"{self.name}: not an NN state dict (missing {e})") from None
        check_loaded_finite(state, self.name, skip=("loss_history",))
        if K < 1 or D < 1 or sigma.shape != (D,) or not bool((sigma > 0).all()):
            raise ValueError(f"{self.name}: loaded input_dim {K}, output_dim {D} and noise_scale (D,) = "
                             f"{tuple(sigma.shape)} must be positive"
                             "positive")
        if self.network_ is None or (self.input_dim_, self.output_dim_) != (K, D):
            self._build(K, D, None)
        sub = {k[len("network."):]: v for k, v in state.items() if k.startswith("network.")}
        try:
            self.network_.load_state_dict(sub)
        except RuntimeError as e:
            raise ValueError(f"{self.name}: the saved network does not match this module's: {e}") from None
        self.noise_scale_ = sigma
        self.loss_history_ = [float(v) for v in state.get("loss_history", torch.zeros(0)).tolist()]


class TorchNN(NN):
    """The original's ``torch_nn.TorchNN`` (2023): :class:`NN` with the torch version's signature.

    ``TorchNN(batch_size1, batch_size2, itr1=5000, itr2=5000, lr=1e-3, device="cpu", name="nn",
    load_dir=None)``; the subclass defines :meth:`build_model` ``(self, input_dim, output_dim)``
    returning a ``torch.nn.Module``.  ``load_dir``: the original's recognition from the model files
    a learning update wrote (:meth:`~serket_pyro.module.Module.load_model`, then
    ``mode="recog"``).  Everything else is :class:`NN`'s.
    """

    test_args = {"batch_size1": 8, "batch_size2": 8, "itr1": 3, "itr2": 3}

    def __init__(self, batch_size1, batch_size2, itr1=5000, itr2=5000, lr=1e-3, device="cpu", name="nn",
                 load_dir=None):
        super().__init__(itr1, itr2, name, batch_size1, batch_size2, lr=lr, device=device)
        self.load_dir = load_dir
        if load_dir is not None:  # the base class's model files: learned state, mode="recog"
            self.load_model(load_dir)

    def tensor(self, x):
        """The original's helper: ``x`` as a float32 tensor on the module's device."""
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def numpy(self, x):
        """The original's helper: a tensor as a numpy array."""
        return x.detach().cpu().numpy()
