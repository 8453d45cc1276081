"""Variational autoencoder module (the VAE of Serket), written as a Pyro submodel.

The VAE maps each data point to a latent vector that it sends up (a Gaussian message) and takes
its parent's backward message as the prior of that vector.  Generative model for data point
``n`` (``D`` observed dimensions, ``L = latent_dim``)::

    z_n ~ Normal(prior_loc_n, prior_scale_n)            # (L,), the parent's (GMM's) backward message
    x_n ~ Bernoulli(logits=decoder(z_n))                 # (D,), pixels in [0, 1]   (likelihood="bernoulli")
    x_n ~ Normal(decoder_loc(z_n), decoder_scale)        # (D,), real-valued data   (likelihood="gaussian")

with the amortised guide ``q(z_n | x_n) = Normal(encoder_loc(x_n), encoder_scale(x_n))``.  Without
a backward message the prior is the standard Normal.

Inference (:meth:`VAE.update`) maximises the evidence lower bound by stochastic variational
inference over shuffled minibatches [1]_ [2]_, minimising per minibatch the mean per-point
``-log p(x_n | z_n) + kl_weight * KL(q(z_n | x_n) || p(z_n))`` as the original.
``elbo="analytic"`` (default) writes that estimator by hand (one reparameterised draw, the
closed-form KL, as :class:`pyro.infer.TraceMeanField_ELBO`); ``elbo="pyro"`` runs
:class:`pyro.infer.SVI` with :class:`pyro.infer.Trace_ELBO` on :meth:`VAE.model` and
:meth:`VAE.guide`.  Networks and Adam state persist between outer iterations (warm start).  The
README's design notes compare the two estimators.

References
----------
.. [1] D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014.
.. [2] D. J. Rezende, S. Mohamed, D. Wierstra, "Stochastic backpropagation and approximate
   inference in deep generative models", ICML 2014.
.. [3] T. Nakamura, T. Nagai, T. Taniguchi, "SERKET: An architecture for connecting stochastic
   models to realize a large-scale cognitive model", Frontiers in Neurorobotics 12:25, 2018.
"""

from __future__ import annotations

import copy
import inspect
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.nn import PyroModule

from .. import distributed as _dist
from ..features.deskew import deskew as deskew_images
from ..messages import GaussianMessage, PointMessage
from ..module import Module
from ..original_api import VAE_API
from ..output import OutputWriter
from ..safe_files import check_loaded_finite
from ..validation import check_device, check_memory, check_positive_float, check_positive_int

__all__ = ["VAE", "Encoder", "Decoder", "GaussianDecoder", "MLPEncoder", "LogVarEncoder", "FixedScaleDecoder",
           "mlp_networks", "normal_kl"]

_LIKELIHOODS = ("bernoulli", "gaussian")
_FORWARDS = ("mean", "sample")
_ELBOS = ("analytic", "pyro")


# --------------------------------------------------------------------------- networks
class Encoder(PyroModule):
    """Amortised posterior ``q(z | x)``: ``D - hidden (relu) - L`` for the mean and the log variance.

    Args:
        input_dim: ``D``.
        latent_dim: ``L``.
        hidden: width of the hidden layer (128 in the original).
        name: Pyro name prefix of the parameters in the param store.

    ``forward(x)``: ``x: (B, D)`` -> ``(loc, scale)``, both ``(B, L)``, ``scale = exp(logvar / 2)``.
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden: int = 128, name: str = ""):
        super().__init__(name)
        self.fc1 = PyroModule[nn.Linear](input_dim, hidden)
        self.fc_loc = PyroModule[nn.Linear](hidden, latent_dim)
        self.fc_logvar = PyroModule[nn.Linear](hidden, latent_dim)

    def forward(self, x: torch.Tensor):
        h = F.relu(self.fc1(x))
        return self.fc_loc(h), torch.exp(0.5 * self.fc_logvar(h))


class Decoder(PyroModule):
    """Bernoulli decoder: ``L - hidden (relu) - D`` logits.

    ``forward(z)``: ``z: (B, L)`` -> logits ``(B, D)``.
    """

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 128, name: str = ""):
        super().__init__(name)
        self.fc1 = PyroModule[nn.Linear](latent_dim, hidden)
        self.fc2 = PyroModule[nn.Linear](hidden, output_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(z)))


class GaussianDecoder(PyroModule):
    """Gaussian decoder for real-valued data: ``L - hidden (relu) - D`` means and one learned
    observation standard deviation shared by all dimensions (homoscedastic noise; a per-dimension
    noise collapses on constant dimensions).

    ``forward(z)``: ``z: (B, L)`` -> ``(loc (B, D), scale ())``.
    """

    def __init__(self, latent_dim: int, output_dim: int, hidden: int = 128, name: str = ""):
        super().__init__(name)
        self.fc1 = PyroModule[nn.Linear](latent_dim, hidden)
        self.fc2 = PyroModule[nn.Linear](hidden, output_dim)
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor):
        return self.fc2(F.relu(self.fc1(z))), self.log_scale.exp()


def _truncated_normal_init(net: nn.Module, std: float) -> None:
    """Weights of every ``nn.Linear`` of ``net`` from ``Normal(0, std)`` truncated to
    ``[-2 std, 2 std]``, biases zero (the original 2018 VAE's start); the global torch generator."""
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2.0 * std, 2.0 * std)
                if layer.bias is not None:
                    layer.bias.zero_()


def _relu_layers(dims) -> list[nn.Module]:
    """``Linear(dims[0], dims[1]), ReLU, ..., Linear(dims[-2], dims[-1]), ReLU``."""
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


class MLPEncoder(nn.Module):
    """Deeper amortised posterior: ``D - widths[0] - ... - widths[-1] (relu) - (L, L)``.

    ``forward(x)``: ``x: (B, D)`` -> ``(loc, scale)``, both ``(B, L)``, ``scale = exp(logvar / 2)``.
    """

    def __init__(self, input_dim: int, latent_dim: int, widths=(500, 500, 2000)):
        super().__init__()
        self.body = nn.Sequential(*_relu_layers((input_dim, *widths)))
        self.loc, self.logvar = nn.Linear(widths[-1], latent_dim), nn.Linear(widths[-1], latent_dim)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.loc(h), torch.exp(0.5 * self.logvar(h))


def mlp_networks(input_dim: int, latent_dim: int, widths=(500, 500, 2000)):
    """``(encoder, decoder)`` multilayer perceptrons for ``VAE(encoder=..., decoder=...)`` or the
    joint model: :class:`MLPEncoder` ``D-500-500-2000-(L, L)`` and the mirrored Bernoulli decoder
    ``L-2000-500-500-D`` (logits), the networks of VaDE (Jiang et al. 2017) by default."""
    widths = tuple(check_positive_int(w, "widths", "mlp_networks") for w in widths)
    if not widths:
        raise ValueError("mlp_networks: widths must name at least one hidden layer")
    decoder_body = _relu_layers((latent_dim, *reversed(widths)))  # built first: the benchmarks' RNG order
    return MLPEncoder(input_dim, latent_dim, widths), nn.Sequential(*decoder_body, nn.Linear(widths[0], input_dim))


class LogVarEncoder(nn.Module):
    """A user's encoder that returns ``(mu, log_var)`` (the original's convention), seen as one
    that returns ``(loc, scale)``: ``scale = exp(log_var / 2)``.

    ``forward(x)``: ``x: (B, D)`` -> ``(loc, scale)``, both ``(B, L)``.  The user's network is
    the submodule ``net`` (state-dict keys ``net.<name>``).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        mu, log_var = self.net(x)
        return mu, torch.exp(0.5 * log_var)


class FixedScaleDecoder(nn.Module):
    """A user's decoder that returns the mean ``(B, D)`` of a Gaussian with the fixed standard
    deviation ``scale``: ``forward(z) -> (loc, scale)``.  ``scale = sqrt(1/2)`` makes
    ``-log p(x | z)`` the summed squared error plus a constant (the original's ``RE="MSE"``)."""

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net = net
        self.scale = float(scale)

    def forward(self, z: torch.Tensor):
        return self.net(z), self.scale


def normal_kl(loc: torch.Tensor, scale: torch.Tensor, prior_loc: torch.Tensor,
              prior_scale: torch.Tensor) -> torch.Tensor:
    """``KL(Normal(loc, scale) || Normal(prior_loc, prior_scale))`` elementwise (nats).

    The same expression as ``torch.distributions.kl_divergence`` for two Normals (which Pyro's
    :class:`~pyro.infer.TraceMeanField_ELBO` uses), without building distribution objects.
    """
    var_ratio = (scale / prior_scale).pow(2)
    t1 = ((loc - prior_loc) / prior_scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def _format_unit_interval(a: np.ndarray) -> bytes:
    """Text of an ``(N, D)`` array of values in [0, 1] with 4 decimals (as ``"%.4f"``), built
    with vectorised numpy: ~30x faster than ``np.savetxt`` for the 3000 x 784 reconstructions."""
    v = np.rint(np.clip(a, 0.0, 1.0) * 1e4).astype(np.int64)  # 0 .. 10000
    n, d = v.shape
    out = np.empty((n, d, 7), dtype=np.uint8)
    out[..., 0] = ord("0") + v // 10000
    out[..., 1] = ord(".")
    for j, p in enumerate((1000, 100, 10, 1)):
        out[..., 2 + j] = ord("0") + (v // p) % 10
    out[..., 6] = ord(" ")
    out[:, -1, 6] = ord("\n")
    return out.tobytes()


# --------------------------------------------------------------------------- module
class VAE(Module):
    """Serket's variational autoencoder, connected to one observation of images (or real vectors).

    Tutorial call: ``vae.VAE(18, itr=200, batch_size=500)``; ``vae1.connect(obs)``; ``vae1.update()``.

    Parameters
    ----------
    latent_dim : int
        ``L``, dimension of z.
    itr : int, default 200
        Epochs per :meth:`update` (200 in the tutorials).
    batch_size : int or None, default 500
        Minibatch size (500); larger than ``N``, or ``None`` (the original's default), means one
        batch of all points.
    hidden : int, default 128
        Hidden-layer width of the built-in networks (128).
    init_scale : float, optional
        Start the built-in networks' weights from a normal distribution of this standard deviation
        truncated at two of them, with zero biases (the original 2018 VAE's ``weight_stddev``, 0.1
        there); ``None`` (default): PyTorch's default initialisation.  Not applied to the user's
        networks, which initialise themselves.
    lr : float, default 0.001
        Adam learning rate (1e-3).
    kl_weight : float, default 1.0
        Weight (> 0) of the KL term (1 is the ELBO).
    likelihood : {'bernoulli', 'gaussian'}, default 'bernoulli'
        ``"bernoulli"`` (data in [0, 1], binary cross-entropy as the original) or ``"gaussian"``
        (real-valued data, :class:`GaussianDecoder`).
    forward : {'mean', 'sample'}, default 'mean'
        What the parent receives: ``"mean"`` (default), a :class:`GaussianMessage` with
        ``loc, scale = q(z | x)`` ``(N, L)``; ``"sample"``, a :class:`PointMessage` of one draw from
        ``q(z | x)`` per point (the original's message).
    elbo : {'analytic', 'pyro'}, default 'analytic'
        ``"analytic"`` (hand-written ELBO with closed-form KL, default) or ``"pyro"``
        (:class:`pyro.infer.SVI` with :class:`pyro.infer.Trace_ELBO`); see the module docstring.
    encoder, decoder : torch.nn.Module, optional
        Optional ``torch.nn.Module`` replacing the built-in networks (deep-copied at the first update).
        ``encoder(x: (B, D)) -> (loc, scale)`` each ``(B, L)``; a Bernoulli decoder returns logits
        ``(B, D)``, a Gaussian one ``(loc (B, D), scale)`` with ``scale`` broadcastable to ``(B, D)``.
        Every ``nn.Parameter`` of them is trained: keep fixed tensors in buffers (``register_buffer``).
    deskew : bool, default False
        Deskew and centre every image before it enters the VAE
        (:func:`serket_pyro.features.deskew.deskew`, moment normalisation as in LeCun et al. 1998), in
        learning and in recognition alike: the VAE then models upright digits, and its latents no longer
        spend dimensions on slant (VAE+GMM on the tutorial images: 0.859 against 0.710 with raw pixels,
        ``benchmarks/tutorials.py [--no-deskew]``).  Images are ``(N, H*W)``; each distinct input is
        deskewed once and reused by later updates.
    image_shape : tuple of int (H, W), optional
        ``(H, W)`` of the images for ``deskew`` (default: square).
    loss_step : int, default 1
        ``loss.txt`` (the original's file) holds ``[epoch, loss]`` every ``loss_step`` epochs of the
        update (the original's ``loss_step``, 50 there); ``loss_learn.txt`` keeps every epoch.
    device : str or torch.device, optional
        Torch device for the networks and the computations (CPU by default).
    output_root : str or os.PathLike, optional
        Folder for this module's output folder (default: the global output root).
    mode : {'learn', 'recog'}, default 'learn'
        ``"learn"`` (train, then write ``*_learn`` files) or ``"recog"`` (networks frozen, e.g. after
        :meth:`load_state_dict`; write ``*_recog`` files).
    progress : bool, default False
        Show a tqdm progress bar over epochs.
    name : str, default 'vae'
        Short name (``module%03d_<name>``, the output folder).

    Notes
    -----
    The original Serket's signatures are taken as well (:mod:`serket_pyro.original_api`):
    ``VAE(latent_dim, epoch, name, batch_size, KLD_weight, RE, load_dir, loss_step)`` and its
    older forms, ``epoch``/``KL_param``/``KLD_weight``/``RE``/``hidden_encoder_dim``/
    ``hidden_decoder_dim`` as keywords, ``load_dir`` (recognition with a saved model file).

    User networks (the original's 2021-2023 API): a subclass that overrides :meth:`build_encoder`
    and/or :meth:`build_decoder` with torch code, each returning an ``nn.Module``, gets those
    networks instead of the built-in ones (the encoder returns ``(mu, log_var)`` as the original's;
    the decoder logits, or probabilities when the class sets ``decoder_output = "probs"``).  They are
    built at the first update, trained as the built-in ones (warm-started between updates) and saved
    in :meth:`state_dict` (keys ``encoder.net.*``, ``decoder.*``).  An override that fails or
    returns something else raises ``ValueError`` naming this module and the hook; the original's
    TensorFlow form ``build_decoder(self, z)`` is refused at construction with the torch form to
    write instead::

        class vae_model(vae.VAE):
            def build_encoder(self, input_dim, latent_dim):
                return MyEncoder(input_dim, latent_dim)       # forward(x) -> (mu, log_var)

            def build_decoder(self, input_dim, latent_dim):
                return nn.Sequential(nn.Linear(latent_dim, 128), nn.ReLU(), nn.Linear(128, input_dim))

    Input rule: with ``likelihood="bernoulli"`` the data must lie in [0, 1].  Data with a maximum
    above 1 whose values are all integers in 0..255 are taken as 8-bit pixels and divided by 255
    (``srk.Observation`` turns uint8 images into float64 0..255); any other value outside [0, 1]
    raises ``ValueError``.  Gaussian data are used as given.

    Messages (float64, on the CPU whatever ``device``):

    * forward (to the parent): see ``forward``; ``(N, L)``.
    * backward (to the observation): :class:`PointMessage` of the reconstruction at the posterior
      mean, ``sigmoid(decoder(loc))`` (Bernoulli) or the decoder mean (Gaussian), ``(N, D)``.
    * backward message read from the parent: a :class:`GaussianMessage` ``(N, L)``: the prior
      ``p(z_n) = Normal(loc_n, scale_n)``; several parents are combined by the product rule.

    Files (``<output_root>/module%03d_vae/[iteration/]``, suffix ``_learn`` or ``_recog``):
    ``z_<mode>.txt`` (N x L posterior means), ``z_scale_<mode>.txt`` (N x L posterior standard
    deviations), ``x_hat_<mode>.txt`` (N x D reconstructions; 4 decimals for Bernoulli data,
    ``%.4g`` for Gaussian; with ``deskew`` the reconstructions are of the deskewed images), and in
    learning mode ``loss_learn.txt`` (mean per-point negative ELBO of each epoch of this update)
    and, as every module, ``model.pt`` / ``model.json`` (:meth:`state_dict`: plain tensors, read
    back with :meth:`load_model` or ``torch.load(path, weights_only=True)``).

    Learned state: ``encoder_``, ``decoder_`` (modules), ``loss_history_`` (list of the epoch
    losses of all updates), ``input_dim_``, ``data_scale_`` (1 or 1/255, see the input rule).
    """

    input_kinds = (PointMessage,)
    _fitted = ("encoder_", "decoder_", "input_dim_", "data_scale_", "loss_history_")
    #: custom networks are recorded by class name: load_graph needs them in ``overrides``
    _object_params = ("encoder", "decoder")
    test_args = {"latent_dim": 2, "itr": 2, "batch_size": 8, "hidden": 8}
    #: also the original's orders and keywords (epoch, KLD_weight / KL_param, RE, load_dir, ...)
    _original_api = VAE_API
    _model_params = ("latent_dim", "hidden", "likelihood")

    def __init__(self, latent_dim, itr=200, batch_size=500, *, hidden=128, init_scale=None, lr=1e-3, kl_weight=1.0,
                 likelihood="bernoulli", forward="mean", elbo="analytic", encoder=None, decoder=None,
                 deskew=False, image_shape=None, loss_step=1, device=None, output_root=None, mode="learn",
                 progress=False, name="vae"):
        super().__init__(name, output_root=output_root)
        self.latent_dim = check_positive_int(latent_dim, "latent_dim", self.name)
        self.itr = check_positive_int(itr, "itr", self.name)
        self.batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size", self.name)
        self.loss_step = check_positive_int(loss_step, "loss_step", self.name)
        self.hidden = check_positive_int(hidden, "hidden", self.name)
        self.init_scale = None if init_scale is None else check_positive_float(init_scale, "init_scale", self.name)
        self.lr = check_positive_float(lr, "lr", self.name)
        self.kl_weight = check_positive_float(kl_weight, "kl_weight", self.name)
        for value, allowed, what in ((likelihood, _LIKELIHOODS, "likelihood"), (forward, _FORWARDS, "forward"),
                                     (elbo, _ELBOS, "elbo")):
            if value not in allowed:
                raise ValueError(f"{self.name}: {what} must be one of {allowed}, got {value!r}")
        for net, what in ((encoder, "encoder"), (decoder, "decoder")):
            if net is not None and not isinstance(net, nn.Module):
                raise ValueError(f"{self.name}: {what} must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(deskew, bool):
            raise ValueError(f"{self.name}: deskew must be True or False, got {deskew!r}")
        if image_shape is not None:
            if (not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_shape)):
                raise ValueError(f"{self.name}: image_shape must be (H, W) with positive integers, got {image_shape!r}")
            image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.deskew = deskew
        self.image_shape = image_shape
        self.likelihood = likelihood
        self.forward = forward
        self.elbo = elbo
        self.encoder = encoder
        self.decoder = decoder
        self.device = check_device(device)
        self.mode = mode
        self.progress = bool(progress)

        self.encoder_: nn.Module | None = None
        self.decoder_: nn.Module | None = None
        self.input_dim_: int | None = None
        self.data_scale_: float | None = None
        self.loss_history_: list[float] = []
        self._optim: torch.optim.Optimizer | None = None  # analytic path
        self._svi: pyro.infer.SVI | None = None  # pyro path
        self._pending_optim_state: dict[str, dict[str, torch.Tensor]] = {}
        self._deskewed: tuple | None = None  # (source tensor, image_shape, deskewed images)
        self._decoder_gives = "logits"  # what decoder_ returns for Bernoulli data: "logits" or "probs"
        self._check_network_hooks()

    # ------------------------------------------------------------------ state
    def _named_parameters(self):
        """``("encoder.<name>", p)`` and ``("decoder.<name>", p)`` of the current networks."""
        for prefix, net in (("encoder", self.encoder_), ("decoder", self.decoder_)):
            if net is not None:
                for n, p in net.named_parameters():
                    yield f"{prefix}.{n}", p

    def _optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Adam state per parameter name, from whichever optimiser exists (plus pending state)."""
        out = {k: dict(v) for k, v in self._pending_optim_state.items()}
        for name, p in self._named_parameters():
            st = None
            if self._optim is not None:
                st = self._optim.state.get(p)
            if not st and self._svi is not None:
                opt = self._svi.optim.optim_objs.get(p)
                st = opt.state.get(p) if opt is not None else None
            if st:
                out[name] = dict(st)
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict of CPU tensors: ``input_dim``, ``data_scale``, ``loss_history`` (float64),
        ``encoder.<param or buffer>``, ``decoder.<...>`` and the Adam state of each parameter
        ``optim.<encoder|decoder>.<param>.<step|exp_avg|exp_avg_sq>``.  Empty before training."""
        if self.encoder_ is None:
            return {}
        out = {
            "input_dim": torch.tensor([self.input_dim_], dtype=torch.int64),
            "data_scale": torch.tensor([self.data_scale_], dtype=torch.float64),
            "loss_history": torch.tensor(self.loss_history_, dtype=torch.float64),
        }
        for prefix, net in (("encoder", self.encoder_), ("decoder", self.decoder_)):
            for k, v in net.state_dict().items():
                out[f"{prefix}.{k}"] = v.detach().cpu().clone()
        for name, st in self._optimizer_state().items():
            for k, v in st.items():
                out[f"optim.{name}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore networks, loss history and Adam state saved by :meth:`state_dict` (the
        networks are built if this module has not been trained yet)."""
        if not state:
            return
        try:
            input_dim = int(state["input_dim"].reshape(-1)[0])
            data_scale = float(state["data_scale"].reshape(-1)[0])
        except KeyError as e:
            raise ValueError(f"{self.name}: not a VAE state dict (missing {e})") from None
        check_loaded_finite(state, self.name, skip=("loss_history",))
        if input_dim < 1 or not data_scale > 0:
            raise ValueError(f"{self.name}: loaded input_dim {input_dim} and data_scale {data_scale} must be positive")
        if self.encoder_ is None or self.input_dim_ != input_dim:
            self._build(input_dim)
        for prefix, net in (("encoder", self.encoder_), ("decoder", self.decoder_)):
            sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            try:
                net.load_state_dict(sub)  # copies in place: parameter identities are kept
            except RuntimeError as e:
                raise ValueError(f"{self.name}: the saved {prefix} does not match this VAE: {e}") from None
        self.data_scale_ = data_scale
        self.loss_history_ = [float(v) for v in state.get("loss_history", torch.zeros(0)).tolist()]
        names = {n for n, _ in self._named_parameters()}
        pending = {}
        for k, v in state.items():
            if k.startswith("optim."):
                pname, _, key = k[len("optim."):].rpartition(".")
                if pname in names:
                    pending.setdefault(pname, {})[key] = v.clone()
        # fresh optimisers pick the state up at the next update
        self._optim, self._svi = None, None
        self._pending_optim_state = pending

    # ------------------------------------------------------------------ Pyro submodel
    def model(self, x: torch.Tensor, prior_loc: torch.Tensor | None = None,
              prior_scale: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> None:
        """Generative model ``p(z) p(x | z)`` of the data points ``idx`` (all when ``None``).

        Args:
            x: ``(N, D)`` all data (float, on the module's device).
            prior_loc, prior_scale: ``(N, L)`` prior of every point (the backward message);
                ``None``: standard Normal.
            idx: ``(B,)`` indices of the minibatch (the ``data`` plate's subsample).

        Sites: ``z`` ``(B, L)`` latent (its log density scaled by ``kl_weight``), ``x`` observed.
        Log densities are scaled by ``1/N`` on top of the plate's ``N/B``, so the ELBO is the mean
        over the minibatch of the per-point ELBO (the original's objective).
        """
        N = x.shape[0]
        if self.decoder_ is not None and not isinstance(self.decoder_, PyroModule):
            pyro.module(f"{self.name}.decoder", self.decoder_)
        with pyro.plate("data", N, subsample=idx) as ind, poutine.scale(scale=1.0 / N):
            loc, scale = self._prior(x, prior_loc, prior_scale, ind)
            with poutine.scale(scale=self.kl_weight):
                z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", self.joint_child_dist({}, z, 0), obs=x[ind])

    def guide(self, x: torch.Tensor, prior_loc: torch.Tensor | None = None,
              prior_scale: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> None:
        """Amortised guide ``q(z_n | x_n) = Normal(encoder(x_n))`` (same arguments as :meth:`model`)."""
        N = x.shape[0]
        if self.encoder_ is not None and not isinstance(self.encoder_, PyroModule):
            pyro.module(f"{self.name}.encoder", self.encoder_)
        with pyro.plate("data", N, subsample=idx) as ind, poutine.scale(scale=1.0 / N):
            loc, scale = self.encoder_(x[ind])
            with poutine.scale(scale=self.kl_weight):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # ------------------------------------------------------------ joint hooks
    joint_role = "latent"

    def joint_size(self) -> int:
        """``latent_dim``."""
        return self.latent_dim

    def joint_networks(self, child_sizes) -> list:
        """The encoder and decoder, trained or not (built for ``D`` inputs if missing): the joint
        program trains these very networks, so the VAE holds the result."""
        if len(child_sizes) != 1:
            raise ValueError(f"{self.name} takes exactly one child (an observation), got {len(child_sizes)}")
        if self.encoder_ is None or self.input_dim_ != int(child_sizes[0]):
            self._build(int(child_sizes[0]))
        return [self.encoder_, self.decoder_]

    def joint_prior(self, params):
        """``Normal(0, I)`` on ``z`` without a parent."""
        z = torch.zeros(self.latent_dim, dtype=torch.float64, device=self.device)
        return dist.Normal(z, torch.ones_like(z)).to_event(1)

    def joint_child_dist(self, params, value, i: int):
        """``p(x | z)``: the decoder's likelihood (the site ``x`` of :meth:`model`); the networks
        run in their own precision (float32)."""
        out = self.decoder_(value.to(next(self.decoder_.parameters()).dtype))
        out = tuple(torch.as_tensor(o).double() for o in out) if isinstance(out, tuple) else out.double()
        return self._likelihood_dist(out)

    def joint_guide(self, params, local, observed):
        """``q(z | x) = Normal(encoder(x))`` (amortised, as :meth:`guide`), in float64 as the
        joint program's other sites."""
        loc, scale = self.encoder_(observed[0].to(next(self.encoder_.parameters()).dtype))
        return dist.Normal(loc.double(), scale.double()).to_event(1)

    def encoder_scale_bias(self) -> torch.nn.Parameter | None:
        """The bias of the encoder's log-variance layer (``Encoder.fc_logvar``,
        ``MLPEncoder.logvar``), ``(L,)``: it shifts ``log q(z | x)``'s variances alike for every
        input.  ``None`` for another encoder (a user's network: its scale is not reachable).

        Why: an autoencoder pretraining (``kl_weight=0``) trains the encoder's mean only; its
        scale output stays at its initial value whatever the latents' scale
        (:meth:`serket_pyro.joint.JointModel.start_encoder_scale` fits this bias)."""
        layer = getattr(self.encoder_, "logvar", None) if isinstance(self.encoder_, MLPEncoder) else (
            getattr(self.encoder_, "fc_logvar", None) if isinstance(self.encoder_, Encoder) else None)
        return None if layer is None else layer.bias

    #: rows converted at once by :meth:`joint_observed` (bounds its float64 working memory)
    _JOINT_ROWS = 8192

    def joint_observed(self, i: int, data: torch.Tensor) -> torch.Tensor:
        """The data as :meth:`update` reads them: 8-bit pixels divided by 255, deskewed when
        ``deskew=True``, float32 on the device.

        Converted ``_JOINT_ROWS`` rows at a time into the float32 result, so that 70,000 8-bit
        MNIST images never exist in float64 at once (1.3 GB of temporaries otherwise); the rows
        are the same floats as converting all at once."""
        x = torch.as_tensor(data).detach()
        integral = not (x.is_floating_point() or x.is_complex())
        step = self._JOINT_ROWS
        scale = 1.0
        if self.likelihood == "bernoulli" and float(x.max()) > 1.0:
            ok = float(x.min()) >= 0 and float(x.max()) <= 255 and (
                integral or all(bool((c == c.round()).all()) for c in x.split(step)))
            if not ok:
                raise ValueError(f"{self.name}: likelihood='bernoulli' needs data in [0, 1] or 8-bit integers")
            scale = 1.0 / 255.0
        out = torch.empty(x.shape, dtype=torch.float32)
        for s in range(0, x.shape[0], step):
            c = x[s:s + step].cpu().to(torch.float64)
            if scale != 1.0:
                c = c / 255.0
            if self.deskew:
                c = torch.from_numpy(deskew_images(c, self.image_shape))
            out[s:s + step] = c
        self._joint_data_scale = scale
        return out.to(device=self.device)

    def joint_to_module(self, params, posterior) -> None:
        """The networks are the VAE's own; sets ``data_scale_``."""
        self.data_scale_ = getattr(self, "_joint_data_scale", 1.0)

    def _prior(self, x, prior_loc, prior_scale, ind):
        if prior_loc is None:
            loc = x.new_zeros(ind.shape[0], self.latent_dim)
            return loc, torch.ones_like(loc)
        return prior_loc[ind], prior_scale[ind]

    def _likelihood_dist(self, out):
        if self.likelihood == "bernoulli":
            # pixels are grey levels in [0, 1]: the Bernoulli log-probability is the binary
            # cross-entropy, as in the original (validate_args=False allows non-binary values)
            if self._decoder_gives == "probs":
                return dist.Bernoulli(probs=out, validate_args=False).to_event(1)
            return dist.Bernoulli(logits=out, validate_args=False).to_event(1)
        loc, scale = out
        return dist.Normal(loc, torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)).to_event(1)

    def _neg_log_lik(self, out, x) -> torch.Tensor:
        """``-log p(x | z)`` per point, ``(B,)`` (summed over the ``D`` dimensions)."""
        if self.likelihood == "bernoulli":
            if self._decoder_gives == "probs":  # torch clamps the logarithms at -100
                return F.binary_cross_entropy(out, x, reduction="none").sum(-1)
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        loc, scale = out
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        return (((x - loc) / scale).pow(2) / 2 + scale.log() + 0.5 * math.log(2 * math.pi)).sum(-1)

    def analytic_loss(self, x: torch.Tensor, prior_loc: torch.Tensor | None = None,
                      prior_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO of the minibatch ``x: (B, D)`` with priors ``(B, L)``, averaged over
        the minibatch: ``mean_n [-log p(x_n | z_n) + kl_weight * KL(q(z_n | x_n) || p(z_n))]``
        with one reparameterised draw ``z_n ~ q(z_n | x_n)`` from torch's global RNG (drawn as
        Pyro's guide draws it, so the same seed gives the same ``z``)."""
        loc, scale = self.encoder_(x)
        z = loc + torch.empty_like(loc).normal_() * scale
        nll = self._neg_log_lik(self.decoder_(z), x)
        if prior_loc is None:
            prior_loc, prior_scale = torch.zeros_like(loc), torch.ones_like(loc)
        kl = normal_kl(loc, scale, prior_loc, prior_scale).sum(-1)
        return (nll + self.kl_weight * kl).mean()

    # ------------------------------------------------------------------ inputs
    # ------------------------------------------------------------------ user networks
    def build_encoder(self, input_dim, latent_dim):
        """Override to use your own encoder (the original's subclassing API, in torch).

        Parameters
        ----------
        input_dim : int
            ``D``, the data dimension (:class:`~serket_pyro.modules.torch_vae.TorchVAE` passes
            the shape ``(D,)`` as the original's ``TorchVAE``).
        latent_dim : int
            ``L``.

        Returns
        -------
        torch.nn.Module or None
            A network with ``forward(x: (B, D)) -> (mu, log_var)``, each ``(B, L)``, as the
            original (``q(z | x) = Normal(mu, exp(log_var / 2))``); ``None`` (this base method):
            the built-in network (or the constructor's ``encoder=``).  It is called once, when
            the networks are built (the first update, or :meth:`load_state_dict`), and its
            parameters are trained and saved with the module's state.
        """
        return None

    def build_decoder(self, input_dim, latent_dim):
        """Override to use your own decoder (see :meth:`build_encoder`).

        Returns
        -------
        torch.nn.Module or None
            A network with ``forward(z: (B, L)) -> out``: with ``likelihood="bernoulli"``, ``out``
            is ``(B, D)`` logits (class attribute ``decoder_output = "logits"``, the original's
            TensorFlow ``build_decoder``) or probabilities in [0, 1] (``decoder_output = "probs"``,
            a network ending in ``nn.Sigmoid()`` as the original's ``TorchVAE``); with
            ``likelihood="gaussian"``, ``out`` is the mean ``(B, D)`` (unit standard deviation) or
            ``(mean, scale)``.  ``None``: the built-in network (or ``decoder=``).
        """
        return None

    #: what a decoder of :meth:`build_decoder` returns for Bernoulli data: ``"logits"`` or ``"probs"``
    decoder_output = "logits"
    #: :meth:`build_encoder` / :meth:`build_decoder` get ``input_dim`` as the shape ``(D,)``
    #: instead of the number ``D`` (the original's ``TorchVAE``)
    _input_dim_as_shape = False

    def _check_network_hooks(self) -> None:
        """At construction: refuse the original's TensorFlow hooks (``build_decoder(self, z)``
        returning TensorFlow tensors and an optimiser), which cannot run here."""
        cls = type(self)
        if self.decoder_output not in ("logits", "probs"):
            raise ValueError(f"{self.name}: {cls.__name__}.decoder_output must be 'logits' or 'probs', "
                             f"got {self.decoder_output!r}")
        for hook in ("build_encoder", "build_decoder"):
            fn = getattr(cls, hook)
            if fn is getattr(VAE, hook):
                continue
            if (hook == "build_encoder" and self.encoder is not None) or \
                    (hook == "build_decoder" and self.decoder is not None):
                what = hook.split("_")[1]
                raise ValueError(f"{self.name}: {cls.__name__} overrides {hook}() and was given {what}=: "
                                 "use one of the two")
            try:
                params = [p for p in inspect.signature(fn).parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
            except (TypeError, ValueError):
                continue
            if len(params) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in
                                           inspect.signature(fn).parameters.values()):
                raise ValueError(
                    f"{self.name}: {cls.__name__}.{hook}({', '.join(['self'] + [p.name for p in params])}) is the "
                    "original's TensorFlow form, which cannot run in serket-pyro (torch). Write "
                    "build_encoder(self, input_dim, latent_dim) returning a torch.nn.Module whose forward(x) "
                    "gives (mu, log_var), and build_decoder(self, input_dim, latent_dim) returning a "
                    "torch.nn.Module whose forward(z) gives the logits (B, D); or drop the subclass to use the "
                    "built-in networks (the tutorials' D-128-L architecture)")

    def _user_network(self, hook: str, input_dim: int) -> nn.Module | None:
        """The network of the overridden ``hook`` (``build_encoder`` / ``build_decoder``),
        checked on a trial batch of zeros; ``None`` when the hook is not overridden."""
        dim = (int(input_dim),) if self._input_dim_as_shape else int(input_dim)
        call = f"{type(self).__name__}.{hook}(input_dim={dim!r}, latent_dim={self.latent_dim})"
        if getattr(type(self), hook) is getattr(VAE, hook):
            return None
        encoder = hook == "build_encoder"
        contract = ("an nn.Module whose forward(x: (B, D)) returns (mu, log_var), each (B, latent_dim)" if encoder
                    else "an nn.Module whose forward(z: (B, latent_dim)) returns " +
                    ("(B, D) logits" if self.likelihood == "bernoulli" and self.decoder_output == "logits" else
                     "(B, D) probabilities in [0, 1]" if self.likelihood == "bernoulli" else
                     "the (B, D) mean or (mean, scale)"))
        try:
            net = getattr(self, hook)(dim, self.latent_dim)
        except Exception as e:  # the user's code: say which hook failed and what it must return
            raise ValueError(f"{self.name}: {call} failed ({type(e).__name__}: {e}); it must return {contract} "
                             "(the original's TensorFlow code cannot run here: write the network in torch)") from e
        if net is None:
            return None
        if not isinstance(net, nn.Module):
            raise ValueError(f"{self.name}: {call} returned a {type(net).__name__}; it must return {contract}")
        B, D, L = 2, int(input_dim), self.latent_dim
        try:
            p = next(net.parameters(), None)
            dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out = net(torch.zeros(B, D if encoder else L, dtype=dtype))
        except Exception as e:
            raise ValueError(f"{self.name}: the network of {call} fails on a batch of shape "
                             f"({B}, {D if encoder else L}) ({type(e).__name__}: {e}); it must be {contract}") from e

        def shape_ok(t, shape):
            return isinstance(t, torch.Tensor) and tuple(t.shape) == shape

        if encoder:
            ok = isinstance(out, (tuple, list)) and len(out) == 2 and all(shape_ok(t, (B, L)) for t in out)
        elif self.likelihood == "bernoulli":
            ok = shape_ok(out, (B, D))
            if ok and self.decoder_output == "probs" and not bool(((out >= 0) & (out <= 1)).all()):
                raise ValueError(f"{self.name}: the network of {call} gives values outside [0, 1], but "
                                 f"{type(self).__name__}.decoder_output = 'probs': end it with nn.Sigmoid() or set "
                                 "decoder_output = 'logits'")
        else:
            ok = shape_ok(out, (B, D)) or (isinstance(out, (tuple, list)) and len(out) == 2
                                           and shape_ok(out[0], (B, D)))
        if not ok:
            got = (f"a tuple of {[tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out]}"
                   if isinstance(out, (tuple, list)) else
                   f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__)
            raise ValueError(f"{self.name}: the network of {call} returns {got} for a batch of {B}; "
                             f"it must be {contract}")
        if encoder:
            return LogVarEncoder(net)
        if self.likelihood == "gaussian" and isinstance(out, torch.Tensor):
            return FixedScaleDecoder(net, self._user_decoder_scale)
        return net

    #: standard deviation of a Gaussian user decoder that returns only the mean
    _user_decoder_scale = 1.0

    def _build(self, input_dim: int) -> None:
        """Create the networks on the device (the user's :meth:`build_encoder` /
        :meth:`build_decoder`, the constructor's ``encoder=`` / ``decoder=`` (copied), or the
        built-in ones); resets the optimisers."""
        L, H = self.latent_dim, self.hidden
        user_enc = self._user_network("build_encoder", input_dim)
        user_dec = self._user_network("build_decoder", input_dim)
        self._decoder_gives = "logits"
        if user_dec is not None and self.likelihood == "bernoulli":
            self._decoder_gives = self.decoder_output
        if (self.encoder is None and user_enc is None) or (self.decoder is None and user_dec is None):
            # the built-in one-hidden-layer networks: D-H-(L, L) and L-H-D weights; each weight is
            # held 4 times (value, gradient, Adam's two moments) in float32
            n = input_dim * H + 2 * H * L + L * H + H * input_dim
            check_memory(4 * n, f"networks of {n} weights (D={input_dim}, hidden={H}, latent_dim={L})",
                         self.name, itemsize=4)
        if user_enc is not None:
            enc = user_enc
        elif self.encoder is not None:
            enc = copy.deepcopy(self.encoder)
        else:
            enc = Encoder(input_dim, L, H, name=f"{self.name}.encoder")
        if user_dec is not None:
            dec = user_dec
        elif self.decoder is not None:
            dec = copy.deepcopy(self.decoder)
        elif self.likelihood == "bernoulli":
            dec = Decoder(L, input_dim, H, name=f"{self.name}.decoder")
        else:
            dec = GaussianDecoder(L, input_dim, H, name=f"{self.name}.decoder")
        if self.init_scale is not None:  # the original's truncated-normal start, built-in networks only
            for net, own in ((enc, user_enc is None and self.encoder is None),
                             (dec, user_dec is None and self.decoder is None)):
                if own:
                    _truncated_normal_init(net, self.init_scale)
        self.encoder_, self.decoder_ = enc.to(self.device), dec.to(self.device)
        self.input_dim_ = int(input_dim)
        self._optim, self._svi, self._pending_optim_state = None, None, {}

    def _data(self) -> tuple[torch.Tensor, float]:
        """The child's data, validated: ``(x (N, D) float32 on the device, scale applied)``."""
        obs = self.get_observations()
        if len(obs) != 1:
            raise ValueError(f"{self.name} takes exactly one child (an observation), got {len(obs)}")
        msg, child = obs[0], self.children[0]  # a point message (input_kinds)
        x = msg.value
        if x.dim() != 2:
            raise ValueError(f"{self.name}: data from {child.name} must be N x D, got shape {tuple(x.shape)}")
        x = x.detach().to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{self.name}: data from {child.name} contain NaN or infinite values")
        scale = 1.0
        if self.likelihood == "bernoulli":
            lo, hi = float(x.min()), float(x.max())
            if hi > 1.0 and lo >= 0.0 and hi <= 255.0 and bool((x == x.round()).all()):
                scale = 1.0 / 255.0  # 8-bit pixels (0..255): the original's data1.txt = images / 255
            elif lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{self.name}: likelihood='bernoulli' needs data in [0, 1] (or 8-bit integers 0..255, "
                    f"divided by 255), but data from {child.name} range over [{lo:g}, {hi:g}]; "
                    "rescale them or use likelihood='gaussian'")
        if self.input_dim_ is not None and x.shape[1] != self.input_dim_:
            raise ValueError(f"{self.name}: data from {child.name} have D={x.shape[1]} dimensions, "
                             f"the networks were built for D={self.input_dim_}")
        if self.mode == "recog" and self.data_scale_ is not None and scale != self.data_scale_:
            raise ValueError(f"{self.name}: recognition data are scaled by {scale:g}, "
                             f"the training data were scaled by {self.data_scale_:g}")
        if scale != 1.0:
            x = x / 255.0  # division, so that uint8 images give exactly the floats of images / 255.
        if self.deskew:
            # the observation sends the same tensor at every outer iteration: deskew it once
            cached = self._deskewed
            if cached is not None and cached[0] is msg.value and cached[1] == self.image_shape:
                x = cached[2]
            else:
                try:
                    x = torch.from_numpy(deskew_images(x.cpu(), self.image_shape))
                except ValueError as e:
                    raise ValueError(f"{self.name}: {e}") from None
                self._deskewed = (msg.value, self.image_shape, x)
        return x.to(device=self.device, dtype=torch.float32), scale

    def _prior_tensors(self, N: int):
        """The parent's backward message as ``(loc, scale)`` ``(N, L)`` float32, or ``(None, None)``."""
        msgs = self.get_backward_msgs()
        if not msgs:
            return None, None
        for parent, msg in msgs.items():
            shape = tuple(msg.loc.shape) if isinstance(msg, GaussianMessage) else None
            if shape != (N, self.latent_dim):
                got = f"a GaussianMessage of shape {shape}" if shape is not None else \
                    f"a {msg.kind} message of shape ({msg.N}, {msg.dim})"
                raise ValueError(
                    f"{self.name}: the backward message from {parent} must be a GaussianMessage of shape "
                    f"(N, latent_dim) = ({N}, {self.latent_dim}), got {got}")
        msg = self.get_backward_msg()
        return (msg.loc.detach().to(device=self.device, dtype=torch.float32),
                msg.scale.detach().to(device=self.device, dtype=torch.float32))

    # ------------------------------------------------------------------ training
    def _batch(self, N: int) -> int:
        """Minibatch size for ``N`` points (``batch_size=None``: one batch of all, the original's default)."""
        return max(1, N if self.batch_size is None else self.batch_size)

    def _minibatches(self, N: int, device):
        """Shuffled minibatch indices of one epoch.  In a sharded fit every rank takes the same
        number of minibatches, as many as one process takes on the whole data (``batch_size`` is
        the global minibatch: each rank's share of it is about ``batch_size / W`` of its own
        points), from its own stream, so that the gradient all-reduces pair up and the optimiser
        takes the steps of a one-process run."""
        if not _dist.is_sharded():
            return torch.randperm(N, device=device).split(self._batch(N))
        # as many minibatches as one process on every rank's points, but never an empty one
        n_all = _dist.global_rows(N)
        n_batches = min(math.ceil(n_all / self._batch(n_all)), int(-_dist.all_reduce_max(-N)))
        with _dist.local_rng():
            perm = torch.randperm(N, device=device)
        return perm.tensor_split(n_batches)

    def _trainable(self):
        return [p for _, p in self._named_parameters() if p.requires_grad]

    def _train_analytic(self, x, prior_loc, prior_scale, bar) -> list[float]:
        if self._optim is None:
            if self._svi is not None:  # elbo switched from "pyro": carry the Adam state over
                self._pending_optim_state, self._svi = self._optimizer_state(), None
            self._optim = torch.optim.Adam(self._trainable(), lr=self.lr)
            for name, p in self._named_parameters():
                st = self._pending_optim_state.pop(name, None)
                if st is not None and p.requires_grad:
                    self._optim.state[p] = {k: v.to(p.device) if k != "step" else v.cpu()
                                            for k, v in st.items()}
        opt = self._optim
        N = x.shape[0]
        self.encoder_.train()
        self.decoder_.train()
        losses = []
        for _ in bar:
            total = x.new_zeros(())
            for idx in self._minibatches(N, x.device):
                pl = ps = None
                if prior_loc is not None:
                    pl, ps = prior_loc.index_select(0, idx), prior_scale.index_select(0, idx)
                with _dist.local_rng():  # the shard's own noise (a sharded fit)
                    loss = self.analytic_loss(x.index_select(0, idx), pl, ps)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                _dist.average_gradients(self._trainable())  # data-parallel: every rank's minibatch
                opt.step()
                total += loss.detach() * idx.shape[0]
            losses.append(float(total) / N)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.2f}", refresh=False)
        return losses

    def _sync_param_store(self, x, prior_loc, prior_scale) -> None:
        """Make Pyro's global param store hold this module's tensors under their names.

        Pyro keeps parameters in a global store keyed by name; an entry left by another module
        with the same name (e.g. after ``reset_module_counter``) would shadow ours and SVI would
        step the wrong tensors.  One traced evaluation (RNG state restored) finds the names;
        stale entries are deleted so that the next step registers our tensors.
        """
        own = {id(p): p.requires_grad for _, p in self._named_parameters()}
        store = pyro.get_param_store()
        idx = torch.arange(min(2, x.shape[0]), device=x.device)
        devices = []
        if x.device.type == "cuda":
            devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=devices), torch.no_grad(), \
                poutine.trace(param_only=True) as tr:
            pyro.infer.Trace_ELBO().differentiable_loss(self.model, self.guide, x, prior_loc, prior_scale, idx)
        for name, site in tr.trace.nodes.items():
            if id(site["value"].unconstrained()) not in own and name in store:
                del store[name]
        for _, p in self._named_parameters():  # the store turns requires_grad on; keep frozen ones frozen
            p.requires_grad_(own[id(p)])

    def _train_pyro(self, x, prior_loc, prior_scale, bar) -> list[float]:
        if self._svi is None:
            if self._optim is not None:  # elbo switched from "analytic": carry the Adam state over
                self._pending_optim_state, self._optim = self._optimizer_state(), None
            self._svi = pyro.infer.SVI(self.model, self.guide, pyro.optim.Adam({"lr": self.lr}),
                                       loss=pyro.infer.Trace_ELBO())
            for name, p in self._named_parameters():
                st = self._pending_optim_state.pop(name, None)
                if st is not None and p.requires_grad:
                    opt = torch.optim.Adam([p], lr=self.lr)
                    opt.state[p] = {k: v.to(p.device) if k != "step" else v.cpu() for k, v in st.items()}
                    self._svi.optim.optim_objs[p] = opt
                    self._svi.optim.grad_clip[p] = None
        self._sync_param_store(x, prior_loc, prior_scale)
        N = x.shape[0]
        self.encoder_.train()
        self.decoder_.train()
        losses = []
        for _ in bar:
            total = 0.0
            for idx in torch.randperm(N, device=x.device).split(self._batch(N)):
                total += self._svi.step(x, prior_loc, prior_scale, idx) * idx.shape[0]
            losses.append(total / N)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{losses[-1]:.2f}", refresh=False)
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def posterior(self, x: torch.Tensor):
        """``q(z | x)`` and the reconstruction for data ``x: (N, D)`` (already scaled, on the
        device), in eval mode and minibatches: ``loc (N, L)``, ``scale (N, L)``, ``x_hat (N, D)``."""
        self.encoder_.eval()
        locs, scales = [], []
        for xb in x.split(self._batch(x.shape[0])):
            loc, scale = self.encoder_(xb)
            locs.append(loc)
            scales.append(scale)
        loc = torch.cat(locs)
        return loc, torch.cat(scales), self.decode(loc)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``x_hat (N, D)`` at latents ``z: (N, L)`` (on the device): the
        Bernoulli probabilities or the Gaussian means; data in the VAE's own scale."""
        self.decoder_.eval()
        outs = []
        for zb in z.split(self._batch(z.shape[0])):
            out = self.decoder_(zb)
            if self.likelihood == "gaussian":
                out = out[0]
            elif self._decoder_gives == "logits":
                out = torch.sigmoid(out)
            outs.append(out)
        return torch.cat(outs)

    def predict(self) -> np.ndarray:
        """The original TorchVAE's ``predict()``: decode the parent's backward message (the
        prior mean of each point's ``z``, e.g. a GMM class's mean) into the data space, without
        reading the observation, and send it to the observation as the backward message.

        Writes ``<module folder>/predict/x_hat_predict.txt`` (``(N, D)``; the original's
        ``predict/x_hat.npy``); does not count as an update.  Needs learned networks (a learning
        update, ``load_dir=`` or :meth:`load_model`; in ``mode="recog"`` the model file of this
        module's own folder is loaded) and a parent's message.

        Returns
        -------
        x_hat : ndarray, (N, D)
            The decoded means, float64.
        """
        if self.mode == "recog":
            self._load_own_model()
        if self.encoder_ is None:
            raise ValueError(f"{self.name}: predict() needs trained networks: update() first, or load a model "
                             f"(load_dir='{self.name}/004', load_model(folder))")
        msg = self.get_backward_msg()
        if msg is None:
            raise ValueError(f"{self.name}: predict() decodes the parent's backward message, but no parent has sent "
                             "one: connect this VAE to a parent (e.g. a GMM) and update the parent first")
        if not isinstance(msg, GaussianMessage) or msg.loc.dim() != 2 or msg.loc.shape[1] != self.latent_dim:
            raise ValueError(f"{self.name}: predict() needs a GaussianMessage (N, latent_dim={self.latent_dim}) from "
                             f"the parent, got a {msg.kind} message")
        loc = msg.loc.detach().to(device=self.device, dtype=torch.float32)
        x_hat = self.decode(loc).cpu().double()
        w = OutputWriter(os.path.join(self.output_dir, "predict"), None)
        if self.likelihood == "bernoulli":
            w.write_bytes("x_hat_predict.txt", _format_unit_interval(x_hat.numpy()))
        else:
            w.savetxt("x_hat_predict.txt", x_hat, fmt="%.4g")
        self.send_backward_msgs([PointMessage(x_hat)])
        return x_hat.numpy()

    def _read_inputs(self):
        """``(x (N, D) float32 on the device, data scale)``, validated (:meth:`_data`)."""
        x, data_scale = self._data()
        N, D = x.shape
        # the posterior (loc, scale) and reconstructions of all points, in float32 and float64
        check_memory(3 * N * (2 * self.latent_dim + D),
                     f"posteriors and reconstructions of N x (2 latent_dim + D) = {N} x {2 * self.latent_dim + D}",
                     self.name)
        return x, data_scale

    def _read_backward(self, inputs):
        """The parent's prior ``(loc, scale)`` ``(N, L)`` float32, or ``(None, None)``."""
        return self._prior_tensors(inputs[0].shape[0])

    def _infer(self, inputs, prior) -> None:
        """Train the networks for ``itr`` epochs on the negative ELBO under the parent's prior."""
        x, data_scale = inputs
        if self.encoder_ is None:
            self._build(x.shape[1])
        self.data_scale_ = data_scale
        bar = trange(self.itr, disable=not self.progress, desc=self.name, unit="epoch")
        try:
            if _dist.is_sharded() and self.elbo != "analytic":
                raise ValueError(f"{self.name}: a sharded (distributed) fit needs elbo='analytic' "
                                 "(its gradients are averaged over the processes), got elbo='pyro'")
            train = self._train_analytic if self.elbo == "analytic" else self._train_pyro
            self._losses = train(x, *prior, bar)
        finally:
            bar.close()
        self.loss_history_.extend(self._losses)

    def _recognise(self, inputs, prior) -> None:
        if self.encoder_ is None:
            raise ValueError(f"{self.name}: mode='recog' needs trained networks: load_state_dict() first")

    def _forward_message(self, inputs, prior):
        """``q(z | x)`` (``forward="mean"``) or one draw from it (``"sample"``), ``(N, L)``."""
        x = inputs[0]
        loc, scale, x_hat = self.posterior(x)
        loc64, scale64 = loc.cpu().double(), scale.cpu().double()
        if not (bool(torch.isfinite(loc64).all()) and bool(torch.isfinite(scale64).all())
                and bool(torch.isfinite(x_hat).all())):
            raise ValueError(f"{self.name}: the networks give NaN or infinite latents or reconstructions "
                             f"(training diverged?) on data ranging over [{float(x.min()):g}, {float(x.max()):g}]; "
                             "standardise the data or lower lr")
        self._loc, self._scale, self._x_hat = loc64, scale64, x_hat.cpu().double()
        if self.forward == "mean":
            return GaussianMessage(loc64, scale64)
        with _dist.local_rng():  # the shard's own stream (a sharded fit)
            return PointMessage(loc64 + scale64 * torch.randn_like(loc64))

    def _backward_messages(self, inputs, prior) -> list:
        """The reconstruction at the posterior mean, ``(N, D)``."""
        return [PointMessage(self._x_hat)]

    def _write_outputs(self, w, inputs, prior) -> None:
        m = self.mode
        w.savetxt(f"z_{m}.txt", self._loc)
        w.savetxt(f"z_scale_{m}.txt", self._scale)
        if self.likelihood == "bernoulli":
            # (a sharded fit: every rank's rows, written by rank 0)
            w.write_bytes(f"x_hat_{m}.txt", _format_unit_interval(_dist.gather_rows(self._x_hat.numpy())))
        else:
            w.savetxt(f"x_hat_{m}.txt", self._x_hat, fmt="%.4g")
        if m == "learn":
            w.savetxt("loss_learn.txt", np.asarray(self._losses, dtype=np.float64))
            epochs = np.arange(1, len(self._losses) + 1)
            keep = epochs % self.loss_step == 0
            w.savetxt("loss.txt", np.stack([epochs[keep], np.asarray(self._losses)[keep]], axis=1).reshape(-1, 2),
                      fmt=["%d", "%.8g"])

    def _metrics(self, inputs, prior) -> dict:
        if self.mode != "learn":
            return {}
        return {"loss": float(self._losses[-1]), "objective": -float(self._losses[-1])}
