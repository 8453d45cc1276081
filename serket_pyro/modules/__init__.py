"""The Serket modules: each a Pyro submodel that exchanges messages through the module graph.

* :mod:`~serket_pyro.modules.vae`: variational autoencoder (continuous latent per data point),
* :mod:`~serket_pyro.modules.gmm`: Bayesian Gaussian mixture (a class per data point),
* :mod:`~serket_pyro.modules.mlda`: multimodal latent Dirichlet allocation (a topic per data point),
* :mod:`~serket_pyro.modules.mm`: Markov model over the classes of a sequence.
"""

from .gmm import GMM
from .mlda import MLDA
from .mm import MarkovModel
from .vae import VAE

__all__ = ["VAE", "GMM", "MLDA", "MarkovModel"]
