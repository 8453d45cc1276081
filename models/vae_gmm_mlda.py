"""VAE+GMM+MLDA (Serket tutorial): images -> VAE(18) -> GMM(10); MLDA(10, [200, 200]) over
(speech counts, GMM classes); the MLDA's classes are the result."""

from __future__ import annotations

import serket_pyro as srk
from serket_pyro.gmm import GMM
from serket_pyro.mlda import MLDA
from serket_pyro.system import System
from serket_pyro.vae import VAE

__all__ = ["build"]


def build(images, speech, category=None, *, latent_dim: int = 18, epochs: int = 200, batch_size: int = 500,
          n_classes: int = 10, weights=(200, 200), gmm_itr: int = 100, mlda_itr: int = 100, deskew: bool = True,
          device=None, output_root=None) -> System:
    """Wire the modules with the tutorial defaults.

    Args:
        images: ``(N, 784)`` pixels in [0, 1].
        speech: ``(N, V)`` non-negative counts (the tutorial's 2,400-bin HAC histograms), or an
            observation module that computes them from speech
            (:class:`~serket_pyro.modules.hac.HACFeatureExtractor`: its codebooks are then saved
            with the graph, and ``serket-pyro recog`` takes raw speech).
        deskew: the VAE deskews the images first (``VAE(deskew=True)``, default; the tutorial
            feeds raw pixels: ``deskew=False``).
        category: ``(N,)`` true digits, used only to score.
    """
    obs1 = srk.Observation(images)
    obs2 = speech if isinstance(speech, srk.Module) else srk.Observation(speech)
    vae1 = VAE(latent_dim, itr=epochs, batch_size=batch_size, deskew=deskew, device=device,
               output_root=output_root)
    gmm1 = GMM(n_classes, itr=gmm_itr, category=category, device=device, output_root=output_root)
    mlda1 = MLDA(n_classes, list(weights), itr=mlda_itr, category=category, device=device, output_root=output_root)
    vae1.connect(obs1)
    gmm1.connect(vae1)
    mlda1.connect(obs2, gmm1)
    return System("vae_gmm_mlda", {"obs1": obs1, "obs2": obs2, "vae": vae1, "gmm": gmm1, "mlda": mlda1},
                  result="mlda")
