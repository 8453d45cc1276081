"""``torch_vae.TorchVAE``: the original Serket's 2023 PyTorch VAE API on serket-pyro's VAE.

The original's ``TorchVAE(input_dim, latent_dim, lr, device, epoch, name, batch_size, KLD_weight,
RE, load_dir, loss_step)`` is an abstract module whose subclass defines
``build_encoder(self, input_dim, latent_dim)`` (a network giving ``(mu, log_var)``) and
``build_decoder(self, input_dim, latent_dim)`` (a network giving the reconstruction, ending in a
sigmoid for ``RE="BCE"``).  :class:`TorchVAE` is a configuration of
:class:`~serket_pyro.modules.vae.VAE`, not a second implementation: the same model, messages,
files and state, with the original's argument names and output conventions.
"""

from __future__ import annotations

import math

import torch

from ..validation import check_positive_int
from .vae import VAE

__all__ = ["TorchVAE"]

_RE = {"BCE": "bernoulli", "MSE": "gaussian"}


class TorchVAE(VAE):
    """The original's ``torch_vae.TorchVAE`` (2023): a VAE whose networks the subclass builds.

    Parameters
    ----------
    input_dim : int or tuple of int
        Data dimension ``D`` (or the shape ``(D,)``); checked against the data at the first
        update (the original read it from the data and ignored this argument).
    latent_dim : int
        ``L``.
    lr : float, default 0.001
        Adam learning rate.
    device : str or torch.device, default 'cpu'
        Torch device.
    epoch : int, default 5000
        Epochs per update (the VAE's ``itr``).
    name : str, default 'vae'
        Short name (``module%03d_<name>``).
    batch_size : int or None, default None
        Minibatch size; ``None``: one batch of all points (the original).
    KLD_weight : float, default 1
        Weight of the KL term (the VAE's ``kl_weight``).
    RE : {'BCE', 'MSE'}, default 'BCE'
        Reconstruction error: ``"BCE"`` (Bernoulli likelihood; the decoder of
        :meth:`build_decoder` gives probabilities, e.g. ends in ``nn.Sigmoid()``) or ``"MSE"``
        (Gaussian with standard deviation ``sqrt(1/2)``, so that ``-log p(x | z)`` is the summed
        squared error plus a constant, the original's loss; the decoder gives the mean).
    load_dir : str, optional
        The original's recognition: a folder with the model files a learning update wrote
        (``module001_vae/004``); loaded by :meth:`~serket_pyro.module.Module.load_model`, which
        switches the module to ``mode="recog"``.
    loss_step : int, default 50
        Kept for the original's signature; the original's ``TorchVAE`` did not use it either
        (the loss of every epoch is written to ``loss_learn.txt``).

    Notes
    -----
    Subclass hooks: ``build_encoder(self, input_dim, latent_dim)`` and
    ``build_decoder(self, input_dim, latent_dim)``, each returning a ``torch.nn.Module``;
    ``input_dim`` is the shape ``(D,)`` as in the original (``nn.Linear(input_dim[0], ...)``).
    Without them the built-in networks of :class:`~serket_pyro.modules.vae.VAE` are used.

    Departures from the original, each for a reason: the loss is the mean per data point (not the
    sum over the minibatch; the same optimum, learning-rate scale independent of ``batch_size``);
    the networks and Adam state carry over between updates (the original rebuilt them at every
    update, losing what was learned); the prior is the parent's whole Gaussian message (mean and
    scale; the original used its mean with unit scale).
    """

    decoder_output = "probs"
    _input_dim_as_shape = True
    _user_decoder_scale = math.sqrt(0.5)
    test_args = {"input_dim": 4, "latent_dim": 2, "epoch": 2, "batch_size": 8}

    def __init__(self, input_dim, latent_dim, lr=1e-3, device="cpu", epoch=5000, name="vae", batch_size=None,
                 KLD_weight=1, RE="BCE", load_dir=None, loss_step=50):
        if RE not in _RE:
            raise ValueError(f"TorchVAE: RE must be 'BCE' or 'MSE', got {RE!r}")
        super().__init__(latent_dim, itr=epoch, batch_size=1 if batch_size is None else batch_size, lr=lr,
                         kl_weight=KLD_weight, likelihood=_RE[RE], device=device, name=name, loss_step=loss_step)
        if isinstance(input_dim, (tuple, list)):
            dims = [int(d) for d in input_dim]
            if not dims or any(d < 1 for d in dims) or any(int(d) != d for d in input_dim):
                raise ValueError(f"{self.name}: input_dim must be a positive integer or shape, got {input_dim!r}")
            input_dim = tuple(dims)
        else:
            input_dim = check_positive_int(input_dim, "input_dim", self.name)
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size", self.name)
        self.input_dim = input_dim
        self.epoch = self.itr
        self.batch_size = batch_size
        self.KLD_weight = KLD_weight
        self.RE = RE
        self.load_dir = load_dir
        self.loss_step = loss_step
        if load_dir is not None:  # the base class's model files: learned state, mode="recog"
            self.load_model(load_dir)

    def _read_inputs(self):
        x, scale = super()._read_inputs()
        want = math.prod(self.input_dim) if isinstance(self.input_dim, tuple) else self.input_dim
        if x.shape[1] != want:
            raise ValueError(f"{self.name}: input_dim={self.input_dim!r} but the data from {self.children[0].name} "
                             f"have D={x.shape[1]} dimensions")
        return x, scale

    def tensor(self, x):
        """The original's helper: ``x`` as a float32 tensor on the module's device."""
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def numpy(self, x):
        """The original's helper: a tensor as a numpy array."""
        return x.detach().cpu().numpy()
