"""VAE+GMM+MM (Serket tutorial): images -> VAE(18) -> GMM(10) -> MarkovModel; the GMM's classes
are the result (the Markov chain over the cyclic order sharpens them)."""

from __future__ import annotations

from serket_pyro.mm import MarkovModel
from serket_pyro.models import vae_gmm
from serket_pyro.system import System

__all__ = ["build"]


def build(images, category=None, *, device=None, output_root=None, **kwargs) -> System:
    """The VAE+GMM system (:func:`serket_pyro.models.vae_gmm.build`, same arguments) with a Markov
    model on the GMM's classes.

    Args:
        images: ``(N, 784)`` pixels in [0, 1], rows in time order.
        category: ``(N,)`` true digits, used only to score.
    """
    base = vae_gmm.build(images, category, device=device, output_root=output_root, **kwargs)
    mm1 = MarkovModel(device=device, output_root=output_root)
    mm1.connect(base["gmm"])
    return System("vae_gmm_mm", {**base.modules, "mm": mm1}, result="gmm")
