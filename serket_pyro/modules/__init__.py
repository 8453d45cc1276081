"""The Serket modules: each a Pyro submodel that exchanges messages through the module graph.

* :mod:`~serket_pyro.modules.vae`: variational autoencoder (continuous latent per data point),
* :mod:`~serket_pyro.modules.gmm`: Bayesian Gaussian mixture (a class per data point),
* :mod:`~serket_pyro.modules.mlda`: multimodal latent Dirichlet allocation (a topic per data point),
* :mod:`~serket_pyro.modules.mm`: Markov model over the classes of a sequence,
* :mod:`~serket_pyro.modules.hac`: speech -> HAC counts, an observation with learned codebooks,
* :mod:`~serket_pyro.modules.ttot`: a category shared by several modules (tail-to-tail),
* :mod:`~serket_pyro.modules.group_sum`, :mod:`~serket_pyro.modules.text_saver`,
  :mod:`~serket_pyro.modules.buffer`: the original's ``serket.utils`` (also as
  :mod:`serket_pyro.utils`),
* :mod:`~serket_pyro.modules.neural`: a supervised network from a module's classes to an
  observation (the original's ``nn.NN`` / ``torch_nn.TorchNN``),
* :mod:`~serket_pyro.modules.torch_vae`: the original's ``TorchVAE`` API on the VAE.
"""

from .gmm import GMM
from .mlda import MLDA
from .mm import MarkovModel
from .neural import NN, TorchNN
from .torch_vae import TorchVAE
from .vae import VAE

# the others load on use (hac reads wav files)
__all__ = ["VAE", "GMM", "MLDA", "MarkovModel", "NN", "TorchNN", "TorchVAE"]
