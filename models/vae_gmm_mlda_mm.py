"""VAE+GMM+MLDA+MM (Serket tutorial): images -> VAE(18) -> GMM(10); MLDA(10, [200, 200]) over
(speech counts, GMM classes); MarkovModel over the MLDA's topics; the MLDA's classes are the result."""

from __future__ import annotations

from serket_pyro.mm import MarkovModel
from serket_pyro.models import vae_gmm_mlda
from serket_pyro.system import System

__all__ = ["build"]


def build(images, speech, category=None, *, device=None, output_root=None, **kwargs) -> System:
    """The VAE+GMM+MLDA system (:func:`serket_pyro.models.vae_gmm_mlda.build`, same arguments) with
    a Markov model on the MLDA's topics.

    Args:
        images: ``(N, 784)`` pixels in [0, 1], rows in time order.
        speech: ``(N, V)`` non-negative counts (the tutorial's 2,400-bin HAC histograms), or an
            observation module computing them (see :func:`serket_pyro.models.vae_gmm_mlda.build`).
        category: ``(N,)`` true digits, used only to score.
    """
    base = vae_gmm_mlda.build(images, speech, category, device=device, output_root=output_root, **kwargs)
    mm1 = MarkovModel(device=device, output_root=output_root)
    mm1.connect(base["mlda"])
    return System("vae_gmm_mlda_mm", {**base.modules, "mm": mm1}, result="mlda")
