"""VAE+GMM (Serket tutorial): images -> VAE(18) -> GMM(10); the GMM's classes are the result."""

from __future__ import annotations

import serket_pyro as srk
from serket_pyro.gmm import GMM
from serket_pyro.system import System
from serket_pyro.vae import VAE

__all__ = ["build"]


def build(images, category=None, *, latent_dim: int = 18, epochs: int = 200, batch_size: int = 500,
          n_classes: int = 10, gmm_itr: int = 100, deskew: bool = True, device=None, output_root=None) -> System:
    """Wire the modules with the tutorial defaults.

    Args:
        images: ``(N, 784)`` pixels in [0, 1].
        deskew: the VAE deskews the images first (``VAE(deskew=True)``, default; the tutorial
            feeds raw pixels: ``deskew=False``).
        category: ``(N,)`` true digits, used only to score (``acc_learn.txt``).
    """
    obs = srk.Observation(images)
    vae1 = VAE(latent_dim, itr=epochs, batch_size=batch_size, deskew=deskew, device=device,
               output_root=output_root)
    gmm1 = GMM(n_classes, itr=gmm_itr, category=category, device=device, output_root=output_root)
    vae1.connect(obs)
    gmm1.connect(vae1)
    return System("vae_gmm", {"obs": obs, "vae": vae1, "gmm": gmm1}, result="gmm")
